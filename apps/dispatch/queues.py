"""Keeping the dispatcher's queue rows (``TaskQueue``, ``OwnerQueue``) in step with subtasks.

The rule that keeps wake-ups from being lost: **whoever makes subtasks pending updates the
lanes afterwards, in the same transaction** (:func:`lanes_refresh`). A dispatcher only
recomputes a lane while it holds that lane's row lock, so a writer that is waiting for the
lock re-applies its own rows once the dispatcher commits. Locks are always taken in the
order task row → subtask rows → ``TaskQueue`` → ``OwnerQueue``; the dispatcher never waits
for a lock (``SKIP LOCKED`` everywhere), so these paths cannot deadlock with it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import connection, transaction

logger = logging.getLogger("edm.dispatch")

NOTIFY_CHANNEL = "edm_dispatch"


def lane_open(*, task_id: int, owner_id: int, pool_id: int, priority: int) -> None:
    """Create (or reset) the task's lane and refresh it and its owner's lane.

    ``served_at`` (the recovery's "last progress" mark) starts anew.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO dispatch_taskqueue (task_id, owner_id, pool_id, priority, served,
                                            served_at)
            VALUES (%s, %s, %s, %s, 0, now())
            ON CONFLICT (task_id) DO UPDATE SET priority = EXCLUDED.priority,
                served_at = now()
            """,
            [task_id, owner_id, pool_id, priority],
        )
    lanes_refresh(task_ids=[task_id])


def lane_close(*, task_id: int) -> None:
    """Remove the task's lane (paused, cancelled, finished) and refresh its owner's lane."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM dispatch_taskqueue WHERE task_id = %s RETURNING pool_id, owner_id",
            [task_id],
        )
        owners_refresh(lanes=cursor.fetchall())


def lanes_refresh(*, task_ids: Iterable[int]) -> None:
    """Recompute ``ready_at`` of these tasks' lanes and of their owners' lanes.

    ``ready_at`` becomes the earliest ``next_attempt_at`` of the task's pending subtasks
    (``NULL`` when none). Runs in the caller's transaction.
    """
    task_ids = sorted(set(task_ids))
    if not task_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE dispatch_taskqueue q SET ready_at = (
                SELECT min(s.next_attempt_at) FROM dispatch_subtask s
                WHERE s.task_id = q.task_id AND s.status = 'pending'
            )
            WHERE q.task_id = ANY(%s)
            RETURNING q.pool_id, q.owner_id
            """,
            [task_ids],
        )
        owners_refresh(lanes=cursor.fetchall())


def owners_refresh(*, lanes: Iterable[tuple[int, int]]) -> None:
    """Recompute ``ready_at`` of (pool, owner) lanes from their tasks' lanes; creates a
    missing lane (with ``served = 0``, so a newcomer is served in the next round)."""
    lanes = sorted(set(lanes))
    if not lanes:
        return
    pools = [pool for pool, _ in lanes]
    owners = [owner for _, owner in lanes]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO dispatch_ownerqueue (pool_id, owner_id, served, ready_at)
            SELECT l.pool_id, l.owner_id, 0, (
                SELECT min(q.ready_at) FROM dispatch_taskqueue q
                WHERE q.pool_id = l.pool_id AND q.owner_id = l.owner_id
            )
            FROM unnest(%s::bigint[], %s::int[]) AS l(pool_id, owner_id)
            ON CONFLICT (pool_id, owner_id) DO UPDATE SET ready_at = EXCLUDED.ready_at
            """,
            [pools, owners],
        )


def notify_new_work(*, task_id: int) -> None:
    """Wake the dispatchers once this transaction commits, and start dispatcher loops
    then if too few are live (``tasks.dispatcher_loops_ensure``): new work never waits
    for the watchdog's next tick.

    ``NOTIFY`` is transactional and PostgreSQL folds identical notifications of one
    transaction into one, so a task queued, resumed or reprocessed sends exactly one
    wake-up however many rows it touched; dispatchers drain every pending notification at
    once (a debounce on the receiving side).
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [NOTIFY_CHANNEL, str(task_id)])
    transaction.on_commit(_loops_ensure_after_commit)


def _loops_ensure_after_commit() -> None:
    from apps.dispatch.tasks import dispatcher_loops_ensure

    try:
        dispatcher_loops_ensure(reason="new work")
    except Exception:
        logger.warning("could not start dispatcher loops for new work", exc_info=True)
