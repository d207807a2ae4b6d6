"""The relay loop: publishing, delivering, projections and retention, in the q2 cluster.

Like the dispatcher and monitor loops, a relay loop is a bounded q2 task
(``tasks.relay_loop``) that enqueues its successor before it returns; a one-minute
watchdog schedule and the start of every q2 worker (``post_spawn``) start missing ones.
``events.relays`` of them run at once, each holding a lease row ``relay-<n>``
(:class:`~apps.events.models.RelayLease`, through :mod:`apps.core.leases`) renewed
every second by single autocommit updates; a loop that dies stops renewing and another
takes the slot after ``LEASE_TTL``.

One tick (at most every ``TICK`` seconds, at once again while there is work):

1. publish: claim unpublished events (``SKIP LOCKED``) and fan them out to the
   subscribed endpoints' delivery queues (:func:`apps.events.relay.events_publish`);
2. deliver: lease endpoints with a due delivery and hand each to a delivery thread
   (``DELIVERY_THREADS``; one endpoint is served by one thread at a time, in event
   order, over a kept connection), so a slow receiver never delays the loop;
3. advance every running projection (a row lock: one loop at a time per projection);
4. hourly: prune published events past ``events.retention``.

A delivery thread that is done with its endpoint (its budget spent, its queue empty or
halted) wakes the loop, which hands endpoints out again at once rather than at the next
tick.

At SIGTERM/SIGINT (``manage.py qcluster`` relays the cluster's stop to its workers) the
loop stops taking work, the delivery threads finish the request they are in (each
bounded by ``events.webhook_timeout``) and write their outcomes, and the leases are
released. A loop that a worker takes after that signal (it was queued ahead of the
worker's STOP) sees the cluster's stop event and ends at once
(:func:`apps.core.stopping.stop_on_signals`), without a successor.
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
from apps.core import leases, outbound
from apps.events import projections, relay
from apps.events.models import RelayLease

logger = logging.getLogger("edm.events")

LEASE_TTL = 30.0
TICK = 0.25
PRUNE_EVERY = 3600.0
DELIVERY_THREADS = 8
# Time one delivery thread stays with one endpoint before the endpoint is offered again.
ENDPOINT_BUDGET = 2.0


def slot_names(count: int) -> list[str]:
    return [f"relay-{n}" for n in range(1, count + 1)]


def lease_acquire(holder: str, *, wanted: int, ttl: float = LEASE_TTL) -> str | None:
    """Take the first free relay slot of ``wanted``; its name, or None."""
    for name in slot_names(wanted):
        if leases.lease_take(RelayLease, name, holder, ttl=ttl):
            return name
    return None


def lease_renew(name: str, holder: str, *, ttl: float = LEASE_TTL) -> bool:
    return leases.lease_renew(RelayLease, name, holder, ttl=ttl)


def lease_release(name: str, holder: str) -> None:
    leases.lease_release(RelayLease, name, holder)


def relays_live() -> int:
    return RelayLease.objects.filter(expires_at__gt=timezone.now()).count()


_local = threading.local()


def _deliver(endpoint_id: int, stop: threading.Event) -> relay.DeliverResult | None:
    """A delivery thread's job: one endpoint for up to ``ENDPOINT_BUDGET`` seconds."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = outbound.Session()
    try:
        return relay.endpoint_deliver(
            endpoint_id=endpoint_id, session=session, budget_seconds=ENDPOINT_BUDGET, stop=stop
        )
    except Exception:
        logger.exception("delivery to webhook endpoint %s failed", endpoint_id)
        connection.close()
        return None
    finally:
        try:
            relay.endpoint_release(endpoint_id)
        except DatabaseError:
            connection.close()


class RelayLoop:
    """``run()`` returns when ``stop`` is set, ``seconds`` have passed, or the lease was
    lost (``lease_lost``)."""

    def __init__(self, *, seconds: float, stop: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.stop = stop or threading.Event()
        self.holder = uuid.uuid4().hex
        self.slot: str | None = None
        self.lease_lost = False
        self.published = 0
        self.delivered = 0
        self.counted = 0
        self._in_flight: dict[int, Future] = {}
        # Set when a delivery thread is done with its endpoint: the loop hands the
        # endpoint (or another) out at once instead of at the next tick.
        self._wake = threading.Event()

    def acquire(self) -> bool:
        wanted = int(config_get("events.relays"))
        self.slot = lease_acquire(self.holder, wanted=wanted) if wanted > 0 else None
        return self.slot is not None

    def run(self) -> RelayLoop:
        deadline = time.monotonic() + self.seconds
        next_renew = 0.0
        next_prune = self._next_prune()
        pool = ThreadPoolExecutor(max_workers=DELIVERY_THREADS, thread_name_prefix="edm-relay")
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                if started >= next_renew:
                    if not self._safely(self._renew):
                        break
                    next_renew = started + 1.0
                busy = bool(self._safely(self._publish, default=False))
                self._wake.clear()  # before collecting: a job ending after it wakes us
                self._safely(lambda: self._hand_out(pool))
                busy |= bool(self._safely(self._project, default=False))
                if started >= next_prune:
                    self._safely(self._prune)
                    next_prune = started + PRUNE_EVERY
                if not busy:
                    self._wake.wait(max(0.01, TICK - (time.monotonic() - started)))
        finally:
            pool.shutdown(wait=True)
            try:
                if self.slot:
                    lease_release(self.slot, self.holder)
            except DatabaseError:
                logger.warning("could not release the relay lease", exc_info=True)
        return self

    def _safely(self, step, default=True):
        try:
            result = step()
        except DatabaseError:
            logger.warning("relay loop: database error", exc_info=True)
            connection.close()
            return default
        return default if result is None else result

    def _renew(self) -> bool:
        if int(config_get("events.relays")) < int(self.slot.rsplit("-", 1)[1]):
            logger.info("relay loop %s: fewer relays configured, stopping", self.slot)
            self.lease_lost = True
            return False
        if not lease_renew(self.slot, self.holder):
            logger.warning("relay loop %s lost its lease", self.slot)
            self.lease_lost = True
            return False
        return True

    def _publish(self) -> bool:
        result = relay.events_publish()
        self.published += result.events
        return result.events >= relay.PUBLISH_BATCH

    def _hand_out(self, pool: ThreadPoolExecutor) -> None:
        for endpoint_id, future in list(self._in_flight.items()):
            if future.done():
                del self._in_flight[endpoint_id]
                outcome = future.result()
                if outcome is not None:
                    self.delivered += outcome.delivered
        free = DELIVERY_THREADS - len(self._in_flight)
        if free <= 0:
            return
        if self.stop.is_set():
            return
        for endpoint_id in relay.endpoints_claim(limit=free):
            future = pool.submit(_deliver, endpoint_id, self.stop)
            future.add_done_callback(lambda _: self._wake.set())
            self._in_flight[endpoint_id] = future

    def _project(self) -> bool:
        busy = False
        for name in projections.PROJECTIONS:
            result = projections.projection_run(name=name)
            self.counted += result.counted
            busy |= result.read >= projections.BATCH
        return busy

    def _next_prune(self) -> float:
        last = (
            RelayLease.objects.filter(last_prune_at__isnull=False)
            .order_by("-last_prune_at")
            .values_list("last_prune_at", flat=True)
            .first()
        )
        if last is None:
            return 0.0
        ago = (timezone.now() - last).total_seconds()
        return time.monotonic() + max(0.0, PRUNE_EVERY - ago)

    def _prune(self) -> None:
        deleted = relay.events_prune()
        RelayLease.objects.filter(name=self.slot, holder=self.holder).update(
            last_prune_at=timezone.now()
        )
        if deleted:
            logger.info("events retention: %s published events deleted", deleted)
