"""Writes of monitoring made by people: notification channels, alert rules, and
acknowledging or resolving alerts. Evaluation, sampling and delivery live in
``evaluation``, ``sampling`` and ``notify``."""

from __future__ import annotations

import logging
import secrets
from base64 import b64encode
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core import outbound
from apps.core.audit import actor_id, event_append
from apps.core.errors import ApplicationError
from apps.monitoring.models import Alert, AlertRule, Notification, NotificationChannel
from apps.monitoring.notify import (
    notification_deliver,
    notification_queue_test,
    notifications_claim,
)
from apps.monitoring.rules import METRICS

logger = logging.getLogger("edm.monitoring")

CHANNEL_FIELDS = {"name", "target", "is_enabled"}
RULE_FIELDS = {
    "name",
    "metric",
    "comparison",
    "threshold",
    "for_seconds",
    "level",
    "enabled",
    "description",
}


def _new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return "whsec_" + b64encode(secrets.token_bytes(24)).decode()


def _check_target(kind: str, target: str) -> str:
    target = target.strip()
    if not target:
        raise ApplicationError("give the channel's target", field="target")
    if kind == NotificationChannel.Kind.EMAIL:
        addresses = [part.strip() for part in target.split(",") if part.strip()]
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ApplicationError(
                    f"{address!r} is not an e-mail address", field="target"
                ) from None
        return ", ".join(addresses)
    try:
        outbound.check_url(target)
    except ValueError as exc:
        raise ApplicationError(f"{target}: {exc}", field="target") from None
    return target


def channel_create(
    *, name: str, kind: str, target: str, is_enabled: bool = True, actor=None
) -> tuple[NotificationChannel, str | None]:
    """A new channel, and — for a webhook — its signing secret in plain text, which is
    shown this once (it is stored encrypted). Raises ``ApplicationError`` naming the
    field."""
    if kind not in NotificationChannel.Kind.values:
        choices = ", ".join(NotificationChannel.Kind.values)
        raise ApplicationError(f"kind must be one of {choices}", field="kind")
    if not name.strip():
        raise ApplicationError("give the channel a name", field="name")
    channel = NotificationChannel(
        name=name.strip(), kind=kind, target=_check_target(kind, target), is_enabled=is_enabled
    )
    secret = _new_secret() if kind == NotificationChannel.Kind.WEBHOOK else None
    if secret:
        channel.secret = secret
    try:
        with transaction.atomic():
            channel.save()
            _config_event(channel, actor, action="created", name=channel.name, kind=kind)
    except IntegrityError:
        raise ApplicationError(f"a channel named {name!r} exists", field="name") from None
    return channel, secret


def channel_update(*, channel_id: int, actor=None, **changes: Any) -> NotificationChannel:
    """Change a channel's name, target or ``is_enabled`` (its kind and secret stay)."""
    unknown = set(changes) - CHANNEL_FIELDS
    if unknown:
        field = sorted(unknown)[0]
        raise ApplicationError(f"{field} cannot be changed", field=field)
    with transaction.atomic():
        channel = NotificationChannel.objects.select_for_update().get(pk=channel_id)
        if "target" in changes:
            changes["target"] = _check_target(channel.kind, changes["target"])
        for field, value in changes.items():
            setattr(channel, field, value)
        try:
            with transaction.atomic():
                channel.save()
        except IntegrityError:
            raise ApplicationError(
                f"a channel named {channel.name!r} exists", field="name"
            ) from None
        _config_event(channel, actor, action="updated", fields=sorted(changes))
    return channel


def channel_delete(*, channel_id: int, actor=None) -> None:
    with transaction.atomic():
        for channel in NotificationChannel.objects.filter(pk=channel_id).select_for_update():
            _config_event(channel, actor, action="deleted", name=channel.name)
            channel.delete()


def channel_send_test(*, channel_id: int) -> Notification:
    """Send a test notification now (in the caller's process) and return it as it
    stands after this first attempt: ``sent``, ``failed`` (permanent error), or
    ``pending`` again (a transient error: the monitor loop retries it)."""
    channel = NotificationChannel.objects.get(pk=channel_id)
    notification = notification_queue_test(channel=channel)
    if notifications_claim(ids=[notification.pk]):
        notification_deliver(notification_id=notification.pk)
    notification.refresh_from_db()
    return notification


def _clean_rule(rule: AlertRule) -> None:
    if rule.metric not in METRICS:
        raise ApplicationError(
            f"unknown metric {rule.metric!r}; one of: {', '.join(sorted(METRICS))}",
            field="metric",
        )
    try:
        rule.threshold = float(rule.threshold)
    except (TypeError, ValueError):
        raise ApplicationError("threshold must be a number", field="threshold") from None
    try:
        rule.full_clean(exclude=["channels"])
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise ApplicationError(messages[0], field=field) from None


def _set_channels(rule: AlertRule, channels: list[int] | None) -> None:
    if channels is None:
        return
    found = set(NotificationChannel.objects.filter(pk__in=channels).values_list("pk", flat=True))
    missing = sorted(set(channels) - found)
    if missing:
        raise ApplicationError(f"no channel {missing[0]}", field="channels")
    rule.channels.set(sorted(found))


def rule_create(*, channels: list[int] | None = None, actor=None, **fields: Any) -> AlertRule:
    """A new alert rule (fields of :class:`AlertRule`); validated, channels checked."""
    unknown = set(fields) - RULE_FIELDS
    if unknown:
        field = sorted(unknown)[0]
        raise ApplicationError(f"unknown field {field}", field=field)
    rule = AlertRule(**fields)
    _clean_rule(rule)
    with transaction.atomic():
        rule.save()
        _set_channels(rule, channels)
        _config_event(rule, actor, action="created", name=rule.name)
    return rule


def rule_update(
    *, rule_id: int, channels: list[int] | None = None, actor=None, **changes: Any
) -> AlertRule:
    """Change a rule. A seeded rule an operator changes is no longer updated by EDM."""
    unknown = set(changes) - RULE_FIELDS
    if unknown:
        field = sorted(unknown)[0]
        raise ApplicationError(f"unknown field {field}", field=field)
    with transaction.atomic():
        rule = AlertRule.objects.select_for_update().get(pk=rule_id)
        for field, value in changes.items():
            setattr(rule, field, value)
        _clean_rule(rule)
        rule.save()
        _set_channels(rule, channels)
        fields = sorted(changes) + (["channels"] if channels is not None else [])
        _config_event(rule, actor, action="updated", name=rule.name, fields=fields)
    return rule


def rule_delete(*, rule_id: int, actor=None) -> None:
    """Delete a rule; its alerts stay in the history (an open one resolves at the next
    round unless another rule of its metric holds)."""
    with transaction.atomic():
        for rule in AlertRule.objects.filter(pk=rule_id).select_for_update():
            _config_event(rule, actor, action="deleted", name=rule.name)
            rule.delete()


def _user(actor):
    return actor if actor is not None and actor.is_authenticated else None


def _open_alert(alert_id: int, visible) -> Alert:
    queryset = visible if visible is not None else Alert.objects.all()
    try:
        return queryset.select_for_update(of=("self",)).get(pk=alert_id)
    except Alert.DoesNotExist:
        raise ApplicationError(f"no alert {alert_id}", field="alert", code="not_found") from None


def _alert_event(event_type: str, alert: Alert, actor) -> None:
    event_append(
        event_type,
        owner=alert.owner_id,
        actor=actor_id(actor),
        subject=alert,
        payload={"rule": alert.rule_name, "metric": alert.metric, "level": alert.level},
    )


def _config_event(obj: Any, actor, *, action: str, **payload: Any) -> None:
    """``alert_rule.changed`` / ``alert_channel.changed`` naming the object (``key``) and
    what happened to it."""
    kind = "alert_rule" if obj._meta.model_name == "alertrule" else "alert_channel"
    event_append(
        f"{kind}.changed",
        actor=actor_id(actor),
        subject=obj,
        payload={"key": f"{obj._meta.model_name}:{obj.pk}", "action": action, **payload},
    )


def alert_acknowledge(*, alert_id: int, actor, visible=None) -> Alert:
    """Acknowledge a firing alert: no reminders until it escalates. ``visible`` limits
    which alerts the caller may touch. Raises ``ApplicationError`` for a resolved one."""
    with transaction.atomic():
        alert = _open_alert(alert_id, visible)
        if alert.status == Alert.Status.RESOLVED:
            raise ApplicationError("the alert is resolved", field="status")
        if alert.status == Alert.Status.FIRING:
            alert.status = Alert.Status.ACKNOWLEDGED
            alert.acknowledged_at = timezone.now()
            alert.acknowledged_by = _user(actor)
            alert.save(update_fields=["status", "acknowledged_at", "acknowledged_by"])
            _alert_event("alert.acknowledged", alert, actor)
    logger.info("alert %s acknowledged by %s", alert.pk, actor)
    return alert


def alert_resolve(*, alert_id: int, actor, visible=None) -> Alert:
    """Resolve an alert by hand. If its condition still holds, the next round fires a
    new one: resolving says "fixed", not "be quiet" (acknowledge for that)."""
    with transaction.atomic():
        alert = _open_alert(alert_id, visible)
        if alert.status == Alert.Status.RESOLVED:
            raise ApplicationError("the alert is resolved already", field="status")
        alert.status = Alert.Status.RESOLVED
        alert.resolved_at = timezone.now()
        alert.resolved_by = _user(actor)
        alert.save(update_fields=["status", "resolved_at", "resolved_by"])
        _alert_event("alert.resolved", alert, actor)
    logger.info("alert %s resolved by %s", alert.pk, actor)
    return alert
