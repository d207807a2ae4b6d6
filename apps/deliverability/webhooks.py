"""Provider feedback over HTTP: django-anymail's tracking webhooks and a generic signed
JSON hook.

* ``/inbound/<esp>/tracking/`` (django-anymail): each provider's own format,
  authenticated by anymail (basic auth ``ANYMAIL["WEBHOOK_SECRET"]`` in the URL given
  to the provider, plus the provider's signature where it has one). Its normalized
  events arrive through anymail's ``tracking`` signal; :func:`on_anymail_tracking` is
  the thin edge that maps them: ``bounced`` (and ``rejected`` for a bad address) → hard
  bounce, ``deferred`` → soft bounce, ``complained`` (and ``rejected`` as spam) →
  complaint, ``unsubscribed`` → unsubscribe. Opens and clicks are EDM's own.
* ``/inbound/generic/``: ``POST`` JSON ``{"type": "hard_bounce" | "soft_bounce" |
  "complaint" | "unsubscribe", "id", "message_id", "recipient", "detail"}`` signed with
  Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``) and the secret ``EDM_FEEDBACK_WEBHOOK_SECRET``: for an MTA or a
  provider anymail does not know.

The message an event is about is found by our Message-ID
(``<task.random.subtask@domain>``) wherever the provider's payload carries it (SendGrid's
``smtp-id``, Mailgun's and SES's original headers, …). An event's idempotency key is
the provider's event id (or a hash of the payload): a redelivered event counts once.
"""

from __future__ import annotations

import hashlib
import json
import logging

from django.conf import settings
from django.dispatch import receiver
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.core.errors import ApplicationError
from apps.deliverability import services
from apps.deliverability.models import FeedbackEvent
from apps.deliverability.selectors import OUR_MESSAGE_ID, message_ref

logger = logging.getLogger("edm.deliverability")

try:  # anymail is a requirement; the guard keeps a broken install from hiding the rest
    from anymail.signals import EventType, RejectReason, tracking
except ImportError:  # pragma: no cover
    tracking = None


def _ref_from(*texts: str, recipient: str = ""):
    for text in texts:
        for match in OUR_MESSAGE_ID.finditer(text or ""):
            ref = message_ref(message_id=f"<{match[1]}>")
            if ref is not None:
                return ref
    return services.MessageRef(email=recipient or "")


def _anymail_kind(event) -> str | None:
    event_type = event.event_type
    if event_type == EventType.BOUNCED:
        return FeedbackEvent.Kind.HARD_BOUNCE
    if event_type == EventType.DEFERRED:
        return FeedbackEvent.Kind.SOFT_BOUNCE
    if event_type == EventType.COMPLAINED:
        return FeedbackEvent.Kind.COMPLAINT
    if event_type == EventType.UNSUBSCRIBED:
        return FeedbackEvent.Kind.UNSUBSCRIBE
    if event_type == EventType.REJECTED:
        if event.reject_reason in (RejectReason.BOUNCED, RejectReason.INVALID):
            return FeedbackEvent.Kind.HARD_BOUNCE
        if event.reject_reason == RejectReason.SPAM:
            return FeedbackEvent.Kind.COMPLAINT
    return None


def feedback_apply(*, kind: str, ref, source: str, event_key: str, detail: str = "") -> bool:
    """One provider event: an unsubscribe goes to ``contact_unsubscribe`` (when the
    message is known), the rest to ``feedback_record``. True when it changed something."""
    if kind == FeedbackEvent.Kind.UNSUBSCRIBE:
        if ref.contact_id is None:
            return False
        try:
            return services.contact_unsubscribe(
                contact_id=ref.contact_id, task_id=ref.task_id, source=source
            )
        except ApplicationError:
            return False
    return services.feedback_record(
        kind=kind, ref=ref, source=source, event_key=event_key, detail=detail
    )


if tracking is not None:

    @receiver(tracking, dispatch_uid="edm-deliverability-anymail-tracking")
    def on_anymail_tracking(sender, event, esp_name: str, **kwargs) -> None:
        kind = _anymail_kind(event)
        if kind is None:
            return
        payload = json.dumps(event.esp_event, default=str, sort_keys=True)
        key = event.event_id or hashlib.sha256(payload.encode()).hexdigest()
        ref = _ref_from(event.message_id or "", payload, recipient=event.recipient or "")
        feedback_apply(
            kind=kind,
            ref=ref,
            source=f"webhook:{esp_name.lower()}"[:64],
            event_key=f"{esp_name.lower()}:{key}",
            detail=(event.description or event.mta_response or "")[:4000],
        )


def _error(status: int, detail: str, *, field: str | None = None, code: str = "invalid"):
    body: dict = {"detail": detail, "code": code, "errors": {}}
    if field:
        body["errors"] = {field: [detail]}
    return JsonResponse(body, status=status)


@csrf_exempt
@require_POST
def generic_feedback(request: HttpRequest) -> JsonResponse:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    secret = settings.EDM_FEEDBACK_WEBHOOK_SECRET
    if not secret:
        return _error(404, "the generic feedback webhook is not configured", code="not_found")
    try:
        body = Webhook(secret).verify(request.body, dict(request.headers))
    except (WebhookVerificationError, ValueError, UnicodeDecodeError) as exc:
        return _error(401, f"bad signature: {exc}", code="not_authenticated")
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object", field="non_field_errors")
    kind = body.get("type")
    if kind not in FeedbackEvent.Kind.values:
        return _error(
            400, f"type must be one of {', '.join(FeedbackEvent.Kind.values)}", field="type"
        )
    event_id = body.get("id") or request.headers.get("webhook-id")
    if not isinstance(event_id, str) or not event_id:
        return _error(400, "id must be a non-empty string", field="id")
    message_id = body.get("message_id") or ""
    if not isinstance(message_id, str):
        return _error(400, "message_id must be a string", field="message_id")
    recipient = body.get("recipient") or ""
    ref = _ref_from(message_id, recipient=recipient if isinstance(recipient, str) else "")
    changed = feedback_apply(
        kind=kind,
        ref=ref,
        source="webhook:generic",
        event_key=f"generic:{event_id}",
        detail=str(body.get("detail") or "")[:4000],
    )
    return JsonResponse({"status": "ok", "matched": ref.owner_id is not None, "new": changed})
