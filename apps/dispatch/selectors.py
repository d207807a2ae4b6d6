"""Reads shared by the API, the admin, the commands and the tests."""

from __future__ import annotations

from django.db import connection

from apps.dispatch.models import SubTask, Task

PROGRESS_KEYS = (
    "pending",
    "allocated",
    "sending",
    "sent",
    "failed",
    "dead",
    "skipped",
    "cancelled",
    "unknown",
)


def task_progress(task: Task | int) -> dict[str, int]:
    """``{total, pending, allocated, sending, sent, failed, dead, skipped, cancelled,
    unknown}`` for one task, counted in ONE statement (one snapshot), so the parts always
    add up to ``total``."""
    pk = getattr(task, "pk", task)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, count(*) FROM dispatch_subtask WHERE task_id = %s GROUP BY status",
            [pk],
        )
        counts = dict(cursor.fetchall())
    progress = {"total": sum(counts.values())}
    progress.update({key: counts.get(key, 0) for key in PROGRESS_KEYS})
    return progress


def tasks_progress(task_ids: list[int]) -> dict[int, dict[str, int]]:
    """:func:`task_progress` for many tasks in one statement (list pages)."""
    result = {pk: dict.fromkeys(("total", *PROGRESS_KEYS), 0) for pk in task_ids}
    if not task_ids:
        return result
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT task_id, status, count(*) FROM dispatch_subtask WHERE task_id = ANY(%s) "
            "GROUP BY task_id, status",
            [list(task_ids)],
        )
        for task_id, status, count in cursor.fetchall():
            result[task_id][status] = count
            result[task_id]["total"] += count
    return result


def dlq_stats(*, owner=None) -> dict:
    """Dead-letter counts: ``{total, by_status: {…}, by_error_type: {…}}`` (pending and
    reprocessing entries by error type), optionally for one owner. Two index-backed
    aggregates, fast on 100,000+ entries."""
    where, params = ("WHERE owner_id = %s", [owner.pk]) if owner is not None else ("", [])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT status, count(*) FROM dispatch_deadletter {where} GROUP BY status",
            params,
        )
        by_status = dict(cursor.fetchall())
        open_where = "AND owner_id = %s" if owner is not None else ""
        cursor.execute(
            "SELECT error_type, count(*) FROM dispatch_deadletter "
            f"WHERE status IN ('pending', 'reprocessing') {open_where} "
            "GROUP BY error_type ORDER BY count(*) DESC",
            params,
        )
        by_error_type = dict(cursor.fetchall())
    statuses = ("pending", "reprocessing", "resolved", "expired")
    return {
        "total": sum(by_status.values()),
        "by_status": {status: by_status.get(status, 0) for status in statuses},
        "by_error_type": by_error_type,
    }


def subtasks_for(task: Task | int, *, status: str | None = None):
    """The subtasks of a task, optionally of one status, newest first by id."""
    pk = getattr(task, "pk", task)
    queryset = SubTask.objects.filter(task_id=pk)
    if status:
        queryset = queryset.filter(status=status)
    return queryset.order_by("id")
