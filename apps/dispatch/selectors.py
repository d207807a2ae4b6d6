"""Reads shared by the API, the admin, the commands and the tests."""

from __future__ import annotations

from django.db import connection

from apps.dispatch import progress
from apps.dispatch.models import SubTask, Task

# The progress counters of a task, in order (one per subtask status).
PROGRESS_KEYS = progress.STATUSES


# Subtasks on the wire: the entry at each chunk's position while still ``allocated``
# (a chunk's subtask rows are written when it ends; see ``models.SendChunk``).
_IN_FLIGHT = """
SELECT s.task_id, 'in_flight', count(*)
FROM dispatch_sendchunk k
JOIN dispatch_subtask s ON s.id = k.subtask_ids[k.position + 1]
                       AND s.attempt_token = k.tokens[k.position + 1]
WHERE k.position >= 0 AND k.task_ids && %(ids)s::bigint[] AND s.task_id = ANY(%(ids)s)
  AND (s.status = 'allocated') IS TRUE
GROUP BY s.task_id
"""


def tasks_progress(task_ids: list[int]) -> dict[int, dict[str, int]]:
    """``{total, pending, allocated, sending, sent, failed, dead, skipped, cancelled,
    unknown}`` per task, read in ONE statement (one snapshot), so the parts always add
    up to ``total``: the counters the triggers keep (``progress``), plus the messages on
    the wire right now as ``sending`` (``allocated`` is then the ones claimed by a
    dispatcher and not yet on the wire). A few rows per task whatever its size."""
    result = {pk: dict.fromkeys(("total", *PROGRESS_KEYS), 0) for pk in task_ids}
    if not task_ids:
        return result
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT s.task_id, u.status, u.n FROM (SELECT d.task_id, {progress.SUMS} "
            "FROM dispatch_progressdelta d WHERE d.task_id = ANY(%(ids)s) "
            f"GROUP BY d.task_id) s {progress.AS_ROWS} WHERE u.n <> 0 "
            f"UNION ALL {_IN_FLIGHT}",
            {"ids": sorted(set(task_ids))},
        )
        for task_id, status, count in cursor.fetchall():
            if status == "in_flight":
                result[task_id]["allocated"] -= count
                result[task_id]["sending"] += count
            else:
                result[task_id][status] = result[task_id].get(status, 0) + count
                result[task_id]["total"] += count
    return result


def task_progress(task: Task | int) -> dict[str, int]:
    """:func:`tasks_progress` of one task."""
    pk = getattr(task, "pk", task)
    return tasks_progress([pk])[pk]


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
    """The subtasks of a task, optionally of one status, in id order. Given the task
    itself, the primary-key walk starts at its ``subtask_id_floor``."""
    pk = getattr(task, "pk", task)
    queryset = SubTask.objects.filter(task_id=pk)
    floor = getattr(task, "subtask_id_floor", None)
    if floor is not None:
        queryset = queryset.filter(pk__gt=floor)
    if status:
        queryset = queryset.filter(status=status)
    return queryset.order_by("id")
