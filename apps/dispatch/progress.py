"""Task progress counters: the sums of ``models.ProgressDelta``, kept by triggers.

Every statement that inserts, updates or deletes subtasks appends, in its own
transaction, one delta row per task it changed, a column per status (migration
``0005``). So:

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

from apps.dispatch.models import SubTask

# The statuses a subtask row can hold, each a column of ``dispatch_progressdelta`` (a new
# status needs its column: see ``models.ProgressDelta``).
STATUSES = tuple(SubTask.Status.values)
COLUMNS = ", ".join(STATUSES)
# A task's rows summed (``d`` is ``dispatch_progressdelta``), and the same as
# ``(status, n)`` rows (``LATERAL`` after the sums).
SUMS = ", ".join(f"sum(d.{s})::bigint AS {s}" for s in STATUSES)
AS_ROWS = "CROSS JOIN LATERAL (VALUES {}) AS u(status, n)".format(
    ", ".join(f"('{s}', {s})" for s in STATUSES)
)

# A task's rows are folded once it has more than this many.
COMPACT_ABOVE = 32


def compact(*, above: int = COMPACT_ABOVE) -> int:
    """Fold the rows of every task that has more than ``above`` into one, and drop the
    rows of tasks that no longer exist (they sum to zero). One statement: the rows it
    deletes and the sum it writes commit together, so a reader sees either; rows appended
    meanwhile are not in its snapshot and stay. Safe to run anywhere at once (a second run
    skips the rows the first deleted). Returns the rows deleted."""
    nonzero = " OR ".join(f"sum(d.{s}) <> 0" for s in STATUSES)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH busy AS (
                SELECT d.task_id FROM dispatch_progressdelta d
                GROUP BY d.task_id
                HAVING count(*) > %s
                    OR NOT EXISTS (SELECT 1 FROM dispatch_task t WHERE t.id = d.task_id)
            ), gone AS (
                DELETE FROM dispatch_progressdelta d
                WHERE d.task_id IN (SELECT task_id FROM busy)
                RETURNING d.*
            ), folded AS (
                INSERT INTO dispatch_progressdelta (task_id, {COLUMNS})
                SELECT d.task_id, {SUMS} FROM gone d
                WHERE EXISTS (SELECT 1 FROM dispatch_task t WHERE t.id = d.task_id)
                GROUP BY d.task_id
                HAVING {nonzero}
            )
            SELECT count(*) FROM gone
            """,
            [above],
        )
        return cursor.fetchone()[0]


def mismatches(task_ids: Iterable[int] | None = None) -> list[tuple[int, str, int, int]]:
    """``(task_id, status, counted, summed)`` wherever the counters differ from a count
    of the subtasks, for the given tasks or all. One statement, so one snapshot: exact
    even while dispatchers write."""
    ids = None if task_ids is None else sorted(set(task_ids))
    where = "" if ids is None else "WHERE task_id = ANY(%(ids)s)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH counted AS (
                SELECT task_id, status, count(*) AS n FROM dispatch_subtask {where}
                GROUP BY task_id, status
            ), summed AS (
                SELECT s.task_id, u.status, u.n
                FROM (SELECT d.task_id, {SUMS} FROM dispatch_progressdelta d {where}
                      GROUP BY d.task_id) s
                {AS_ROWS}
                WHERE u.n <> 0
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
    """Replace the counters of these tasks by a count of their subtasks. Writers of
    subtasks and :func:`compact` wait meanwhile (a ``SHARE`` lock on the subtasks, then
    ``SHARE ROW EXCLUSIVE`` on the counters, until commit), so the count and the rows
    appended after it line up. Returns the rows written (one per task with subtasks)."""
    ids = sorted(set(task_ids))
    if not ids:
        return 0
    counts = ", ".join(f"count(*) FILTER (WHERE status = '{s}')" for s in STATUSES)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE dispatch_subtask IN SHARE MODE")
        cursor.execute("LOCK TABLE dispatch_progressdelta IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute("DELETE FROM dispatch_progressdelta WHERE task_id = ANY(%s)", [ids])
        cursor.execute(
            f"INSERT INTO dispatch_progressdelta (task_id, {COLUMNS}) "
            f"SELECT task_id, {counts} FROM dispatch_subtask "
            "WHERE task_id = ANY(%s) GROUP BY task_id",
            [ids],
        )
        return cursor.rowcount
