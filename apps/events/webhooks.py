"""Webhook endpoints: registering, changing, rotating secrets, replaying deliveries.

Every function here is a service: keyword-only arguments, the acting user (``actor``,
``None`` for the system), one transaction that also appends the ``webhook.changed``
event (never the secret: payloads name the action and the fields that changed).

Signing follows the Standard Webhooks specification through the ``standardwebhooks``
package (:func:`signature_headers`): ``webhook-id`` is the event's ``uid`` (the same on
every retry and replay, so a receiver can drop duplicates), ``webhook-timestamp`` the
second of the attempt, ``webhook-signature`` one ``v1,<base64>`` per valid secret — two,
space separated, while a rotated secret is still in its overlap.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone
from standardwebhooks import Webhook

from apps.config.selectors import config_get
from apps.core import outbound
from apps.core.errors import ApplicationError
from apps.core.tenancy import is_operator
from apps.events.models import WebhookDelivery, WebhookEndpoint
from apps.events.services import event_append
from apps.events.types import EVENT_TYPES

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
UPDATABLE = ("url", "description", "event_types", "include_system", "is_enabled")


def secret_new() -> str:
    """A fresh ``whsec_…`` secret (24 random bytes, base64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def event_types_clean(types: list[str]) -> list[str]:
    """The subscribed types, checked: known names, ``<subject>.*`` or ``*``; at least one.
    Raises ``ApplicationError`` on ``event_types`` naming the first unknown one."""
    if not isinstance(types, list | tuple) or not types:
        raise ApplicationError("list at least one event type (or '*')", field="event_types")
    subjects = {name.split(".", 1)[0] for name in EVENT_TYPES}
    cleaned: list[str] = []
    for given in types:
        if not isinstance(given, str):
            raise ApplicationError("event types are strings", field="event_types")
        name = given.strip()
        known = (
            name == "*" or name in EVENT_TYPES or (name.endswith(".*") and name[:-2] in subjects)
        )
        if not known:
            raise ApplicationError(f"unknown event type {name!r}", field="event_types")
        if name not in cleaned:
            cleaned.append(name)
    return cleaned


def _url_clean(url: str) -> str:
    url = (url or "").strip()
    if not url:
        raise ApplicationError("a URL is required", field="url")
    if len(url) > 2000:
        raise ApplicationError("at most 2000 characters", field="url")
    try:
        outbound.check_url(url)
    except ValueError as exc:
        raise ApplicationError(str(exc), field="url") from None
    return url


def _check_system(include_system: bool, actor) -> None:
    if include_system and not is_operator(actor):
        raise ApplicationError(
            "only operators receive the events of no owner", field="include_system"
        )


def webhook_create(
    *,
    owner,
    actor,
    url: str,
    event_types: list[str],
    description: str = "",
    include_system: bool = False,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its secret (shown once, stored encrypted)."""
    endpoint = WebhookEndpoint(
        owner=owner,
        url=_url_clean(url),
        event_types=event_types_clean(event_types),
        description=(description or "").strip()[:200],
        include_system=bool(include_system),
    )
    _check_system(endpoint.include_system, actor)
    secret = secret_new()
    endpoint.secret = secret
    with transaction.atomic():
        endpoint.save()
        event_append(
            "webhook.changed",
            owner=endpoint.owner_id,
            actor=actor,
            subject=endpoint,
            payload={"action": "created", "url": endpoint.url, "event_types": endpoint.event_types},
        )
    return endpoint, secret


def webhook_update(*, endpoint: WebhookEndpoint, actor, **changes) -> WebhookEndpoint:
    """Change ``url``, ``description``, ``event_types``, ``include_system`` or
    ``is_enabled``. Enabling a disabled endpoint clears its failure count."""
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise ApplicationError(f"cannot change {sorted(unknown)[0]}", field=sorted(unknown)[0])
    if "url" in changes:
        changes["url"] = _url_clean(changes["url"])
    if "event_types" in changes:
        changes["event_types"] = event_types_clean(changes["event_types"])
    if "description" in changes:
        changes["description"] = (changes["description"] or "").strip()[:200]
    if changes.get("include_system"):
        _check_system(True, actor)
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        changed = {k: v for k, v in changes.items() if getattr(endpoint, k) != v}
        if not changed:
            return endpoint
        for name, value in changed.items():
            setattr(endpoint, name, value)
        fields = [*changed, "updated_at"]
        if changed.get("is_enabled"):
            endpoint.consecutive_failures = 0
            endpoint.disabled_reason = ""
            fields += ["consecutive_failures", "disabled_reason"]
        endpoint.save(update_fields=fields)
        event_append(
            "webhook.changed",
            owner=endpoint.owner_id,
            actor=actor,
            subject=endpoint,
            payload={"action": "changed", "changed": sorted(changed)},
        )
    return endpoint


def webhook_delete(*, endpoint: WebhookEndpoint, actor) -> None:
    """Delete an endpoint with its deliveries and their log."""
    with transaction.atomic():
        event_append(
            "webhook.changed",
            owner=endpoint.owner_id,
            actor=actor,
            subject=endpoint,
            payload={"action": "deleted", "url": endpoint.url},
        )
        WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()


def webhook_rotate_secret(
    *, endpoint: WebhookEndpoint, actor, overlap: float | None = None
) -> tuple[WebhookEndpoint, str]:
    """A new secret; the previous one still signs for ``overlap`` seconds (default
    ``events.webhook_rotation_overlap``). Returns the endpoint and the new secret."""
    if overlap is None:
        overlap = float(config_get("events.webhook_rotation_overlap"))
    secret = secret_new()
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted if overlap > 0 else ""
        endpoint.previous_secret_expires_at = (
            timezone.now() + timedelta(seconds=overlap) if overlap > 0 else None
        )
        endpoint.secret = secret
        endpoint.save(
            update_fields=[
                "secret_encrypted",
                "previous_secret_encrypted",
                "previous_secret_expires_at",
                "updated_at",
            ]
        )
        event_append(
            "webhook.changed",
            owner=endpoint.owner_id,
            actor=actor,
            subject=endpoint,
            payload={"action": "secret_rotated", "overlap_seconds": overlap},
        )
    return endpoint, secret


def deliveries_replay(*, deliveries, actor) -> int:
    """Queue the given deliveries again (delivered or dead alike): a new delivery of the
    same event and body for each, sent as soon as its endpoint's earlier events are.
    Returns how many were queued. ``deliveries``: a queryset or list of deliveries."""
    rows = list(deliveries)
    if not rows:
        return 0
    with transaction.atomic():
        WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(
                    endpoint_id=d.endpoint_id,
                    event_id=d.event_id,
                    event_uid=d.event_uid,
                    event_type=d.event_type,
                    occurred_at=d.occurred_at,
                    body=d.body,
                )
                for d in rows
            ]
        )
        by_endpoint: dict[int, list[int]] = {}
        for d in rows:
            by_endpoint.setdefault(d.endpoint_id, []).append(d.pk)
        owners = dict(
            WebhookEndpoint.objects.filter(pk__in=by_endpoint).values_list("pk", "owner_id")
        )
        for endpoint_id, ids in by_endpoint.items():
            event_append(
                "webhook.changed",
                owner=owners.get(endpoint_id),
                actor=actor,
                subject=WebhookEndpoint(pk=endpoint_id),
                payload={"action": "replayed", "deliveries": ids},
            )
    return len(rows)


def signing_secrets(endpoint: WebhookEndpoint, now: datetime | None = None) -> list[str]:
    """The secrets that sign now: the current one, and the previous one in its overlap."""
    now = now or timezone.now()
    keys = [endpoint.secret]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_expires_at
        and endpoint.previous_secret_expires_at > now
    ):
        keys.append(endpoint.previous_secret)
    return keys


def signers(secrets_: list[str]) -> list[Webhook]:
    """The ``standardwebhooks`` signers of ``secrets_`` (made once per batch)."""
    return [Webhook(key) for key in secrets_]


def signature_headers(
    *,
    secrets_: list[str] | None = None,
    signed_by: list[Webhook] | None = None,
    msg_id: str,
    body: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``, one signature per secret (or per
    signer of :func:`signers`)."""
    now = now or timezone.now()
    signed_by = signed_by if signed_by is not None else signers(secrets_ or [])
    signatures = [signer.sign(msg_id, now, body) for signer in signed_by]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
        "Content-Type": "application/json",
    }
