"""Deliverability writes: unsubscribes, suppressions, bounces and complaints, tracking.

Every state change is one function with an ``actor`` (the user acting, or None for a
contact, a provider or a mailbox) that runs in one transaction and validates first.
Every feedback event is idempotent: it carries an ``event_key`` (a provider's event id,
a hash of a DSN, the contact and task of an unsubscribe) and a second delivery of the
same key changes nothing.

Status rules for contacts: only an ``active`` contact changes status here (an
unsubscribe, a hard bounce or a complaint); a contact that already is unsubscribed,
bounced or complained keeps that status, and its suppression is made sure of. Only
:func:`suppression_lift` — an operator's explicit, audited action — brings a contact
back to ``active``.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.config.selectors import config_get
from apps.contacts.emails import normalize_email
from apps.contacts.models import Contact
from apps.core.audit import actor_id, event_append
from apps.core.errors import ApplicationError
from apps.deliverability.models import (
    FeedbackEvent,
    Suppression,
    SuppressionLift,
    TrackingEvent,
)
from apps.monitoring.access import is_operator

logger = logging.getLogger("edm.deliverability")

_DOMAIN_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")
MAX_CSV_ROWS = 100_000

# The contact status each suppression reason stands for (address suppressions only).
STATUS_OF_REASON = {
    Suppression.Reason.UNSUBSCRIBED: Contact.Status.UNSUBSCRIBED,
    Suppression.Reason.BOUNCED: Contact.Status.BOUNCED,
    Suppression.Reason.COMPLAINED: Contact.Status.COMPLAINED,
}


@dataclass(frozen=True)
class MessageRef:
    """What an unsubscribe, bounce or complaint is about, as far as it is known."""

    owner_id: int | None = None
    contact_id: int | None = None
    task_id: int | None = None
    subtask_id: int | None = None
    email: str = ""


# --- suppressions -----------------------------------------------------------------------


def _clean_domain(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    domain = value.strip().lower().lstrip("@")
    if not domain or "." not in domain or len(domain) > 253:
        return None
    if not set(domain) <= _DOMAIN_CHARS or domain.startswith((".", "-")) or ".." in domain:
        return None
    return domain


def clean_target(email: object, domain: object) -> tuple[str, str]:
    """``(email, "")`` or ``("", domain)`` cleaned; ``ApplicationError`` naming the field."""
    if bool(email) == bool(domain):
        raise ApplicationError("give exactly one of email or domain", field="email")
    if email:
        clean = normalize_email(email)
        if clean is None:
            raise ApplicationError(f"{email!r} is not a valid e-mail address", field="email")
        return clean, ""
    clean = _clean_domain(domain)
    if clean is None:
        raise ApplicationError(f"{domain!r} is not a valid domain name", field="domain")
    return "", clean


def _mark_contacts(*, owner_id: int | None, email: str, status: str, actor=None) -> int:
    """``active`` contacts with ``email`` (of ``owner_id``, or of everyone) → ``status``,
    through the contacts app (which records each change)."""
    from apps.contacts.services import contacts_mark_status

    return contacts_mark_status(status=status, email=email, owner_id=owner_id, actor=actor)


def _suppression_event(row: Suppression, actor, *, action: str, **payload) -> None:
    event_append(
        "suppression.changed",
        owner=row.owner_id,
        actor=actor_id(actor),
        subject=row,
        payload={
            "action": action,
            "email": row.email,
            "domain": row.domain,
            "reason": row.reason,
            **payload,
        },
    )


@transaction.atomic
def suppression_add(
    *,
    owner,
    email: str = "",
    domain: str = "",
    reason: str = Suppression.Reason.MANUAL,
    source: str = "",
    note: str = "",
    actor=None,
) -> tuple[Suppression, bool]:
    """Suppress an address or a whole domain for ``owner`` (None: globally, operators
    only). Returns ``(suppression, created)``; an existing entry is kept as it is.

    An address suppressed as unsubscribed, bounced or complained turns the matching
    ``active`` contacts to that status; any suppression keeps its addresses out of every
    later task (checked when a task is queued and again when it sends).
    Raises ``ApplicationError`` naming the field: not exactly one of email/domain, a
    malformed value, an unknown reason, a global entry by a non-operator.
    """
    email, domain = clean_target(email, domain)
    if reason not in Suppression.Reason.values:
        raise ApplicationError(
            f"reason must be one of {', '.join(Suppression.Reason.values)}", field="reason"
        )
    if owner is None and actor is not None and not is_operator(actor):
        raise ApplicationError("only operators keep the global list", field="owner")
    owner_id = getattr(owner, "pk", owner)
    existing = Suppression.objects.filter(owner_id=owner_id, email=email, domain=domain).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            suppression = Suppression.objects.create(
                owner_id=owner_id,
                email=email,
                domain=domain,
                reason=reason,
                source=source[:64],
                note=note,
                created_by=actor if getattr(actor, "pk", None) else None,
            )
    except IntegrityError:  # added concurrently: the same entry
        return Suppression.objects.get(owner_id=owner_id, email=email, domain=domain), False
    _suppression_event(suppression, actor, action="added", source=suppression.source)
    status = STATUS_OF_REASON.get(reason)
    if email and status:
        _mark_contacts(owner_id=owner_id, email=email, status=status, actor=actor)
    logger.info("suppressed %s for owner %s (%s)", suppression.target, owner_id, reason)
    return suppression, True


@transaction.atomic
def suppression_lift(*, suppression: Suppression | int, actor, reason: str) -> SuppressionLift:
    """Lift a suppression: an operator's explicit action, recorded with its reason
    (:class:`SuppressionLift`). The contacts the entry had made unsubscribed, bounced or
    complained become ``active`` again. Raises ``ApplicationError`` when ``actor`` is not
    an operator or ``reason`` is empty."""
    if not is_operator(actor):
        raise ApplicationError("only an operator can lift a suppression", field="actor")
    if not (reason or "").strip():
        raise ApplicationError("say why the suppression is lifted", field="reason")
    pk = getattr(suppression, "pk", suppression)
    row = Suppression.objects.select_for_update().filter(pk=pk).first()
    if row is None:
        raise ApplicationError(f"suppression {pk} does not exist", field="id", code="not_found")
    reactivated = 0
    status = STATUS_OF_REASON.get(row.reason)
    if row.email and status:
        from apps.contacts.services import contacts_mark_status

        reactivated = contacts_mark_status(
            status=Contact.Status.ACTIVE,
            email=row.email,
            owner_id=row.owner_id,
            only_from=[status],
            actor=actor,
        )
    lift = SuppressionLift.objects.create(
        owner_id=row.owner_id,
        email=row.email,
        domain=row.domain,
        original_reason=row.reason,
        suppressed_at=row.created_at,
        reason=reason.strip(),
        lifted_by=actor,
        contacts_reactivated=reactivated,
    )
    _suppression_event(row, actor, action="lifted", why=lift.reason, reactivated=reactivated)
    row.delete()
    logger.info("suppression of %s lifted by %s", lift.email or lift.domain, actor.pk)
    return lift


@transaction.atomic
def suppressions_import_csv(*, owner, data: bytes | str, actor=None, source: str = "csv") -> dict:
    """Import a CSV of suppressions, all or nothing: a header row with ``email`` or
    ``domain`` (or both, one per row) and optionally ``reason`` and ``note``.

    Returns ``{"created", "existing"}``. Raises ``ApplicationError`` naming the first
    bad line (``line N: reason``) and then nothing is stored.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApplicationError("the file is not UTF-8 text", field="file") from None
    reader = csv.DictReader(io.StringIO(data))
    columns = {(name or "").strip().lower() for name in reader.fieldnames or ()}
    if not columns & {"email", "domain"}:
        raise ApplicationError("line 1: the header needs an email or a domain column", field="file")
    rows = []
    for line, raw in enumerate(reader, start=2):
        if line - 1 > MAX_CSV_ROWS:
            raise ApplicationError(f"at most {MAX_CSV_ROWS} rows per file", field="file")
        row = {(key or "").strip().lower(): (value or "").strip() for key, value in raw.items()}
        email, domain = row.get("email", ""), row.get("domain", "")
        if not email and not domain:
            continue
        reason = row.get("reason") or Suppression.Reason.IMPORTED
        try:
            target = clean_target(email, domain)
        except ApplicationError as exc:
            raise ApplicationError(f"line {line}: {exc.message}", field="file") from None
        if reason not in Suppression.Reason.values:
            raise ApplicationError(
                f"line {line}: reason must be one of {', '.join(Suppression.Reason.values)}",
                field="file",
            )
        rows.append((target, reason, row.get("note", "")))
    created = existing = 0
    for (email, domain), reason, note in rows:
        _, was_created = suppression_add(
            owner=owner,
            email=email,
            domain=domain,
            reason=reason,
            source=source,
            note=note,
            actor=actor,
        )
        created += was_created
        existing += not was_created
    return {"created": created, "existing": existing}


def suppressions_export_csv(rows) -> str:
    """The suppressions ``rows`` as CSV text (the import's format, plus context)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "domain", "reason", "note", "source", "scope", "created_at"])
    for row in rows.order_by("id").iterator(chunk_size=2000):
        writer.writerow(
            [
                row.email,
                row.domain,
                row.reason,
                row.note,
                row.source,
                "global" if row.owner_id is None else "owner",
                row.created_at.isoformat(),
            ]
        )
    return out.getvalue()


# --- unsubscribes -----------------------------------------------------------------------


def _record(*, kind: str, ref: MessageRef, source: str, event_key: str, detail: str = "") -> bool:
    """Insert the feedback event unless its key was seen; True when it is new."""
    try:
        with transaction.atomic():
            FeedbackEvent.objects.create(
                owner_id=ref.owner_id,
                kind=kind,
                email=ref.email[:254],
                contact_id=ref.contact_id,
                task_id=ref.task_id,
                subtask_id=ref.subtask_id,
                source=source[:64],
                event_key=event_key[:255],
                detail=detail[:4000],
            )
    except IntegrityError:
        return False
    return True


@transaction.atomic
def contact_unsubscribe(*, contact_id: int, task_id: int | None, source: str, actor=None) -> bool:
    """Unsubscribe a contact from everything (one-click, the confirm page, the
    preferences page, a mailto). Idempotent: returns True only when the contact was
    ``active`` and is now ``unsubscribed``; either way the address is on the owner's
    suppression list afterwards. Raises ``ApplicationError`` (``not_found``) when the
    contact does not exist."""
    contact = Contact.objects.select_for_update().filter(pk=contact_id).first()
    if contact is None:
        raise ApplicationError("this address is not on the list", field="token", code="not_found")
    changed = contact.status == Contact.Status.ACTIVE
    if changed:
        _mark_contacts_by_id(contact, Contact.Status.UNSUBSCRIBED, actor, source=source)
        _record(
            kind=FeedbackEvent.Kind.UNSUBSCRIBE,
            ref=MessageRef(
                owner_id=contact.owner_id,
                contact_id=contact.pk,
                task_id=task_id or None,
                email=contact.email,
            ),
            source=source,
            event_key=f"unsubscribe:{contact.pk}:{timezone.now().isoformat()}",
        )
    suppression_add(
        owner=contact.owner_id,
        email=contact.email,
        reason=Suppression.Reason.UNSUBSCRIBED,
        source=source,
        actor=actor,
    )
    return changed


def _mark_contacts_by_id(contact: Contact, status: str, actor, **payload) -> None:
    from apps.contacts.services import contacts_mark_status

    contacts_mark_status(status=status, contact_ids=[contact.pk], actor=actor, payload=payload)
    contact.status = status


@transaction.atomic
def contact_leave_tags(*, contact_id: int, tag_ids: list[int], actor=None) -> int:
    """Take a contact out of some of its tags (the preferences page); returns how many
    memberships went. Tags of another owner are ignored."""
    from apps.contacts.models import Tag
    from apps.contacts.services import ContactSelection, tag_remove_contacts

    contact = Contact.objects.filter(pk=contact_id).first()
    if contact is None:
        raise ApplicationError("this address is not on the list", field="token", code="not_found")
    removed = 0
    for tag in Tag.objects.filter(owner_id=contact.owner_id, pk__in=tag_ids).order_by("pk"):
        change = tag_remove_contacts(
            tag=tag, selection=ContactSelection(ids=[contact.pk]), actor=actor
        )
        removed += getattr(change, "count", 0) or 0
    return removed


# --- bounces and complaints -------------------------------------------------------------


def _soft_bounce_limit_reached(*, ref: MessageRef) -> bool:
    limit = int(config_get("deliverability.soft_bounce_limit"))
    window = float(config_get("deliverability.soft_bounce_window"))
    since = timezone.now() - timedelta(seconds=window)
    events = FeedbackEvent.objects.filter(
        kind=FeedbackEvent.Kind.SOFT_BOUNCE, email=ref.email, created_at__gte=since
    )
    if ref.owner_id is not None:
        events = events.filter(owner_id=ref.owner_id)
    return events.count() >= limit


@transaction.atomic
def feedback_record(
    *, kind: str, ref: MessageRef, source: str, event_key: str, detail: str = "", actor=None
) -> bool:
    """Record a bounce or a complaint about a message; True when the event is new.

    A hard bounce or a complaint suppresses the address for the owner at once (and the
    contact becomes ``bounced`` / ``complained``); soft bounces do so when
    ``deliverability.soft_bounce_limit`` of them happened within
    ``deliverability.soft_bounce_window``. An event whose message is unknown (no owner)
    is kept for review and changes no contact. The same ``event_key`` twice changes
    nothing the second time.
    """
    if kind not in FeedbackEvent.Kind.values or kind == FeedbackEvent.Kind.UNSUBSCRIBE:
        raise ApplicationError(f"unknown feedback kind {kind!r}", field="kind")
    email = normalize_email(ref.email) or (ref.email or "").strip().lower()
    ref = MessageRef(**{**ref.__dict__, "email": email})
    if not _record(kind=kind, ref=ref, source=source, event_key=event_key, detail=detail):
        return False
    if ref.owner_id is None or not email:
        return True
    reason = {
        FeedbackEvent.Kind.HARD_BOUNCE: Suppression.Reason.BOUNCED,
        FeedbackEvent.Kind.COMPLAINT: Suppression.Reason.COMPLAINED,
    }.get(kind)
    if kind == FeedbackEvent.Kind.SOFT_BOUNCE and _soft_bounce_limit_reached(ref=ref):
        reason = Suppression.Reason.BOUNCED
    if reason is None:
        return True
    _, created = suppression_add(
        owner=ref.owner_id, email=email, reason=reason, source=source, actor=actor
    )
    if not created:
        # Already suppressed (say, unsubscribed): a complaint still marks the contact.
        status = STATUS_OF_REASON[reason]
        _mark_contacts(owner_id=ref.owner_id, email=email, status=status, actor=actor)
    return True


# --- tracking ---------------------------------------------------------------------------

# Apple's Mail Privacy Protection fetches every image through Apple's network (17.0.0.0/8)
# with a bare "Mozilla/5.0" agent; other scanners name themselves.
_MACHINE_AGENTS = ("bot", "crawler", "spider", "preview", "scanner", "barracuda", "proofpoint")


def is_machine_open(*, user_agent: str, ip: str) -> bool:
    """Whether an open looks like a proxy prefetch rather than a person (Apple Mail
    Privacy Protection and link scanners); such opens are counted apart."""
    agent = (user_agent or "").strip()
    if ip.startswith("17.") or agent in ("", "Mozilla/5.0"):
        return True
    lower = agent.lower()
    return any(word in lower for word in _MACHINE_AGENTS)


def tracking_record(
    *, kind: str, task_id: int, contact_id: int, url: str = "", user_agent: str = "", ip: str = ""
) -> TrackingEvent:
    """Record one open or click (one insert, autocommit: the public endpoints answer
    fast and a tracking event needs no transaction with anything else)."""
    return TrackingEvent.objects.create(
        task_id=task_id,
        contact_id=contact_id,
        kind=kind,
        url=url[:4000],
        is_machine=kind == TrackingEvent.Kind.OPEN
        and is_machine_open(user_agent=user_agent, ip=ip),
        user_agent=(user_agent or "")[:255],
    )
