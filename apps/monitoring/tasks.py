"""django-q2 entry points of monitoring.

* :func:`monitor_loop` — one bounded monitor loop (``LOOP_SECONDS``, well below the
  cluster's ``timeout``); just before it returns it enqueues its successor.
* :func:`monitor_watchdog` — every minute: starts the loop when no live one holds the
  lease (an extra start returns at once).
"""

from __future__ import annotations

import logging

from django_q.tasks import async_task

from apps.core.stopping import stop_on_signals
from apps.monitoring.loop import MonitorLoop, lease_live

logger = logging.getLogger("edm.monitoring")

LOOP_SECONDS = 240.0
LOOP_FUNC = "apps.monitoring.tasks.monitor_loop"

SCHEDULES = [
    {
        "name": "monitor-watchdog",
        "func": "apps.monitoring.tasks.monitor_watchdog",
        "schedule_type": "I",
        "minutes": 1,
    },
]


def monitor_loop(seconds: float = LOOP_SECONDS) -> str:
    """Run the monitor loop for ``seconds`` if the lease is free, then enqueue the
    successor (not after SIGINT/SIGTERM, nor when the lease was taken over)."""
    loop = MonitorLoop(seconds=seconds)
    if not loop.acquire():
        return "another monitor loop holds the lease"
    signalled: list[int] = []
    try:
        with stop_on_signals(loop.stop, signalled):
            loop.run()
    finally:
        if not loop.lease_lost and not signalled:
            async_task(LOOP_FUNC, seconds, q_options={"task_name": "monitor"})
    return f"{loop.rounds} rounds, {loop.samples} samples, {loop.delivered} notifications"


def monitor_watchdog() -> str:
    if lease_live():
        return "monitor loop live"
    async_task(LOOP_FUNC, LOOP_SECONDS, q_options={"task_name": "monitor"})
    logger.info("watchdog started the monitor loop")
    return "monitor loop started"
