"""Pieces shared by the dispatch admin pages: count-free paging, the task filter, the
progress bar, attempt histories in local time."""

from __future__ import annotations

import json

from django.core.paginator import Page, Paginator
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from apps.core.admin import IdListFilter
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
