"""Inbound mail: delivery status notifications (RFC 3464 and the older formats
flufl.bounce knows), complaint reports (ARF, RFC 5965) and unsubscribe requests sent to
the List-Unsubscribe mailto address.

:func:`inbound_message_process` reads one message, keeps it (:class:`InboundMessage`,
unique by its SHA-256, so a message read twice is processed once) and acts on it:

* **ARF** — ``multipart/report; report-type=feedback-report``: a complaint about the
  original message (its Message-ID in the attached message or headers; else the VERP
  address it was sent from).
* **DSN** — a bounce: flufl.bounce's detectors give the permanently and temporarily
  failed recipients (hard and soft bounces); the original message is found by the
  VERP address the bounce was sent to (``bounces+<token>@``), else by the Message-ID of
  the returned headers.
* **Unsubscribe** — addressed to ``unsubscribe+<token>@``.

Anything else, or a report whose message is not ours, is kept with status
``ignored`` / ``unmatched`` / ``unparsable`` for review in the admin: nothing is dropped.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import re
from email.message import Message

from django.db import IntegrityError, transaction
from flufl.bounce import all_failures

from apps.core.errors import ApplicationError
from apps.deliverability import links, services, tokens
from apps.deliverability.models import FeedbackEvent, InboundMessage
from apps.deliverability.selectors import message_ref

logger = logging.getLogger("edm.deliverability")

_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")
_ADDRESS_HEADERS = (
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "To",
    "Original-Rcpt-To",
)


def _parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def _report_type(msg: Message) -> str:
    if msg.get_content_type() != "multipart/report":
        return ""
    return (msg.get_param("report-type") or "").lower()


def _our_address(msg: Message, kind: str) -> str | None:
    """The token of our ``bounces+`` / ``unsubscribe+`` address this message was sent to."""
    for header in _ADDRESS_HEADERS:
        for value in msg.get_all(header) or ():
            found = links.read_address_token(str(value))
            if found is not None and found[0] == kind:
                return found[1]
    return None


def _returned_message_ids(msg: Message) -> list[str]:
    """Message-IDs of the original message inside a report (returned headers or message)."""
    ids: list[str] = []
    for part in msg.walk():
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            for inner in part.get_payload() or ():
                value = inner.get("Message-ID") if isinstance(inner, Message) else None
                if value:
                    ids.append(str(value))
        elif content_type in ("text/rfc822-headers", "message/rfc822-headers"):
            payload = part.get_payload(decode=True) or b""
            inner = email.message_from_bytes(payload, policy=email.policy.compat32)
            if inner.get("Message-ID"):
                ids.append(str(inner["Message-ID"]))
    if not ids:
        # Bounces that quote the original as plain text.
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                text = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
                for line in text.splitlines():
                    if line.lower().startswith("message-id:"):
                        ids.extend(_MESSAGE_ID.findall(line))
    return [m.strip() for m in ids]


def _ref_of(msg: Message, *, verp_token: str | None):
    if verp_token:
        ids = tokens.read(tokens.RETURN_PATH, verp_token, count=1)
        if ids is not None:
            ref = message_ref(subtask_id=ids[0])
            if ref is not None:
                return ref
    for message_id in _returned_message_ids(msg):
        for candidate in _MESSAGE_ID.findall(message_id):
            ref = message_ref(message_id=candidate)
            if ref is not None:
                return ref
    return None


def _feedback_fields(msg: Message) -> dict[str, str]:
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            if isinstance(payload, list):  # parsed as a message: its headers are the fields
                fields = payload[0] if payload else None
                return {k.lower(): str(v) for k, v in (fields.items() if fields else [])}
            text = payload if isinstance(payload, str) else ""
            return {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in text.splitlines())
                if v
            }
    return {}


def _keep(*, raw: bytes, digest: str, source: str, msg: Message | None) -> InboundMessage | None:
    subject = str(msg.get("Subject", "")) if msg is not None else ""
    try:
        with transaction.atomic():
            return InboundMessage.objects.create(
                sha256=digest,
                source=source[:255],
                status=InboundMessage.Status.UNPARSABLE,
                subject=subject[:255],
                raw=raw,
            )
    except IntegrityError:
        return None


def inbound_message_process(*, raw: bytes, source: str, actor=None) -> InboundMessage | None:
    """Keep and act on one inbound message (see the module docstring). Returns the
    stored message, or None when the very same message was processed before."""
    digest = hashlib.sha256(raw).hexdigest()
    try:
        msg = _parse(raw)
    except Exception:  # noqa: BLE001 - a message the parser cannot read is kept as it is
        msg = None
    stored = _keep(raw=raw, digest=digest, source=source, msg=msg)
    if stored is None:
        return None
    if msg is None or not msg.keys():
        stored.detail = "not an e-mail message"
        stored.save(update_fields=["detail"])
        return stored
    try:
        kind, status, detail = _act(msg, digest=digest, actor=actor)
    except Exception as exc:  # noqa: BLE001 - kept for review, never lost
        logger.warning("inbound message %s could not be processed: %s", stored.pk, exc)
        kind, status, detail = InboundMessage.Kind.OTHER, InboundMessage.Status.UNPARSABLE, str(exc)
    stored.kind, stored.status, stored.detail = kind, status, detail[:4000]
    stored.save(update_fields=["kind", "status", "detail"])
    return stored


def _act(msg: Message, *, digest: str, actor) -> tuple[str, str, str]:
    kinds, statuses = InboundMessage.Kind, InboundMessage.Status
    report = _report_type(msg)

    if report == "feedback-report":
        fields = _feedback_fields(msg)
        verp = None
        for value in (fields.get("original-mail-from", ""), *(msg.get_all("To") or ())):
            found = links.read_address_token(str(value))
            if found and found[0] == "bounces":
                verp = found[1]
        ref = _ref_of(msg, verp_token=verp)
        feedback_type = fields.get("feedback-type", "abuse")
        if ref is None:
            return (
                kinds.ARF,
                statuses.UNMATCHED,
                f"complaint ({feedback_type}) about no message of ours",
            )
        services.feedback_record(
            kind=FeedbackEvent.Kind.COMPLAINT,
            ref=ref,
            source="arf",
            event_key=f"arf:{digest}",
            detail=f"feedback-type {feedback_type}; {fields.get('user-agent', '')}".strip(),
            actor=actor,
        )
        return kinds.ARF, statuses.PROCESSED, f"complaint about subtask {ref.subtask_id}"

    unsubscribe_token = _our_address(msg, "unsubscribe")
    if unsubscribe_token and report != "delivery-status":
        ids = tokens.read(tokens.UNSUBSCRIBE, unsubscribe_token, count=2)
        if ids is None:
            return kinds.UNSUBSCRIBE, statuses.UNMATCHED, "unsubscribe address with a bad token"
        try:
            services.contact_unsubscribe(
                contact_id=ids[0], task_id=ids[1], source="mailto", actor=actor
            )
        except ApplicationError as exc:
            return kinds.UNSUBSCRIBE, statuses.UNMATCHED, exc.message
        return kinds.UNSUBSCRIBE, statuses.PROCESSED, f"contact {ids[0]} unsubscribed"

    temporary, permanent = all_failures(msg)
    if not temporary and not permanent and report != "delivery-status":
        return kinds.OTHER, statuses.IGNORED, "neither a bounce, a complaint nor an unsubscribe"
    ref = _ref_of(msg, verp_token=_our_address(msg, "bounces"))
    if ref is None:
        failed = ", ".join(sorted(a.decode("utf-8", "replace") for a in temporary | permanent))
        return (
            kinds.DSN,
            statuses.UNMATCHED,
            f"bounce of no message of ours ({failed or 'no recipient found'})",
        )
    recipients = {a.decode("utf-8", "replace").lower() for a in permanent}
    hard = ref.email.lower() in recipients or (permanent and not temporary)
    kind = FeedbackEvent.Kind.HARD_BOUNCE if hard else FeedbackEvent.Kind.SOFT_BOUNCE
    if not temporary and not permanent:
        kind = FeedbackEvent.Kind.SOFT_BOUNCE
    services.feedback_record(
        kind=kind,
        ref=ref,
        source="dsn",
        event_key=f"dsn:{digest}",
        detail=_diagnostic(msg),
        actor=actor,
    )
    return kinds.DSN, statuses.PROCESSED, f"{kind} of subtask {ref.subtask_id}"


def _diagnostic(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            lines = []
            for block in part.get_payload() or ():
                if isinstance(block, Message):
                    for name in ("Action", "Status", "Diagnostic-Code", "Final-Recipient"):
                        if block.get(name):
                            lines.append(f"{name}: {block[name]}")
            return "; ".join(lines)
    return ""
