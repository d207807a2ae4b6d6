"""REST API of send tasks, their subtasks and the dead-letter queue.

Thin views: validate the input, call one service or selector, serialize the result.

Scoping:

* Tasks and subtasks belong to their owner, operators included: another user's task
  answers 404 (operators manage every task in the admin).
* The dead-letter queue is an operator's tool too: operators (``apps.core.tenancy``) see,
  count and reprocess every owner's entries (``?owner=<user id>`` narrows); a tenant only
  its own, and another user's entry answers 404.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import F, OuterRef, QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import PlainTokenGetMixin
from apps.core.pagination import KeysetPagination
from apps.core.params import query_id
from apps.core.tenancy import is_operator
from apps.dispatch import services
from apps.dispatch.filters import DeadLetterFilter, SubTaskFilter, TaskFilter
from apps.dispatch.models import DeadLetter, SubTask, Task
from apps.dispatch.selectors import dlq_stats, owned_task_detail, subtasks_for, tasks_progress
from apps.dispatch.serializers import (
    DeadLetterSerializer,
    DlqStatsSerializer,
    ReprocessAllQuerySerializer,
    ReprocessedSerializer,
    RequeuedSerializer,
    RequeueUnknownSerializer,
    SubTaskSerializer,
    TaskCreateSerializer,
    TaskDetailSerializer,
)

TASKS = "tasks"
DLQ = "dead-letter queue"


def _owned_tasks(request: Request) -> QuerySet[Task]:
    if request.user.is_anonymous:
        return Task.objects.none()  # schema generation (views require authentication)
    return Task.objects.filter(owner=request.user)


def tasks_with_related_ids(queryset: QuerySet[Task]) -> QuerySet[Task]:
    """Tasks with the ids of their tags and explicit contacts as arrays, in the same
    query (read by ``serializers.RelatedIdsField``)."""
    arrays = {}
    for name, column in (
        ("include_tags", "tag_id"),
        ("exclude_tags", "tag_id"),
        ("contacts", "contact_id"),
    ):
        rows = getattr(Task, name).through.objects.filter(task_id=OuterRef("pk"))
        arrays[f"{name}_ids"] = ArraySubquery(rows.order_by(column).values(column))
    return queryset.annotate(**arrays)


def _owned_task(request: Request, pk: int) -> Task:
    """The caller's task ``pk``; 404 when it does not exist or is another user's."""
    return get_object_or_404(_owned_tasks(request), pk=pk)


def _dlq_owner(request: Request):
    """Whose dead letters the caller sees: ``None`` (everyone's) for an operator."""
    return None if is_operator(request.user) else request.user


def _visible_dead_letters(request: Request) -> QuerySet[DeadLetter]:
    entries = DeadLetter.objects.annotate(
        to_email=F("subtask__to_email"), message_id=F("subtask__message_id")
    )
    if request.user.is_anonymous:
        return entries.none()  # schema generation (views require authentication)
    owner = _dlq_owner(request)
    return entries if owner is None else entries.filter(owner=owner)


class SubTaskPagination(KeysetPagination):
    """Keyset pages in recipient order (ids are assigned in contact order at queue time)."""

    ordering = "id"


# --- tasks --------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        tags=[TASKS],
        summary="List your tasks",
        description="Newest first, paginated (`results`, `next`), each with its "
        "`progress` (one statement for the page, whatever the tasks' sizes).",
        responses=TaskDetailSerializer(many=True),
    ),
    post=extend_schema(
        tags=[TASKS],
        summary="Create a draft task",
        description="Tags, contacts and pool must be yours (or open to you); templates "
        "are checked now. A 400 names the field (and the template line).",
        request=TaskCreateSerializer,
        responses={201: TaskDetailSerializer},
    ),
)
class TaskListCreateView(generics.ListAPIView):
    serializer_class = TaskDetailSerializer
    filterset_class = TaskFilter

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        if page is not None:
            counts = tasks_progress([task.pk for task in page])
            for task in page:
                task.progress_counts = counts[task.pk]
        return page

    def get_queryset(self) -> QuerySet[Task]:
        return tasks_with_related_ids(_owned_tasks(self.request)).order_by("-created_at", "-id")

    def post(self, request: Request) -> Response:
        serializer = TaskCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        task = services.task_create(
            owner=request.user, actor=request.user, **serializer.validated_data
        )
        return Response(TaskDetailSerializer(task).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(tags=[TASKS], summary="A task with its progress counts"),
)
class TaskDetailView(PlainTokenGetMixin, generics.RetrieveAPIView):
    """Clients poll it while the task sends, so its plain GET costs little: the task
    with its related ids and its progress in one statement written out
    (``selectors.owned_task_detail``), not a queryset built per request, and a token
    client's JSON GET answered on Django's request (``PlainTokenGetMixin``: DRF's
    authentication, throttles, serializer and renderer, without its request wrapper and
    content negotiation)."""

    serializer_class = TaskDetailSerializer

    def get_queryset(self) -> QuerySet[Task]:
        return tasks_with_related_ids(_owned_tasks(self.request))

    def get_object(self) -> Task:
        task = owned_task_detail(self.request.user, self.kwargs["pk"])
        if task is None:
            # The words of ``get_object_or_404``, as every other view answers.
            raise Http404(f"No {Task._meta.object_name} matches the given query.")
        self.check_object_permissions(self.request, task)
        return task

    def retrieve(self, request, *args, **kwargs) -> HttpResponse:
        task = self.get_object()
        # What the representation is made of beyond the row (whose version stands for it).
        key = (
            task.row_version,
            task.include_tags_ids,
            task.exclude_tags_ids,
            task.contacts_ids,
            tuple(task.progress_counts.items()),
            timezone.get_current_timezone(),
        )
        return self.rendered_once(task.pk, key, lambda: self.get_serializer(task).data)


class _TaskTransitionView(generics.GenericAPIView):
    """POST: apply one lifecycle service to the caller's task; 400 naming ``status`` when
    the task is not in a state that allows it."""

    serializer_class = TaskDetailSerializer
    transition: Callable[..., Task]

    @extend_schema(request=None, responses=TaskDetailSerializer)
    def post(self, request: Request, pk: int) -> Response:
        task = type(self).transition(task=_owned_task(request, pk), actor=request.user)
        return Response(TaskDetailSerializer(task).data)


@extend_schema_view(
    post=extend_schema(
        tags=[TASKS],
        summary="Queue a draft task",
        description="Materializes one subtask per recipient; the task becomes `scheduled` "
        "(future `scheduled_at`), `queued`, or `completed` when every recipient "
        "is skipped.",
    )
)
class TaskQueueView(_TaskTransitionView):
    transition = staticmethod(services.task_queue)


@extend_schema_view(
    post=extend_schema(
        tags=[TASKS],
        summary="Pause a scheduled, queued or sending task",
    )
)
class TaskPauseView(_TaskTransitionView):
    transition = staticmethod(services.task_pause)


@extend_schema_view(post=extend_schema(tags=[TASKS], summary="Resume a paused task"))
class TaskResumeView(_TaskTransitionView):
    transition = staticmethod(services.task_resume)


@extend_schema_view(
    post=extend_schema(
        tags=[TASKS],
        summary="Cancel a task",
        description="Pending subtasks become `cancelled`; messages already on the wire finish.",
    )
)
class TaskCancelView(_TaskTransitionView):
    transition = staticmethod(services.task_cancel)


@extend_schema_view(
    post=extend_schema(
        tags=[TASKS],
        summary="Send the task's `unknown` subtasks again",
        description="`unknown`: a dispatcher died while the message was on the wire, so it may "
        "have been delivered. Requeued subtasks keep their Message-ID.",
        request=RequeueUnknownSerializer,
        responses=RequeuedSerializer,
    )
)
class TaskRequeueUnknownView(generics.GenericAPIView):
    serializer_class = RequeueUnknownSerializer

    def post(self, request: Request, pk: int) -> Response:
        task = _owned_task(request, pk)
        serializer = RequeueUnknownSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        count = services.subtask_requeue_unknown(
            owner=request.user,
            task_id=task.pk,
            subtask_ids=serializer.validated_data["subtask_ids"],
            actor=request.user,
        )
        return Response({"requeued": count})


@extend_schema_view(
    get=extend_schema(
        tags=[TASKS],
        summary="A task's subtasks (one per recipient)",
        description="Keyset pages in id order: follow `next`.",
    )
)
class TaskSubTaskListView(generics.ListAPIView):
    serializer_class = SubTaskSerializer
    filterset_class = SubTaskFilter
    pagination_class = SubTaskPagination

    def get_queryset(self) -> QuerySet[SubTask]:
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return SubTask.objects.none()
        return subtasks_for(_owned_task(self.request, self.kwargs["pk"]))


# --- dead-letter queue --------------------------------------------------------------------

OWNER_PARAM = OpenApiParameter(
    "owner", OpenApiTypes.INT, description="Staff only: one user's entries."
)


@extend_schema_view(
    get=extend_schema(
        tags=[DLQ],
        summary="Dead letters",
        description="Newest first, keyset pages (`next`). Staff see every owner's entries.",
    )
)
class DeadLetterListView(generics.ListAPIView):
    serializer_class = DeadLetterSerializer
    filterset_class = DeadLetterFilter
    pagination_class = KeysetPagination

    def get_queryset(self) -> QuerySet[DeadLetter]:
        return _visible_dead_letters(self.request)


@extend_schema_view(
    get=extend_schema(
        tags=[DLQ],
        summary="Dead-letter counts by status and error type",
        parameters=[OWNER_PARAM],
        responses=DlqStatsSerializer,
    )
)
class DeadLetterStatsView(generics.GenericAPIView):
    serializer_class = DlqStatsSerializer
    pagination_class = None

    def get(self, request: Request) -> Response:
        owner = _dlq_owner(request)
        if owner is None and "owner" in request.query_params:
            owner = get_user_model()(pk=query_id(request, "owner"))
        return Response(dlq_stats(owner=owner))


@extend_schema_view(
    post=extend_schema(
        tags=[DLQ],
        summary="Send one dead letter again",
        description="Its subtask goes back to pending with attempts reset and the same "
        "Message-ID. 400 unless the entry is `pending` or `expired`.",
        request=None,
        responses=DeadLetterSerializer,
    )
)
class DeadLetterReprocessView(generics.GenericAPIView):
    serializer_class = DeadLetterSerializer

    def post(self, request: Request, pk: int) -> Response:
        entries = _visible_dead_letters(request)
        entry = get_object_or_404(entries, pk=pk)
        services.dead_letter_reprocess(
            dead_letter_id=entry.pk, owner=_dlq_owner(request), actor=request.user
        )
        return Response(DeadLetterSerializer(entries.get(pk=entry.pk)).data)


@extend_schema_view(
    post=extend_schema(
        tags=[DLQ],
        summary="Send every pending dead letter again (by task, error type)",
        description="Without filters: every pending entry the caller sees. Entries of "
        "cancelled or failed tasks are left alone.",
        parameters=[ReprocessAllQuerySerializer, OWNER_PARAM],
        request=None,
        responses=ReprocessedSerializer,
    )
)
class DeadLetterReprocessAllView(generics.GenericAPIView):
    serializer_class = ReprocessedSerializer

    def post(self, request: Request) -> Response:
        query = ReprocessAllQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        task_id = query.validated_data.get("task")
        owner = _dlq_owner(request)
        if task_id is not None:
            tasks = Task.objects.all() if owner is None else Task.objects.filter(owner=owner)
            get_object_or_404(tasks, pk=task_id)
        if owner is None and "owner" in request.query_params:
            owner = get_user_model()(pk=query_id(request, "owner"))
        count = services.dead_letters_reprocess_all(
            owner=owner,
            task_id=task_id,
            error_type=query.validated_data.get("error_type"),
            actor=request.user,
        )
        return Response({"reprocessed": count})
