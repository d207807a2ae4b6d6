"""django-q2 entry points of the dispatcher.

* :func:`dispatcher_loop` — one bounded dispatcher loop (``LOOP_SECONDS``, well below the
  cluster's ``timeout`` of 300 s, itself below ``retry``, so q2 never hands a live loop to
  a second worker). Just before it returns it enqueues its successor, so dispatching
  never pauses.
* :func:`dispatch_watchdog` — every minute: starts loops until ``queue.dispatchers`` hold
  a slot (a loop that finds no free slot returns at once, so an extra start is harmless).
* :func:`recover_stuck_tasks` — every minute: stuck-work recovery (a singleton).
* :func:`dlq_maintenance` — every five minutes: automatic reprocessing (when
  ``dlq.auto_reprocess_after`` > 0) and retention of resolved entries.
"""

from __future__ import annotations

import logging

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


def recover_stuck_tasks() -> dict:
    from apps.dispatch.recovery import recover_stuck

    return recover_stuck()


def dlq_maintenance() -> dict:
    from apps.dispatch.dlq import dead_letters_auto_reprocess, dead_letters_cleanup

    return {"reprocessed": dead_letters_auto_reprocess(), "deleted": dead_letters_cleanup()}
