"""django-q2 entry points of the events relay.

* :func:`relay_loop` — one bounded relay loop (``LOOP_SECONDS``, well below the
  cluster's ``timeout``); just before it returns it enqueues its successor (not after
  SIGINT/SIGTERM, nor when its slot was taken or is no longer configured).
* :func:`relay_watchdog` — every minute: starts loops until ``events.relays`` run.
* :func:`relay_loops_ensure` — the same at once: when a q2 worker starts
  (``post_spawn``), so a fresh cluster relays within seconds.
"""

from __future__ import annotations

import logging

from django.db import connection, transaction
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from apps.core.stopping import stop_on_signals
from apps.events.loop import RelayLoop, relays_live

logger = logging.getLogger("edm.events")

LOOP_SECONDS = 240.0
LOOP_FUNC = "apps.events.tasks.relay_loop"

SCHEDULES = [
    {
        "name": "events-relay-watchdog",
        "func": "apps.events.tasks.relay_watchdog",
        "schedule_type": "I",
        "minutes": 1,
    },
]

# One caller at a time decides how many loops are missing (a transaction-scoped lock).
_ENSURE_LOCK = 0x45444D_0012  # "EDM", events


def relay_loop(seconds: float = LOOP_SECONDS) -> str:
    """Run one relay loop for ``seconds`` if a slot is free, then enqueue the successor."""
    loop = RelayLoop(seconds=seconds)
    if not loop.acquire():
        return "no free relay slot"
    signalled: list[int] = []
    try:
        with stop_on_signals(loop.stop, signalled):
            loop.run()
    finally:
        if not loop.lease_lost and not signalled:
            async_task(LOOP_FUNC, seconds, q_options={"task_name": loop.slot})
    return (
        f"{loop.slot}: {loop.published} published, {loop.delivered} delivered, "
        f"{loop.counted} counted"
    )


def _loops_enqueued() -> int:
    rows = OrmQ.objects.filter(key=Conf.CLUSTER_NAME).values_list("payload", flat=True)
    count = 0
    for payload in rows[:1000]:
        task = OrmQ(payload=payload).task
        if isinstance(task, dict) and task.get("func") == LOOP_FUNC:
            count += 1
    return count


def relay_loops_ensure(*, reason: str = "") -> int:
    """Enqueue the relay loops that are neither live nor already enqueued, up to
    ``events.relays``; returns how many. Nothing with q2's inline ``sync`` mode."""
    from apps.config.selectors import config_get

    if Conf.SYNC:
        return 0
    wanted = int(config_get("events.relays"))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_ENSURE_LOCK])
        if not cursor.fetchone()[0]:
            return 0
        live = relays_live()
        missing = max(0, wanted - max(live, _loops_enqueued()))
        for _ in range(missing):
            async_task(LOOP_FUNC, LOOP_SECONDS)
    if missing:
        logger.info("started %s relay loop(s) (%s)", missing, reason or "requested")
    return missing


def relay_watchdog() -> str:
    return f"{relay_loops_ensure(reason='watchdog')} relay loop(s) started"


def on_worker_spawn(sender=None, proc_name: str = "", **kwargs) -> None:
    """django-q2's ``post_spawn``: a starting cluster starts its relay loops now."""
    try:
        relay_loops_ensure(reason=f"worker {proc_name} started")
    except Exception:
        logger.warning("could not start relay loops at worker start", exc_info=True)
    finally:
        connection.close()
