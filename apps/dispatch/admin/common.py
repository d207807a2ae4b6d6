"""Pieces shared by the dispatch admin pages: count-free paging (apps.core.admin's), the
task filter, the progress bar, attempt histories in local time."""

from __future__ import annotations

import json

from django.utils import timezone
from django.utils.html import format_html, format_html_join

# The count-free paging and read-only options live in apps.core.admin (the events admin
# uses them too); imported here under the names the dispatch admin has always used.
from apps.core.admin import (  # noqa: F401
    CountFreeAdminMixin,
    CountFreePaginator,
    IdListFilter,
    ReadOnlyAdminMixin,
)
from apps.core.tenancy import owned_by
from apps.dispatch.history import history_times
from apps.dispatch.models import Task

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


class TaskListFilter(IdListFilter):
    """Narrow subtasks, dead letters or test sends to one task (``?task=<id>``); the
    choices are the caller's open tasks, and the task given in the URL (links from the
    task pages) when it is the caller's."""

    title = "task"
    parameter_name = "task"
    lookup = "task_id"

    def lookups(self, request, model_admin):
        tasks = owned_by(Task.objects.all(), request.user)
        live = tasks.filter(status__in=Task.OPEN_STATUSES).order_by("-id")[:30]
        choices = {task.pk: f"#{task.pk} {task.name}" for task in live}
        value = self.value()
        if value and value.isdigit() and int(value) not in choices:
            task = tasks.filter(pk=int(value)).only("pk", "name").first()
            if task is not None:
                choices[task.pk] = f"#{task.pk} {task.name}"
        return [(str(pk), label) for pk, label in choices.items()]


def pretty_history(entries) -> str:
    """An attempt history as indented JSON, its times in the admin's local time."""
    local = [
        {**entry, "at": timezone.localtime(entry["at"]).strftime("%Y-%m-%d %H:%M:%S %Z")}
        if isinstance(entry, dict) and hasattr(entry.get("at"), "tzinfo")
        else entry
        for entry in history_times(entries, as_datetime=True)
    ]
    return format_html("<pre>{}</pre>", json.dumps(local, indent=2, ensure_ascii=False))


def progress_bar(progress: dict[str, int], *, width: str = "220px") -> str:
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
        '<div style="width:{};display:flex;border:1px solid #ccc" title="{}">{}</div>'
        "<small>{} / {} sent</small>",
        width,
        legend,
        segments,
        progress["sent"],
        total,
    )
