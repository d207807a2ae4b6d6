"""The monitor loop: alert evaluation, sampling, retention and notification delivery.

django-q2's schedules tick about every 30 s, too coarse for "notified within 30 s of
the condition", so the loop runs on its own clock inside the q2 cluster, like the
dispatcher loops (``tasks.monitor_loop``: a bounded run that enqueues its successor; a
one-minute watchdog schedule restarts a missing one). Exactly one runs in the cluster:
it holds the lease row :class:`~apps.monitoring.models.MonitorLease` ``"monitor"``,
renewed every second by single autocommit updates (no session lock, so a pooler in
transaction mode works); a loop that dies stops renewing and the next one takes over
after ``LEASE_TTL``.

Every second it renews the lease (recording the newest dispatcher heartbeat it sees)
and hands due notifications to a small pool of delivery threads; every
``alerts.evaluation_interval`` it evaluates the rules (``evaluation.rules_evaluate``);
every ``monitoring.sample_interval`` it takes a sample; every hour it prunes. A
delivery (network, timeouts) never runs on the loop's own thread, so a slow channel
cannot delay a round.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import DatabaseError, connection
from django.utils import timezone

from apps.config.selectors import config_get
from apps.core import leases
from apps.dispatch.selectors import dispatcher_slots
from apps.monitoring.evaluation import rules_evaluate
from apps.monitoring.models import MonitorLease
from apps.monitoring.notify import notification_deliver, notifications_claim
from apps.monitoring.sampling import metrics_prune, samples_take

logger = logging.getLogger("edm.monitoring")

LEASE_NAME = "monitor"
LEASE_TTL = 30.0
TICK = 1.0
PRUNE_EVERY = 3600.0
DELIVERY_THREADS = 4


def lease_acquire(holder: str, *, ttl: float = LEASE_TTL) -> bool:
    """Take the monitor lease if it is free (or already ours)."""
    return leases.lease_take(
        MonitorLease, LEASE_NAME, holder, ttl=ttl, defaults={"last_round_ms": 0}
    )


def lease_renew(holder: str, *, ttl: float = LEASE_TTL, **fields) -> bool:
    """Renew our lease (and store ``fields``); False when it is no longer ours."""
    return leases.lease_renew(MonitorLease, LEASE_NAME, holder, ttl=ttl, **fields)


def lease_release(holder: str) -> None:
    leases.lease_release(MonitorLease, LEASE_NAME, holder)


def lease_live() -> bool:
    return MonitorLease.objects.filter(name=LEASE_NAME, expires_at__gt=timezone.now()).exists()


def _deliver(notification_id: int) -> None:
    try:
        notification_deliver(notification_id=notification_id)
    except Exception:
        logger.exception("delivery of notification %s failed", notification_id)
    finally:
        connection.close()


class MonitorLoop:
    """``run()`` returns when ``stop`` is set, ``seconds`` have passed, or the lease
    was lost (``lease_lost``)."""

    def __init__(self, *, seconds: float, stop: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.stop = stop or threading.Event()
        self.holder = uuid.uuid4().hex
        self.lease_lost = False
        self.rounds = 0
        self.samples = 0
        self.delivered = 0
        self._in_flight: set[Future] = set()

    def acquire(self) -> bool:
        return lease_acquire(self.holder)

    def run(self) -> MonitorLoop:
        deadline = time.monotonic() + self.seconds
        lease = MonitorLease.objects.get(name=LEASE_NAME)
        next_round = 0.0
        next_sample = self._next_sample_in(lease.last_sample_at)
        next_prune = (
            0.0 if lease.last_prune_at is None else self._after(lease.last_prune_at, PRUNE_EVERY)
        )
        pool = ThreadPoolExecutor(max_workers=DELIVERY_THREADS, thread_name_prefix="edm-notify")
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                if not self._safely(self._heartbeat):
                    break
                if started >= next_round:
                    self._safely(self._round)
                    next_round = started + float(config_get("alerts.evaluation_interval"))
                if started >= next_sample:
                    self._safely(self._sample)
                    next_sample = started + float(config_get("monitoring.sample_interval"))
                if started >= next_prune:
                    self._safely(self._prune)
                    next_prune = started + PRUNE_EVERY
                self._safely(lambda: self._hand_out(pool))
                wake = min(next_round, next_sample, started + TICK, deadline)
                self.stop.wait(max(0.01, wake - time.monotonic()))
        finally:
            pool.shutdown(wait=True)
            try:
                lease_release(self.holder)
            except DatabaseError:
                logger.warning("could not release the monitor lease", exc_info=True)
        return self

    @staticmethod
    def _after(moment, seconds: float) -> float:
        ago = (timezone.now() - moment).total_seconds()
        return time.monotonic() + max(0.0, seconds - ago)

    def _next_sample_in(self, last) -> float:
        if last is None:
            return 0.0
        return self._after(last, float(config_get("monitoring.sample_interval")))

    def _safely(self, step) -> bool:
        """Run one step; a database error is logged and the connection reset."""
        try:
            result = step()
        except DatabaseError:
            logger.warning("monitor loop: database error", exc_info=True)
            connection.close()
            return True
        return result is not False

    def _heartbeat(self) -> bool:
        beats = [slot["heartbeat_at"] for slot in dispatcher_slots()]
        fields = {}
        if beats:
            lease = MonitorLease.objects.only("last_dispatcher_heartbeat_at").get(name=LEASE_NAME)
            newest = max(beats)
            if (
                lease.last_dispatcher_heartbeat_at is None
                or newest > lease.last_dispatcher_heartbeat_at
            ):
                fields["last_dispatcher_heartbeat_at"] = newest
        if not lease_renew(self.holder, **fields):
            logger.warning("monitor loop lost its lease")
            self.lease_lost = True
            return False
        return True

    def _round(self) -> None:
        if not config_get("alerts.enabled"):
            return
        started = time.perf_counter()
        rules_evaluate()
        self.rounds += 1
        MonitorLease.objects.filter(name=LEASE_NAME, holder=self.holder).update(
            last_round_at=timezone.now(), last_round_ms=(time.perf_counter() - started) * 1000
        )

    def _sample(self) -> None:
        sample = samples_take()
        self.samples += 1
        MonitorLease.objects.filter(name=LEASE_NAME, holder=self.holder).update(
            last_sample_at=sample.taken_at
        )

    def _prune(self) -> None:
        deleted = metrics_prune()
        MonitorLease.objects.filter(name=LEASE_NAME, holder=self.holder).update(
            last_prune_at=timezone.now()
        )
        if any(deleted.values()):
            logger.info("monitoring retention: %s", deleted)

    def _hand_out(self, pool: ThreadPoolExecutor) -> None:
        self._in_flight = {f for f in self._in_flight if not f.done()}
        free = DELIVERY_THREADS - len(self._in_flight)
        if free <= 0:
            return
        for notification_id in notifications_claim(limit=free):
            self._in_flight.add(pool.submit(_deliver, notification_id))
            self.delivered += 1
