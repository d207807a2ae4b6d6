"""The relay: publishing events to webhook endpoints, delivering them, pruning.

* :func:`events_publish` — one transaction: claim up to ``limit`` unpublished events
  (``FOR UPDATE SKIP LOCKED``, oldest first, so any number of relays share the work and
  none publishes an event twice), insert one delivery per subscribed endpoint with the
  exact body that will be signed, and mark the events published. One statement.
* :func:`endpoints_claim` / :func:`endpoint_deliver` — deliveries go out per endpoint,
  in the order of their events (``occurred_at``, then id), by one relay thread at a
  time (a lease on the endpoint row), over a kept connection (``outbound.Session``).
  A failed attempt stops that endpoint's queue until its retry is due (back-off from
  ``events.webhook_retry_delays``); after the last one the delivery is ``dead`` and the
  next event goes. Outcomes are written in a few statements per batch, never one per
  delivery. After ``events.webhook_disable_after`` consecutive failures the endpoint is
  disabled (event ``webhook.disabled``; the ``webhook_auto_disabled`` alert metric).
* :func:`events_prune` — published events older than ``events.retention`` that every
  projection has consumed (a paused one holds them back) are deleted, with the
  projections' processed-event rows of what is gone.

HTTP goes through :mod:`apps.core.outbound`: the address is resolved and checked at
delivery time, no redirects, https only in production.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import connection, transaction
from django.utils import timezone

from apps.config.selectors import config_get
from apps.core import outbound
from apps.events.models import Event, WebhookDelivery, WebhookEndpoint
from apps.events.services import event_append
from apps.events.webhooks import signature_headers, signers, signing_secrets

logger = logging.getLogger("edm.events")

PUBLISH_BATCH = 1000
DELIVERY_BATCH = 200
ENDPOINT_LEASE = 120.0
# The reason an endpoint disabled by the relay carries (the alert metric looks for it).
AUTO_DISABLED_MARK = "consecutive failed attempts"

_PUBLISH_SQL = """
WITH claimed AS (
    SELECT id, uid, type, owner_id, actor_id, subject_type, subject_id, payload, occurred_at
    FROM events_event
    WHERE published_at IS NULL
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), fanned AS (
    INSERT INTO events_webhookdelivery
        (endpoint_id, event_id, event_uid, event_type, occurred_at, body)
    SELECT ep.id, c.id, c.uid, c.type, c.occurred_at,
           jsonb_build_object(
               'type', c.type,
               'timestamp', to_char(c.occurred_at AT TIME ZONE 'UTC',
                                    'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', c.payload,
               'id', c.uid,
               'owner_id', c.owner_id,
               'actor_id', c.actor_id,
               'subject', jsonb_build_object('type', c.subject_type, 'id', c.subject_id)
           )::text
    FROM claimed c
    JOIN events_webhookendpoint ep
      ON ep.is_enabled
     AND (ep.owner_id = c.owner_id OR (c.owner_id IS NULL AND ep.include_system))
     AND (c.type = ANY(ep.event_types) OR '*' = ANY(ep.event_types)
          OR split_part(c.type, '.', 1) || '.*' = ANY(ep.event_types))
    RETURNING 1
), published AS (
    UPDATE events_event e SET published_at = now()
    FROM claimed c WHERE e.id = c.id
    RETURNING c.occurred_at
)
SELECT (SELECT count(*) FROM published), (SELECT count(*) FROM fanned),
       (SELECT extract(epoch FROM now() - min(occurred_at)) FROM published)
"""


@dataclass
class PublishResult:
    events: int = 0
    deliveries: int = 0
    oldest_lag: float | None = None


def events_publish(*, limit: int = PUBLISH_BATCH) -> PublishResult:
    """Publish up to ``limit`` events (see the module docstring)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_PUBLISH_SQL, {"limit": limit})
        events, deliveries, lag = cursor.fetchone()
    return PublishResult(int(events), int(deliveries), float(lag) if lag is not None else None)


def publish_lag_seconds() -> float:
    """Seconds since the oldest unpublished event occurred (0 when none waits)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM now() - occurred_at) FROM events_event "
            "WHERE published_at IS NULL ORDER BY id LIMIT 1"
        )
        row = cursor.fetchone()
    return max(0.0, float(row[0])) if row else 0.0


# --- delivering ---------------------------------------------------------------------------

_CLAIM_SQL = """
UPDATE events_webhookendpoint ep
SET lease_expires_at = now() + make_interval(secs => %(lease)s)
WHERE ep.id IN (
    SELECT e.id FROM events_webhookendpoint e
    WHERE e.is_enabled
      AND (e.lease_expires_at IS NULL OR e.lease_expires_at < now())
      AND (SELECT d.next_attempt_at FROM events_webhookdelivery d
           WHERE d.endpoint_id = e.id AND d.status = 'pending'
           ORDER BY d.occurred_at, d.event_id, d.id LIMIT 1) <= now()
    ORDER BY e.last_success_at NULLS FIRST
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING ep.id
"""


def endpoints_claim(*, limit: int, lease: float = ENDPOINT_LEASE) -> list[int]:
    """Lease up to ``limit`` enabled endpoints whose oldest pending delivery is due."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, {"limit": limit, "lease": lease})
        return [row[0] for row in cursor.fetchall()]


def endpoint_release(endpoint_id: int) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(lease_expires_at=None)


class _Queued(NamedTuple):
    """A pending delivery as the queue reads it (a tuple: no model built per row)."""

    pk: int
    event_uid: object
    body: str
    attempts: int
    next_attempt_at: datetime


@dataclass
class _Outcome:
    delivery: _Queued
    ok: bool
    status: int | None
    duration_ms: float
    error: str = ""
    at: datetime = field(default_factory=timezone.now)


@dataclass
class DeliverResult:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    disabled: bool = False


def _retry_delays() -> list[float]:
    return [float(d) for d in config_get("events.webhook_retry_delays")]


def endpoint_deliver(
    *,
    endpoint_id: int,
    session: outbound.Session | None = None,
    budget_seconds: float = 5.0,
    batch: int = DELIVERY_BATCH,
    stop: threading.Event | None = None,
) -> DeliverResult:
    """Deliver an endpoint's due deliveries in order for up to ``budget_seconds`` (or
    until ``stop`` is set: the request in progress finishes and is recorded); the caller
    holds its lease (:func:`endpoints_claim`) and releases it after."""
    own_session = session is None
    session = session or outbound.Session()
    result = DeliverResult()
    deadline = time.monotonic() + budget_seconds
    timeout = float(config_get("events.webhook_timeout"))
    stop = stop or threading.Event()
    try:
        while time.monotonic() < deadline and not stop.is_set():
            endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, is_enabled=True).first()
            if endpoint is None:
                break
            queue = [
                _Queued(*row)
                for row in WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status="pending")
                .order_by("occurred_at", "event_id", "id")
                .values_list("id", "event_uid", "body", "attempts", "next_attempt_at")[:batch]
            ]
            if not queue:
                break
            now = timezone.now()
            keys = signers(signing_secrets(endpoint, now))
            outcomes: list[_Outcome] = []
            for delivery in queue:
                # Due at the batch's start (nearly always), else checked against the clock.
                due = delivery.next_attempt_at <= now or delivery.next_attempt_at <= timezone.now()
                if not due or time.monotonic() >= deadline or stop.is_set():
                    break
                outcome = _attempt(session, endpoint.url, keys, delivery, timeout)
                outcomes.append(outcome)
                if not outcome.ok:
                    break
            if not outcomes:
                break
            halted = _record(endpoint, outcomes, result)
            if halted:
                break
    finally:
        if own_session:
            session.close()
    return result


def _attempt(session, url: str, keys: list, delivery, timeout: float) -> _Outcome:
    body = delivery.body
    headers = signature_headers(signed_by=keys, msg_id=str(delivery.event_uid), body=body)
    started = time.perf_counter()
    try:
        response = session.post(url, body.encode(), headers=headers, timeout=timeout)
    except outbound.OutboundError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return _Outcome(delivery, False, exc.status, elapsed, exc.message[:500])
    return _Outcome(delivery, True, response.status, (time.perf_counter() - started) * 1000)


def _record(endpoint: WebhookEndpoint, outcomes: list[_Outcome], result: DeliverResult) -> bool:
    """Write a batch's outcomes; True when the endpoint's queue stops here (a failed
    delivery waits for its retry, or the endpoint was disabled)."""
    delivered = [o for o in outcomes if o.ok]
    failure = next((o for o in outcomes if not o.ok), None)
    delays = _retry_delays()
    with transaction.atomic(), connection.cursor() as cursor:
        if delivered:
            cursor.execute(
                """
                UPDATE events_webhookdelivery d
                SET status = 'delivered', attempts = d.attempts + 1, delivered_at = o.at,
                    last_status_code = o.code, last_error = ''
                FROM unnest(%s::bigint[], %s::timestamptz[], %s::int[]) AS o(id, at, code)
                WHERE d.id = o.id
                """,
                [
                    [o.delivery.pk for o in delivered],
                    [o.at for o in delivered],
                    [o.status for o in delivered],
                ],
            )
            result.delivered += len(delivered)
        if failure is not None:
            attempts = failure.delivery.attempts + 1
            dead = attempts > len(delays)
            WebhookDelivery.objects.filter(pk=failure.delivery.pk).update(
                attempts=attempts,
                status="dead" if dead else "pending",
                next_attempt_at=failure.at + timedelta(seconds=0 if dead else delays[attempts - 1]),
                last_status_code=failure.status,
                last_error=failure.error,
            )
            result.failed += 1
            result.dead += int(dead)
        cursor.execute(
            """
            INSERT INTO events_webhookattempt
                (delivery_id, endpoint_id, attempted_at, ok, status_code, duration_ms, error)
            SELECT o.id, %s, o.at, o.ok, o.code, o.ms, o.error
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::boolean[], %s::int[],
                        %s::float8[], %s::text[]) AS o(id, at, ok, code, ms, error)
            """,
            [
                endpoint.pk,
                [o.delivery.pk for o in outcomes],
                [o.at for o in outcomes],
                [o.ok for o in outcomes],
                [o.status for o in outcomes],
                [o.duration_ms for o in outcomes],
                [o.error for o in outcomes],
            ],
        )
        if failure is None:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
                consecutive_failures=0, last_success_at=delivered[-1].at
            )
            return False
        result.disabled = _count_failure(endpoint, failure, bool(delivered))
    return result.disabled or not dead


def _count_failure(endpoint: WebhookEndpoint, failure: _Outcome, reset_first: bool) -> bool:
    """Count a failed attempt; disable the endpoint at the limit. True when disabled."""
    limit = int(config_get("events.webhook_disable_after"))
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    failures = 1 if reset_first else locked.consecutive_failures + 1
    fields = {"consecutive_failures": failures, "last_failure_at": failure.at}
    disable = failures >= limit and locked.is_enabled
    if disable:
        fields["is_enabled"] = False
        fields["disabled_reason"] = (
            f"{failures} {AUTO_DISABLED_MARK} (last: {failure.error or failure.status})"
        )[:300]
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(**fields)
    if disable:
        event_append(
            "webhook.disabled",
            owner=locked.owner_id,
            actor=None,
            subject=locked,
            payload={"url": locked.url, "failures": failures, "last_error": failure.error},
        )
        logger.warning(
            "webhook endpoint %s disabled after %s consecutive failed attempts",
            endpoint.pk,
            failures,
        )
    return disable


# --- retention ----------------------------------------------------------------------------


def events_prune(*, now: datetime | None = None, batch: int = 10000) -> int:
    """Delete published events older than ``events.retention`` (in batches), and the
    projections' processed-event rows of events no longer retained. Returns how many
    events were deleted."""
    from apps.events.models import ProcessedEvent

    retention = float(config_get("events.retention"))
    cutoff = (now or timezone.now()) - timedelta(seconds=retention)
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                """
                DELETE FROM events_event WHERE id IN (
                    SELECT e.id FROM events_event e
                    WHERE e.occurred_at < %s AND e.published_at IS NOT NULL
                      AND NOT EXISTS (
                          SELECT 1 FROM events_projection p
                          WHERE (e.txid, e.id) > (p.position_txid, p.position_id))
                    ORDER BY e.id LIMIT %s)
                """,
                [cutoff, batch],
            )
            count = cursor.rowcount
        deleted += count
        if count < batch:
            break
    oldest = Event.objects.order_by("id").values_list("id", flat=True).first()
    stale = ProcessedEvent.objects.all()
    if oldest is not None:
        stale = stale.filter(event_id__lt=oldest)
    stale.delete()
    return deleted
