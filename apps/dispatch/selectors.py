"""Reads shared by the API, the admin, the commands and the tests."""

from __future__ import annotations

from django.db import connection

from apps.dispatch import progress
from apps.dispatch.models import SubTask, Task

# The progress counters of a task, in order (one per subtask status).
PROGRESS_KEYS = progress.STATUSES


# A live chunk's subtask rows are written when it ends (see ``models.SendChunk``): until
# then, the entries before its position that are still ``allocated`` were accepted (they
# count as ``sent``), and the entry at its position may be on the wire (``sending``).
_IN_CHUNKS = """
SELECT s.task_id, CASE WHEN e.ord <= k.position THEN 'accepted' ELSE 'in_flight' END,
       count(*)
FROM dispatch_sendchunk k
CROSS JOIN LATERAL unnest(k.subtask_ids[1:k.position + 1], k.tokens[1:k.position + 1])
     WITH ORDINALITY AS e(id, token, ord)
JOIN dispatch_subtask s ON s.id = e.id AND s.attempt_token = e.token
WHERE k.position >= 0 AND k.task_ids && %(ids)s::bigint[] AND s.task_id = ANY(%(ids)s)
  AND (s.status = 'allocated') IS TRUE
GROUP BY 1, 2
"""


_CHUNK_STATES = {"accepted": "sent", "in_flight": "sending"}


def tasks_progress(task_ids: list[int]) -> dict[int, dict[str, int]]:
    """``{total, pending, allocated, sending, sent, failed, dead, skipped, cancelled,
    unknown}`` per task, read in ONE statement (one snapshot), so the parts always add
    up to ``total``: the counters the triggers keep (``progress``), with what the live
    chunks say about their ``allocated`` rows: accepted ones count as ``sent``, the one
    message per chunk that may be on the wire right now as ``sending``; ``allocated`` is
    then the ones claimed and never attempted. So after a pause or cancel, at most
    ``sending`` more messages can become ``sent``. A few rows per task whatever its
    size."""
    result = {pk: dict.fromkeys(("total", *PROGRESS_KEYS), 0) for pk in task_ids}
    if not task_ids:
        return result
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT s.task_id, u.status, u.n FROM (SELECT d.task_id, {progress.SUMS} "
            "FROM dispatch_progressdelta d WHERE d.task_id = ANY(%(ids)s) "
            f"GROUP BY d.task_id) s {progress.AS_ROWS} WHERE u.n <> 0 "
            f"UNION ALL {_IN_CHUNKS}",
            {"ids": sorted(set(task_ids))},
        )
        for task_id, status, count in cursor.fetchall():
            if status in _CHUNK_STATES:
                result[task_id]["allocated"] -= count
                result[task_id][_CHUNK_STATES[status]] += count
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
