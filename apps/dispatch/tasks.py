"""django-q2 entry points of the dispatcher.

* :func:`dispatcher_loop` — one bounded dispatcher loop (``LOOP_SECONDS``, well below the
  cluster's ``timeout`` of 300 s, itself below ``retry``, so q2 never hands a live loop to
  a second worker). Just before it returns it enqueues its successor, so dispatching
  never pauses.
* :func:`dispatch_watchdog` — every minute: starts loops until ``queue.dispatchers`` hold
  a slot (a loop that finds no free slot returns at once, so an extra start is harmless).
* :func:`dispatcher_loops_ensure` — the same at once, without waiting for the watchdog:
  when a worker of a q2 cluster starts (``post_spawn``, so a fresh cluster sends within
  seconds) and when a task is queued, resumed or reopened while no loop is live.
* :func:`recover_stuck_tasks` — every minute: stuck-work recovery (a singleton).
* :func:`dlq_maintenance` — every five minutes: automatic reprocessing (when
  ``dlq.auto_reprocess_after`` > 0) and retention of resolved entries.
"""

from __future__ import annotations

import logging

from django.db import connection, transaction
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from apps.core.stopping import stop_on_signals
from apps.dispatch.engine import slots
from apps.dispatch.engine.loop import Dispatcher

logger = logging.getLogger("edm.dispatch")

LOOP_SECONDS = 240.0
LOOP_FUNC = "apps.dispatch.tasks.dispatcher_loop"

SCHEDULES = [
    {
        "name": "dispatch-watchdog",
        "func": "apps.dispatch.tasks.dispatch_watchdog",
        "schedule_type": "I",
        "minutes": 1,
    },
    {
        "name": "dispatch-recover-stuck",
        "func": "apps.dispatch.tasks.recover_stuck_tasks",
        "schedule_type": "I",
        "minutes": 1,
    },
    {
        "name": "dispatch-dlq-maintenance",
        "func": "apps.dispatch.tasks.dlq_maintenance",
        "schedule_type": "I",
        "minutes": 5,
    },
]


def dispatcher_loop(seconds: float = LOOP_SECONDS) -> str:
    """Run one loop for ``seconds`` if a slot is free, then enqueue the successor.

    A q2 cluster that is told to stop waits for its workers' tasks to end, and a loop
    runs for minutes; so the loop itself stops at SIGINT or SIGTERM (Ctrl-C reaches the
    whole process group; systemd signals the whole cgroup): the messages on the wire
    finish and are recorded, claimed ones go back to the queue, and no successor is
    enqueued. The worker's own handlers are restored afterwards."""
    dispatcher = Dispatcher(seconds=seconds)
    if not dispatcher.acquire_slot():
        return "no free dispatcher slot"
    number = dispatcher.slot[0]
    signalled: list[int] = []
    try:
        with stop_on_signals(dispatcher.stop, signalled):
            stats = dispatcher.run()
    finally:
        # The slot is released by run(); the successor takes the first free one. A loop
        # whose slot was taken away (queue.dispatchers lowered) has no successor.
        if not dispatcher.slot_lost and not signalled:
            async_task(LOOP_FUNC, seconds, q_options={"task_name": f"dispatcher-{number}"})
    if signalled:
        logger.info("dispatcher loop in slot %s stopped by signal %s", number, signalled[0])
    return f"slot {number}: {stats.ticks} ticks, {stats.claimed} claimed, {stats.sent} sent"


def dispatch_watchdog() -> str:
    """Start missing dispatcher loops."""
    from apps.config.selectors import config_get

    wanted = int(config_get("queue.dispatchers"))
    live = slots.slots_live()
    missing = max(0, wanted - live)
    for _ in range(missing):
        async_task(LOOP_FUNC, LOOP_SECONDS)
    if missing:
        logger.info(
            "watchdog started %s dispatcher loop(s) (%s live, %s wanted)", missing, live, wanted
        )
    return f"{live} live, {wanted} wanted, {missing} started"


# One caller at a time decides how many loops are missing (a transaction-scoped lock).
_ENSURE_LOCK = 0x45444D_0001  # "EDM", 1


def _loops_enqueued() -> int:
    """Dispatcher loops in the q2 broker: waiting for a worker, or running (a running
    task's row stays, locked, until it is acknowledged)."""
    rows = OrmQ.objects.filter(key=Conf.CLUSTER_NAME).values_list("payload", flat=True)
    count = 0
    for payload in rows[:1000]:
        task = OrmQ(payload=payload).task
        if isinstance(task, dict) and task.get("func") == LOOP_FUNC:
            count += 1
    return count


def dispatcher_loops_ensure(*, reason: str = "") -> int:
    """Enqueue the dispatcher loops that are neither live (holding a slot) nor already
    enqueued, up to ``queue.dispatchers``; return how many were enqueued.

    Cheap when nothing is missing (two short queries), so it may run on every queued
    task. Concurrent callers (every worker of a starting cluster) serialize on a
    transaction-scoped advisory lock; a caller that finds it held returns at once, the
    holder does the work. With q2's inline ``sync`` mode (never used to run EDM) it does
    nothing: a loop would run inside the caller.
    """
    from apps.config.selectors import config_get

    if Conf.SYNC:
        return 0
    wanted = int(config_get("queue.dispatchers"))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_ENSURE_LOCK])
        if not cursor.fetchone()[0]:
            return 0
        live = slots.slots_live()
        missing = max(0, wanted - max(live, _loops_enqueued()))
        for _ in range(missing):
            async_task(LOOP_FUNC, LOOP_SECONDS)
    if missing:
        logger.info(
            "started %s dispatcher loop(s) at once (%s; %s live, %s wanted)",
            missing,
            reason or "requested",
            live,
            wanted,
        )
    return missing


def on_worker_spawn(sender=None, proc_name: str = "", **kwargs) -> None:
    """django-q2's ``post_spawn`` (a worker process started): a new cluster starts its
    dispatcher loops now rather than at the watchdog's first tick (q2 schedules run up
    to a minute late). Never lets an error stop the worker from starting."""
    try:
        dispatcher_loops_ensure(reason=f"worker {proc_name} started")
    except Exception:
        logger.warning("could not start dispatcher loops at worker start", exc_info=True)
    finally:
        connection.close()


def recover_stuck_tasks() -> dict:
    from apps.dispatch.recovery import recover_stuck

    return recover_stuck()


def dlq_maintenance() -> dict:
    from apps.dispatch.dlq import dead_letters_auto_reprocess, dead_letters_cleanup

    return {"reprocessed": dead_letters_auto_reprocess(), "deleted": dead_letters_cleanup()}
