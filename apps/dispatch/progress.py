"""Task progress counters: the sums of ``models.ProgressDelta``, kept by triggers.

Every statement that inserts, updates or deletes subtasks appends, in its own
transaction, one delta row per (task, status) it changed (migration ``0005``). So:

* ``selectors.tasks_progress`` reads a task's counters as a sum over a few rows,
  whatever its size, instead of counting its subtasks;
* in every snapshot the counters equal a count of the subtasks — :func:`mismatches`
  proves it in one statement, and ``manage.py check_task_progress`` runs it;
* writers never wait for each other on counters: rows are only appended.

:func:`compact` folds each task's rows into one per status (the dispatcher loops call it
every ``COMPACT_EVERY`` seconds, recovery on every pass). :func:`rebuild` recounts
tasks from their subtasks, for a repair.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction

# A task's rows are folded once it has more than this many.
COMPACT_ABOVE = 32


def compact(*, above: int = COMPACT_ABOVE) -> int:
    """Fold the rows of every task that has more than ``above`` into one per status, and
    drop the rows of tasks that no longer exist (they sum to zero). One statement: the
    rows it deletes and the sums it writes commit together, so a reader sees either; rows
    appended meanwhile are not in its snapshot and stay. Safe to run anywhere at once (a
    second run skips the rows the first deleted). Returns the rows deleted."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH busy AS (
                SELECT d.task_id FROM dispatch_progressdelta d
                GROUP BY d.task_id
                HAVING count(*) > %s
                    OR NOT EXISTS (SELECT 1 FROM dispatch_task t WHERE t.id = d.task_id)
            ), gone AS (
                DELETE FROM dispatch_progressdelta d
                WHERE d.task_id IN (SELECT task_id FROM busy)
                RETURNING d.task_id, d.status, d.n
            ), folded AS (
                INSERT INTO dispatch_progressdelta (task_id, status, n)
                SELECT task_id, status, sum(n) FROM gone
                GROUP BY task_id, status
                HAVING sum(n) <> 0
                   AND EXISTS (SELECT 1 FROM dispatch_task t WHERE t.id = gone.task_id)
            )
            SELECT count(*) FROM gone
            """,
            [above],
        )
        return cursor.fetchone()[0]


def mismatches(task_ids: Iterable[int] | None = None) -> list[tuple[int, str, int, int]]:
    """``(task_id, status, counted, summed)`` wherever the deltas differ from a count of
    the subtasks, for the given tasks or all. One statement, so one snapshot: exact even
    while dispatchers write."""
    ids = None if task_ids is None else sorted(set(task_ids))
    where = "" if ids is None else "WHERE task_id = ANY(%(ids)s)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH counted AS (
                SELECT task_id, status, count(*) AS n FROM dispatch_subtask {where}
                GROUP BY task_id, status
            ), summed AS (
                SELECT task_id, status, sum(n) AS n FROM dispatch_progressdelta {where}
                GROUP BY task_id, status HAVING sum(n) <> 0
            )
            SELECT task_id, status, coalesce(c.n, 0), coalesce(s.n, 0)
            FROM counted c FULL JOIN summed s USING (task_id, status)
            WHERE c.n IS DISTINCT FROM s.n
            ORDER BY task_id, status
            """,
            {"ids": ids},
        )
        return [(t, s, int(c), int(n)) for t, s, c, n in cursor.fetchall()]


def rebuild(task_ids: Iterable[int]) -> int:
    """Replace the deltas of these tasks by a count of their subtasks. Writers of
    subtasks and :func:`compact` wait meanwhile (a ``SHARE`` lock on the subtasks, then
    ``SHARE ROW EXCLUSIVE`` on the deltas, until commit), so the count and the deltas
    written after it line up. Returns the rows written."""
    ids = sorted(set(task_ids))
    if not ids:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE dispatch_subtask IN SHARE MODE")
        cursor.execute("LOCK TABLE dispatch_progressdelta IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute("DELETE FROM dispatch_progressdelta WHERE task_id = ANY(%s)", [ids])
        cursor.execute(
            "INSERT INTO dispatch_progressdelta (task_id, status, n) "
            "SELECT task_id, status, count(*) FROM dispatch_subtask "
            "WHERE task_id = ANY(%s) GROUP BY task_id, status",
            [ids],
        )
        return cursor.rowcount
