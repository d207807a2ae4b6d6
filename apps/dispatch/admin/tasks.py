"""Composing, sending and watching a task in the admin.

* The add and change forms save through the same services as the API
  (``compose.task_create`` / ``task_update``), so the same rules hold and errors name the
  field (and a template's line). What may change depends on the task's state
  (``compose.task_editable_fields``): everything in a draft, the content of a paused task
  that has sent nothing, only the name otherwise.
* While composing, the page shows the live audience (``<pk>/audience/`` and
  ``audience/``: who would receive it, who is skipped and why), a preview rendered for a
  chosen contact (``<pk>/preview/``: the HTML body in a sandboxed iframe) and a test send
  to one address through one service of the pool (``<pk>/send-test/``, recorded as a
  ``TestSend``, never part of the task).
* Buttons queue, pause, resume, cancel and duplicate the task (``<pk>/do/<action>/``);
  the list has the same actions for several tasks at once.
* Once queued, the page polls ``<pk>/progress/`` (``static/dispatch/task.js``, no CDN):
  the bar and its legend, counts per status, the send rate over the last minute seen, an
  estimate of the time left, and how long the first send waited.
"""

from __future__ import annotations

from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from apps.contacts.models import Contact
from apps.core.admin import TenantScopedAdmin, report_outcome
from apps.core.errors import ApplicationError
from apps.core.tenancy import is_operator
from apps.dispatch import compose, services
from apps.dispatch.admin.common import PROGRESS_COLOURS, progress_bar
from apps.dispatch.models import Task
from apps.dispatch.selectors import (
    task_audience,
    task_live_progress,
    task_test_sends,
    tasks_progress,
)
from apps.events.admin import AuditTrailMixin
from apps.services.models import EmailService
from apps.services.selectors import pool_default, pools_for_owner

# The recipient fields: a list of ids each in a submitted form or an audience query.
RECIPIENT_FIELDS = ("include_tags", "exclude_tags", "contacts")


class TaskForm(forms.ModelForm):
    """The fields of a task; validated by ``compose.task_fields_clean`` (the API's rules),
    saved by ``compose.task_create`` / ``task_update``."""

    class Meta:
        model = Task
        fields = [*compose.DRAFT_FIELDS, "owner"]
        widgets = {
            "subject": forms.TextInput(attrs={"class": "vLargeTextField", "size": 80}),
            "body_text": forms.Textarea(attrs={"rows": 10, "class": "task-body"}),
            "body_html": forms.Textarea(attrs={"rows": 12, "class": "task-body"}),
        }
        help_texts = {
            "subject": "Django template, e.g. “Hello {{ contact.first_name }}”.",
            "body_text": "Django template: {{ contact.first_name }}, {{ contact.last_name }}, "
            "{{ contact.email }}, an attribute such as {{ contact.attributes.city }}, "
            "filters such as {{ contact.first_name|default:'friend' }}.",
            "body_html": "Django template, HTML-escaped values. A text or an HTML body is needed.",
            "include_tags": "Contacts in any of these tags receive the task…",
            "exclude_tags": "…unless they are in one of these.",
            "contacts": "Contacts who receive it whatever their tags.",
            "scheduled_at": "Leave empty to send as soon as it is queued.",
        }

    def __init__(self, *args, request: HttpRequest | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.request = request
        if "owner" in self.fields:
            self.fields["owner"].required = False
            self.fields["owner"].help_text = "Whose task (default: you)."
        if "pool" in self.fields:
            owner = self._owner_or_none() or getattr(request, "user", None)
            self.fields["pool"].queryset = pools_for_owner(owner).order_by("name")
            widget = self.fields["pool"].widget
            # A pool is chosen here, not edited: no add/change/delete icons beside it.
            for name in ("can_add_related", "can_change_related", "can_delete_related"):
                setattr(widget, name, False)
            widget.can_view_related = False
            if not self.instance.pk:
                self.fields["pool"].initial = pool_default().pk

    def _owner_or_none(self):
        owner = self.instance.owner if self.instance.owner_id else None
        if owner is None and "owner" in self.fields:
            owner = self.data.get(self.add_prefix("owner")) or None
            if owner is not None:
                owner = self.fields["owner"].queryset.filter(pk=owner).first()
        return owner

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        saved_owner = self.instance.owner if self.instance.owner_id else None
        owner = cleaned.get("owner") or saved_owner or self.request.user
        given = {name: cleaned.get(name) for name in self.fields if name != "owner"}
        if self.instance.pk:
            editable = set(compose.task_editable_fields(self.instance))
            given = {name: value for name, value in given.items() if name in editable}
        try:
            self.service_fields = compose.task_fields_clean(owner=owner, fields=given)
        except ValidationError as exc:
            for field, reasons in exc.message_dict.items():
                target = field if field in self.fields else None
                for reason in reasons:
                    self.add_error(target, reason)
        self.owner = owner
        return cleaned


class TaskChangeList(ChangeList):
    """Counts the progress of every task on the page in one statement."""

    def get_results(self, request) -> None:
        super().get_results(request)
        rows = list(self.result_list)
        counts = tasks_progress([task.pk for task in rows])
        for task in rows:
            task.progress_counts = counts[task.pk]


# Buttons of the change page: (action, label, the statuses that show it, confirmation).
BUTTONS = (
    ("queue", "Queue", (Task.Status.DRAFT,), "Queue this task? Its recipients are fixed now."),
    ("pause", "Pause", Task.LIVE_STATUSES, ""),
    ("resume", "Resume", (Task.Status.PAUSED,), ""),
    (
        "cancel",
        "Cancel",
        Task.OPEN_STATUSES,
        "Cancel this task? Messages not yet sent are never sent.",
    ),
    ("duplicate", "Duplicate", tuple(Task.Status.values), ""),
)
TRANSITIONS: dict[str, tuple[Callable[..., Task], str]] = {
    "queue": (services.task_queue, "queued"),
    "pause": (services.task_pause, "paused"),
    "resume": (services.task_resume, "resumed"),
    "cancel": (services.task_cancel, "cancelled"),
}


@admin.register(Task)
class TaskAdmin(AuditTrailMixin, TenantScopedAdmin):
    form = TaskForm
    change_form_template = "admin/dispatch/task/change_form.html"
    list_display = (
        "id",
        "name",
        "owner",
        "status",
        "progress",
        "priority",
        "pool",
        "scheduled_at",
        "created_at",
    )
    list_display_links = ("id", "name")
    list_filter = ("status", ("pool", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "owner__username", "owner__email")
    list_select_related = ("owner", "pool")
    ordering = ("-id",)
    list_per_page = 50
    autocomplete_fields = ("include_tags", "exclude_tags", "contacts")
    raw_id_fields = ("owner",)
    actions = (
        "queue_tasks",
        "pause_tasks",
        "resume_tasks",
        "cancel_tasks",
        "duplicate_tasks",
        "requeue_unknown",
    )
    RECORD_FIELDS = ("total", "queued_at", "started_at", "completed_at", "created_at", "updated_at")

    # --- form layout by state --------------------------------------------------------

    def get_fieldsets(self, request, obj=None):
        first = ["name", "owner"] if obj is None else ["name", "owner", "status", "links"]
        recipients = (
            list(RECIPIENT_FIELDS)
            if obj is None or obj.status == Task.Status.DRAFT
            else ["recipients"]
        )
        fieldsets = [
            (None, {"fields": first}),
            ("Message", {"fields": ["subject", "from_name", "body_text", "body_html"]}),
            ("Recipients", {"fields": recipients}),
            ("Sending", {"fields": ["pool", "priority", "scheduled_at", "tracking"]}),
        ]
        if obj is not None:
            fieldsets.append(
                ("Record", {"fields": list(self.RECORD_FIELDS), "classes": ["collapse"]})
            )
        if not is_operator(request.user):
            fieldsets = [
                (name, {**options, "fields": [f for f in options["fields"] if f != "owner"]})
                for name, options in fieldsets
            ]
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        computed = ["status", "links", "recipients", *self.RECORD_FIELDS]
        if obj is None:
            return computed
        editable = set(compose.task_editable_fields(obj))
        return (
            computed
            + [f for f in TaskForm.Meta.fields if f not in editable and f != "owner"]
            + ["owner"]
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)

        class RequestTaskForm(form):
            def __init__(self, *args, **kw) -> None:
                super().__init__(*args, request=request, **kw)

        RequestTaskForm.__name__ = form.__name__
        return RequestTaskForm

    def get_changelist(self, request, **kwargs):
        return TaskChangeList

    # --- saving through the services ---------------------------------------------------

    def save_form(self, request, form, change):
        if not change:
            fields = dict(form.service_fields)
            fields.setdefault("pool", None)
            return compose.task_create(owner=form.owner, actor=request.user, **fields)
        if form.service_fields:
            return compose.task_update(
                task=form.instance.pk, fields=form.service_fields, actor=request.user
            )
        return Task.objects.get(pk=form.instance.pk)

    def save_model(self, request, obj, form, change) -> None:
        """Saved by :meth:`save_form` through the services."""

    def save_related(self, request, form, formsets, change) -> None:
        """The recipients were saved with the task (by the service)."""

    def delete_model(self, request, obj) -> None:
        compose.task_delete(task=obj.pk, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for pk in queryset.values_list("pk", flat=True):
            compose.task_delete(task=pk, actor=request.user)

    def has_delete_permission(self, request, obj=None) -> bool:
        # Only a draft: a queued task is a record of what was sent (cancel it instead).
        if obj is not None and obj.status != Task.Status.DRAFT:
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    # --- read-only displays ---------------------------------------------------------------

    @admin.display(description="progress")
    def progress(self, task: Task) -> str:
        counts = getattr(task, "progress_counts", None)
        if counts is None:
            counts = tasks_progress([task.pk])[task.pk]
        return progress_bar(counts)

    @admin.display(description="see")
    def links(self, task: Task) -> str:
        subtasks = reverse("admin:dispatch_subtask_changelist")
        dead = reverse("admin:dispatch_deadletter_changelist")
        tests = reverse("admin:dispatch_testsend_changelist")
        return format_html(
            '<a href="{}?task={}">subtasks</a> · <a href="{}?task={}">dead letters</a> · '
            '<a href="{}?task={}">test sends</a>',
            subtasks,
            task.pk,
            dead,
            task.pk,
            tests,
            task.pk,
        )

    @admin.display(description="recipients")
    def recipients(self, task: Task) -> str:
        include = ", ".join(task.include_tags.values_list("name", flat=True)) or "—"
        exclude = ", ".join(task.exclude_tags.values_list("name", flat=True)) or "—"
        return format_html(
            "tags: {}; minus tags: {}; plus {} explicit contact(s)",
            include,
            exclude,
            task.contacts.count(),
        )

    # --- the page's panels --------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        task = self.get_object(request, object_id)
        editable = compose.task_editable_fields(task)
        services_of_pool = EmailService.objects.filter(pool_id=task.pool_id).order_by("name")
        live = task_live_progress(task)
        counts, total = live["progress"], live["progress"]["total"] or 1

        def actions(status: str) -> list[str]:
            return [action for action, _, statuses, _ in BUTTONS if status in statuses]

        extra = {
            "task": task,
            # The statuses with the same buttons as now: a change to another one asks for
            # a reload (the page's buttons are drawn once).
            "task_same_buttons": ",".join(
                s for s in Task.Status.values if actions(s) == actions(task.status)
            ),
            "task_buttons": [
                {"action": action, "label": label, "confirm": confirm}
                for action, label, statuses, confirm in BUTTONS
                if task.status in statuses
            ]
            if self.has_change_permission(request, task)
            else [],
            "task_live": task.status != Task.Status.DRAFT,
            "task_progress": live,
            "task_legend": [
                (key, counts[key], colour, f"{100 * counts[key] / total:.3f}")
                for key, colour in PROGRESS_COLOURS.items()
            ],
            "task_audience": task.status == Task.Status.DRAFT,
            "task_editable": editable,
            "preview_contacts": self._preview_contacts(task),
            "test_services": [s for s in services_of_pool if s.is_enabled],
            "test_sends": task_test_sends(task),
            "test_default_to": request.user.email,
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def add_view(self, request, form_url="", extra_context=None):
        extra = {"task_audience": True, "task_live": False}
        return super().add_view(request, form_url, {**extra, **(extra_context or {})})

    @staticmethod
    def _preview_contacts(task: Task) -> list[Contact]:
        """Up to 20 of the task's recipients (the explicit ones first) to preview for."""
        explicit = list(task.contacts.order_by("pk")[:20])
        tags = list(task.include_tags.values_list("pk", flat=True))
        tagged = list(
            Contact.objects.filter(owner_id=task.owner_id, memberships__tag_id__in=tags)
            .exclude(pk__in=[c.pk for c in explicit])
            .distinct()
            .order_by("pk")[: 20 - len(explicit)]
        )
        return explicit + tagged

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("audience/", wrap(self.audience_view), name="dispatch_task_audience"),
            path("<int:pk>/audience/", wrap(self.audience_view), name="dispatch_task_audience"),
            path("<int:pk>/progress/", wrap(self.progress_view), name="dispatch_task_progress"),
            path("<int:pk>/preview/", wrap(self.preview_view), name="dispatch_task_preview"),
            path("<int:pk>/send-test/", wrap(self.send_test_view), name="dispatch_task_send_test"),
            path("<int:pk>/do/<str:action>/", wrap(self.do_view), name="dispatch_task_do"),
            *super().get_urls(),
        ]

    def _task_for(self, request, pk: int, *, change: bool = False) -> Task:
        task = get_object_or_404(self.get_queryset(request), pk=pk)
        allowed = (
            self.has_change_permission(request, task)
            if change
            else self.has_view_permission(request, task)
        )
        if not allowed:
            raise PermissionDenied
        return task

    def audience_view(self, request, pk: int | None = None) -> JsonResponse:
        """Who would receive a task with the recipients in the query string (the ids the
        form holds right now), or the saved task's when none are given."""
        if pk is not None:
            task = self._task_for(request, pk)
            owner = task.owner
        else:
            if not self.has_add_permission(request):
                raise PermissionDenied
            task, owner = None, request.user
            wanted = request.GET.get("owner", "")
            if wanted.isdigit() and is_operator(request.user):
                owner = int(wanted)
        given = {name: _ids(request.GET.getlist(name)) for name in RECIPIENT_FIELDS}
        if task is not None and not any(name in request.GET for name in RECIPIENT_FIELDS):
            given = {
                "include_tags": task.include_tags.values_list("pk", flat=True),
                "exclude_tags": task.exclude_tags.values_list("pk", flat=True),
                "contacts": task.contacts.values_list("pk", flat=True),
            }
        return JsonResponse(task_audience(owner=owner, **given))

    def progress_view(self, request, pk: int) -> JsonResponse:
        return JsonResponse(task_live_progress(self._task_for(request, pk)))

    def preview_view(self, request, pk: int) -> JsonResponse:
        """The message as one contact gets it: from the form's current text (POST) or the
        saved task (GET). 400 with the template error (field and line) otherwise."""
        task = self._task_for(request, pk)
        source = request.POST if request.method == "POST" else {}
        content = {
            name: source.get(name, getattr(task, name))
            for name in ("subject", "body_text", "body_html", "from_name")
        }
        contact = None
        contact_id = (request.POST if request.method == "POST" else request.GET).get("contact", "")
        if contact_id.isdigit():
            contact = Contact.objects.filter(owner_id=task.owner_id, pk=int(contact_id)).first()
        try:
            preview = compose.task_preview(**content, contact=contact)
        except ValidationError as exc:
            return JsonResponse({"errors": exc.message_dict}, status=400)
        return JsonResponse(preview.as_dict())

    def send_test_view(self, request, pk: int) -> JsonResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        task = self._task_for(request, pk, change=True)
        contact_id = request.POST.get("contact", "")
        contact = None
        if contact_id.isdigit():
            contact = Contact.objects.filter(owner_id=task.owner_id, pk=int(contact_id)).first()
        service_id = request.POST.get("service", "")
        try:
            record = compose.task_send_test(
                task=task,
                to_email=request.POST.get("to_email", ""),
                service=int(service_id) if service_id.isdigit() else 0,
                contact=contact,
                sent_by=request.user,
            )
        except ApplicationError as exc:
            return JsonResponse({"errors": {exc.field or "__all__": [exc.message]}}, status=400)
        return JsonResponse(
            {
                "id": record.pk,
                "ok": record.ok,
                "error": record.error,
                "to_email": record.to_email,
                "subject": record.subject,
                "service": record.service.name if record.service else "",
                "created_at": timezone.localtime(record.created_at).strftime("%Y-%m-%d %H:%M:%S")
                if record.created_at
                else "",
            }
        )

    def do_view(self, request, pk: int, action: str) -> HttpResponseRedirect:
        """A button of the change page: one service call, its outcome as a message."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        task = self._task_for(request, pk, change=True)
        page = reverse("admin:dispatch_task_change", args=[task.pk])
        if action == "duplicate":
            copy = compose.task_duplicate(task=task, actor=request.user)
            self.log_addition(request, copy, f"Duplicated from task {task.pk}.")
            self.message_user(request, f"Task #{copy.pk} is a new draft copy of #{task.pk}.")
            return HttpResponseRedirect(reverse("admin:dispatch_task_change", args=[copy.pk]))
        if action not in TRANSITIONS:
            raise PermissionDenied
        transition, verb = TRANSITIONS[action]
        try:
            task = transition(task=task.pk, actor=request.user)
        except ApplicationError as exc:
            self.message_user(request, f"Not {verb}: {exc.message}", messages.ERROR)
        else:
            self.log_change(request, task, f"{verb.capitalize()}.")
            recipients = f" to {task.total} recipient(s)" if action == "queue" else ""
            self.message_user(request, f"Task #{task.pk} {verb}{recipients}; it is {task.status}.")
        return HttpResponseRedirect(page)

    # --- list actions -----------------------------------------------------------------------

    def _apply(self, request, queryset, transition: Callable[..., Task], done_verb: str) -> None:
        done, refused = 0, []
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                transition(task=pk, actor=request.user)
            except ApplicationError as exc:
                refused.append(f"#{pk}: {exc.message}")
            else:
                done += 1
        report_outcome(self, request, done, f"task(s) {done_verb}", refused)

    @admin.action(description="Queue selected draft tasks", permissions=["change"])
    def queue_tasks(self, request, queryset) -> None:
        self._apply(request, queryset, services.task_queue, "queued")

    @admin.action(description="Pause selected tasks", permissions=["change"])
    def pause_tasks(self, request, queryset) -> None:
        self._apply(request, queryset, services.task_pause, "paused")

    @admin.action(description="Resume selected tasks", permissions=["change"])
    def resume_tasks(self, request, queryset) -> None:
        self._apply(request, queryset, services.task_resume, "resumed")

    @admin.action(description="Cancel selected tasks", permissions=["change"])
    def cancel_tasks(self, request, queryset) -> None:
        self._apply(request, queryset, services.task_cancel, "cancelled")

    @admin.action(description="Duplicate selected tasks (as drafts)", permissions=["add"])
    def duplicate_tasks(self, request, queryset) -> None:
        copies = [
            compose.task_duplicate(task=task, actor=request.user)
            for task in queryset.order_by("pk")
        ]
        report_outcome(self, request, len(copies), "task(s) duplicated as drafts", [])

    @admin.action(
        description="Resend the unknown subtasks of selected tasks", permissions=["change"]
    )
    def requeue_unknown(self, request, queryset) -> None:
        owner = None if is_operator(request.user) else request.user
        count, refused = 0, []
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                count += services.subtask_requeue_unknown(
                    owner=owner, task_id=pk, actor=request.user
                )
            except ApplicationError as exc:
                refused.append(f"#{pk}: {exc.message}")
        report_outcome(self, request, count, "unknown subtask(s) requeued", refused)


def _ids(values: list[str]) -> list[int]:
    ids = []
    for value in values:
        for part in value.split(","):
            if part.strip().isdigit():
                ids.append(int(part))
    return ids
