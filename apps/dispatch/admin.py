"""Operators' admin of send tasks, subtasks and the dead-letter queue.

Every change goes through a service (:mod:`apps.dispatch.services`): the pages are
read-only, and the actions queue/pause/resume/cancel tasks, requeue ``unknown`` subtasks
and reprocess dead letters, reporting how many rows they moved and which were refused.
Subtasks and dead letters are million-row tables: their lists never count rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from apps.core.errors import ApplicationError
from apps.dispatch import services
from apps.dispatch.models import DeadLetter, SubTask, Task
from apps.dispatch.selectors import task_progress, tasks_progress

# Colours of the progress bar segments, in the order they are drawn.
PROGRESS_COLOURS = {
    "sent": "#2e7d32",
    "sending": "#66bb6a",
    "allocated": "#a5d6a7",
    "pending": "#cfd8dc",
    "unknown": "#ffb300",
    "failed": "#e53935",
    "dead": "#6d4c41",
    "skipped": "#90a4ae",
    "cancelled": "#546e7a",
}


class CountFreePaginator(Paginator):
    """Pages a huge table without ``COUNT(*)``: it reads the requested page plus one row.

    ``count`` is only "rows up to this page, plus one if there is a next page", which is
    all the admin needs to draw previous/next links. Build it with the page the request
    asks for (:meth:`CountFreeAdminMixin.get_paginator`).
    """

    def __init__(self, object_list, per_page, *, page_number: int = 1, **kwargs) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.page_number = max(page_number, 1)

    @cached_property
    def _window(self) -> list:
        offset = (self.page_number - 1) * self.per_page
        return list(self.object_list[offset : offset + self.per_page + 1])

    @cached_property
    def count(self) -> int:
        return (self.page_number - 1) * self.per_page + len(self._window)

    def page(self, number) -> Page:
        number = self.validate_number(number)
        if number != self.page_number:
            return super().page(number)
        return self._get_page(self._window[: self.per_page], number, self)


class CountFreeAdminMixin:
    """Admin options for million-row tables: no counts, no "show all", newest first."""

    show_full_result_count = False
    list_max_show_all = 0
    list_per_page = 100

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        try:
            number = int(request.GET.get("p", 1))
        except ValueError:
            number = 1
        return CountFreePaginator(
            queryset,
            per_page,
            page_number=number,
            orphans=0,
            allow_empty_first_page=allow_empty_first_page,
        )


class ReadOnlyAdminMixin:
    """Rows change only through services (actions), never through a form."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class TaskListFilter(admin.SimpleListFilter):
    """Narrow subtasks or dead letters to one task (``?task=<id>``); the choices are the
    live tasks, and the task given in the URL (links from the task pages)."""

    title = "task"
    parameter_name = "task"

    def lookups(self, request, model_admin):
        live = Task.objects.filter(
            status__in=["scheduled", "queued", "sending", "paused"]
        ).order_by("-id")[:30]
        choices = {task.pk: f"#{task.pk} {task.name}" for task in live}
        value = self.value()
        if value and value.isdigit() and int(value) not in choices:
            task = Task.objects.filter(pk=int(value)).only("pk", "name").first()
            if task is not None:
                choices[task.pk] = f"#{task.pk} {task.name}"
        return [(str(pk), label) for pk, label in choices.items()]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(task_id=int(value))


def _pretty_json(value) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


def progress_bar(progress: dict[str, int]) -> str:
    """A stacked bar of the subtask counts by status, the counts in its tooltip."""
    total = progress["total"]
    if not total:
        return format_html('<span style="color:#888">{}</span>', "no recipients yet")
    segments = format_html_join(
        "",
        '<span title="{}: {}" style="display:inline-block;height:12px;width:{}%;'
        'background:{}"></span>',
        (
            (status, progress[status], f"{100 * progress[status] / total:.3f}", colour)
            for status, colour in PROGRESS_COLOURS.items()
            if progress[status]
        ),
    )
    legend = ", ".join(
        f"{status} {progress[status]}" for status in PROGRESS_COLOURS if progress[status]
    )
    return format_html(
        '<div style="width:220px;display:flex;border:1px solid #ccc" title="{}">{}</div>'
        "<small>{} / {} sent</small>",
        legend,
        segments,
        progress["sent"],
        total,
    )


class TaskChangeList(ChangeList):
    """Counts the progress of every task on the page in one statement."""

    def get_results(self, request) -> None:
        super().get_results(request)
        rows = list(self.result_list)
        counts = tasks_progress([task.pk for task in rows])
        for task in rows:
            task.progress_counts = counts[task.pk]


@admin.register(Task)
class TaskAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
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
    list_filter = ("status", "pool")
    search_fields = ("name", "owner__username", "owner__email")
    list_select_related = ("owner", "pool")
    ordering = ("-id",)
    list_per_page = 50
    actions = ("queue_tasks", "pause_tasks", "resume_tasks", "cancel_tasks", "requeue_unknown")
    fields = (
        "name",
        "owner",
        "status",
        "progress_detail",
        "links",
        "pool",
        "priority",
        "scheduled_at",
        "subject",
        "from_name",
        "body_text",
        "body_html",
        "recipients",
        "total",
        "queued_at",
        "started_at",
        "completed_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    def get_changelist(self, request, **kwargs):
        return TaskChangeList

    @admin.display(description="progress")
    def progress(self, task: Task) -> str:
        counts = getattr(task, "progress_counts", None) or task_progress(task)
        return progress_bar(counts)

    @admin.display(description="progress")
    def progress_detail(self, task: Task) -> str:
        return progress_bar(task_progress(task))

    @admin.display(description="see")
    def links(self, task: Task) -> str:
        subtasks = reverse("admin:dispatch_subtask_changelist")
        dead = reverse("admin:dispatch_deadletter_changelist")
        return format_html(
            '<a href="{}?task={}">subtasks</a> · <a href="{}?task={}">dead letters</a>',
            subtasks,
            task.pk,
            dead,
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

    def _apply(
        self,
        request: HttpRequest,
        queryset: QuerySet[Task],
        transition: Callable[..., Task],
        done_verb: str,
    ) -> None:
        done, refused = 0, []
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                transition(task=pk)
            except ApplicationError as exc:
                refused.append(f"#{pk}: {exc.message}")
            else:
                done += 1
        self.message_user(request, f"{done} task(s) {done_verb}.", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"{len(refused)} refused — " + "; ".join(refused), messages.WARNING
            )

    @admin.action(description="Queue selected draft tasks")
    def queue_tasks(self, request, queryset) -> None:
        self._apply(request, queryset, services.task_queue, "queued")

    @admin.action(description="Pause selected tasks")
    def pause_tasks(self, request, queryset) -> None:
        self._apply(request, queryset, services.task_pause, "paused")

    @admin.action(description="Resume selected tasks")
    def resume_tasks(self, request, queryset) -> None:
        self._apply(request, queryset, services.task_resume, "resumed")

    @admin.action(description="Cancel selected tasks")
    def cancel_tasks(self, request, queryset) -> None:
        self._apply(request, queryset, services.task_cancel, "cancelled")

    @admin.action(description="Resend the unknown subtasks of selected tasks")
    def requeue_unknown(self, request, queryset) -> None:
        count = sum(
            services.subtask_requeue_unknown(task_id=pk)
            for pk in queryset.order_by("pk").values_list("pk", flat=True)
        )
        self.message_user(request, f"{count} unknown subtask(s) requeued.", messages.SUCCESS)


@admin.register(SubTask)
class SubTaskAdmin(CountFreeAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "to_email",
        "task",
        "owner",
        "status",
        "attempts",
        "service",
        "next_attempt_at",
        "sent_at",
    )
    list_filter = ("status", TaskListFilter)
    list_select_related = ("task", "owner", "service")
    ordering = ("-id",)
    actions = ("requeue_unknown",)
    fields = (
        "task",
        "owner",
        "contact_id",
        "to_email",
        "status",
        "attempts",
        "attempt_token",
        "message_id",
        "service",
        "next_attempt_at",
        "lease_expires_at",
        "last_error",
        "error_class",
        "history_pretty",
        "created_at",
        "sent_at",
    )
    readonly_fields = fields

    @admin.display(description="history")
    def history_pretty(self, subtask: SubTask) -> str:
        return _pretty_json(subtask.history)

    @admin.action(description="Resend selected unknown subtasks (same Message-ID)")
    def requeue_unknown(self, request, queryset) -> None:
        ids = list(queryset.filter(status=SubTask.Status.UNKNOWN).values_list("pk", flat=True))
        count = services.subtask_requeue_unknown(subtask_ids=ids) if ids else 0
        self.message_user(request, f"{count} unknown subtask(s) requeued.", messages.SUCCESS)


@admin.register(DeadLetter)
class DeadLetterAdmin(CountFreeAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "to_email",
        "task",
        "owner",
        "error_type",
        "status",
        "reprocess_count",
        "created_at",
    )
    list_filter = ("status", "error_type", TaskListFilter)
    list_select_related = ("task", "owner", "subtask")
    ordering = ("-id",)
    actions = ("reprocess",)
    fields = (
        "task",
        "subtask",
        "owner",
        "to_email",
        "error_type",
        "error_message",
        "history_pretty",
        "status",
        "reprocess_count",
        "created_at",
        "updated_at",
        "resolved_at",
    )
    readonly_fields = fields

    @admin.display(description="to", ordering="subtask__to_email")
    def to_email(self, entry: DeadLetter) -> str:
        return entry.subtask.to_email

    @admin.display(description="history")
    def history_pretty(self, entry: DeadLetter) -> str:
        return _pretty_json(entry.history)

    @admin.action(description="Reprocess selected dead letters")
    def reprocess(self, request, queryset) -> None:
        done, refused = 0, []
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                services.dead_letter_reprocess(dead_letter_id=pk)
            except ApplicationError as exc:
                refused.append(f"#{pk}: {exc.message}")
            else:
                done += 1
        self.message_user(request, f"{done} dead letter(s) reprocessed.", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"{len(refused)} refused — " + "; ".join(refused), messages.WARNING
            )
