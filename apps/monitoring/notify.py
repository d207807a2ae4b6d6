"""Notifications: queued in the transaction that changes an alert, delivered apart.

:func:`notifications_queue` writes one :class:`Notification` per enabled channel of the
alert's rule, in the caller's transaction (the alert change and its notifications commit
together or not at all). The monitor loop's delivery threads then call
:func:`notifications_claim` (``FOR UPDATE SKIP LOCKED``: two loops, or a loop and an
admin's "send test", never deliver the same one twice at once) and
:func:`notification_deliver`, which runs the channel's transport holding no transaction,
records the attempt, and schedules a retry with back-off (``RETRY_DELAYS``) on a
transient error — until ``alerts.delivery_attempts``. Evaluation never waits for a
delivery.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.config.selectors import config_get
from apps.monitoring.models import (
    Alert,
    Notification,
    NotificationAttempt,
    NotificationChannel,
)
from apps.monitoring.transports import TRANSPORTS, TransportError

logger = logging.getLogger("edm.monitoring")

# Seconds before the 1st, 2nd, … retry (the last one repeats), like Alertmanager's
# growing retry interval; a transport's ``retry_after`` can ask for later.
RETRY_DELAYS = (5, 15, 60, 300, 900, 1800)
# A delivery that holds a notification longer than this has died: it is due again.
DELIVERY_LEASE = 120


def alert_payload(alert: Alert) -> dict:
    """What every channel is told about an alert (JSON-ready)."""
    rule = alert.rule
    return {
        "alert": {
            "id": alert.pk,
            "rule": alert.rule_name,
            "rule_id": alert.rule_id,
            "metric": alert.metric,
            "condition": rule.condition if rule is not None else alert.metric,
            "subject": alert.subject,
            "subject_label": alert.subject_label or alert.subject,
            "level": alert.level,
            "status": alert.status,
            "value": alert.value,
            "threshold": alert.threshold,
            "message": alert.message,
            "fired_at": alert.fired_at.isoformat(),
            "escalated_at": alert.escalated_at.isoformat() if alert.escalated_at else None,
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        }
    }


def notifications_queue(*, alert: Alert, event: str, channels=None, now=None) -> int:
    """Queue ``event`` of ``alert`` to its rule's enabled channels (or ``channels``),
    in the caller's transaction, and note ``now`` as the alert's last notification.
    Returns how many were queued."""
    if channels is None:
        channels = alert.rule.channels.all() if alert.rule is not None else []
    payload = alert_payload(alert)
    rows = [
        Notification(channel=channel, alert=alert, event=event, payload=payload)
        for channel in channels
        if channel.is_enabled
    ]
    Notification.objects.bulk_create(rows)
    if rows:
        alert.last_notified_at = now or timezone.now()
        Alert.objects.filter(pk=alert.pk).update(last_notified_at=alert.last_notified_at)
    return len(rows)


def notification_queue_test(*, channel: NotificationChannel) -> Notification:
    return Notification.objects.create(
        channel=channel, event=Notification.Event.TEST, payload={"channel": channel.name}
    )


def notifications_claim(*, limit: int = 10, ids: list[int] | None = None) -> list[int]:
    """Take up to ``limit`` due notifications (or exactly ``ids``, if due) for delivery:
    ``sending`` with a lease, committed. Returns their ids."""
    now = timezone.now()
    with transaction.atomic():
        due = Notification.objects.filter(
            status__in=[Notification.Status.PENDING, Notification.Status.SENDING],
            next_attempt_at__lte=now,
        )
        if ids is not None:
            due = due.filter(pk__in=ids)
        taken = list(
            due.order_by("next_attempt_at")
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        Notification.objects.filter(pk__in=taken).update(
            status=Notification.Status.SENDING,
            next_attempt_at=now + timedelta(seconds=DELIVERY_LEASE),
            lease_expires_at=now + timedelta(seconds=DELIVERY_LEASE),
        )
    return taken


def notification_deliver(*, notification_id: int) -> bool:
    """Deliver one claimed notification through its channel's transport (no transaction
    is held meanwhile) and record the attempt. Returns True when it was delivered."""
    notification = Notification.objects.select_related("channel").get(pk=notification_id)
    channel = notification.channel
    started = time.perf_counter()
    error: TransportError | None = None
    try:
        TRANSPORTS[channel.kind](channel).notify(notification)
    except TransportError as exc:
        error = exc
    except Exception as exc:
        logger.exception("notification %s: transport %s failed", notification_id, channel.kind)
        error = TransportError(f"{type(exc).__name__}: {exc}")
    duration = (time.perf_counter() - started) * 1000
    _record(notification, channel, error, duration)
    return error is None


def _record(
    notification: Notification,
    channel: NotificationChannel,
    error: TransportError | None,
    duration_ms: float,
) -> None:
    now = timezone.now()
    attempts = notification.attempts + 1
    with transaction.atomic():
        NotificationAttempt.objects.create(
            notification=notification,
            ok=error is None,
            permanent=bool(error and error.permanent),
            error=error.message[:2000] if error else "",
            status_code=error.status if error else None,
            duration_ms=duration_ms,
        )
        if error is None:
            Notification.objects.filter(pk=notification.pk).update(
                status=Notification.Status.SENT,
                attempts=attempts,
                sent_at=now,
                last_error="",
                lease_expires_at=None,
            )
            NotificationChannel.objects.filter(pk=channel.pk).update(
                consecutive_failures=0, last_attempt_at=now, last_success_at=now, last_error=""
            )
            return
        final = error.permanent or attempts >= int(config_get("alerts.delivery_attempts"))
        delay = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
        if error.retry_after is not None:
            delay = max(error.retry_after, 1.0) if not final else delay
        Notification.objects.filter(pk=notification.pk).update(
            status=Notification.Status.FAILED if final else Notification.Status.PENDING,
            attempts=attempts,
            last_error=error.message[:2000],
            next_attempt_at=now + timedelta(seconds=delay),
            lease_expires_at=None,
        )
        NotificationChannel.objects.filter(pk=channel.pk).update(
            consecutive_failures=F("consecutive_failures") + 1,
            last_attempt_at=now,
            last_error=error.message[:2000],
        )
    logger.warning(
        "notification %s to channel %s failed (%s, attempt %s%s): %s",
        notification.pk,
        channel.name,
        "permanent" if error.permanent else "transient",
        attempts,
        ", given up" if final else "",
        error.message,
    )
