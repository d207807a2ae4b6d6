"""Single contacts: create, change, delete; status of a selection of contacts."""

from __future__ import annotations

import json
from collections.abc import Sequence

from django.db import IntegrityError, transaction

from apps.contacts.emails import normalize_email
from apps.contacts.models import MAX_ATTRIBUTES_BYTES, MAX_NAME_LENGTH, Contact
from apps.contacts.services.memberships import tag_add_contact_ids
from apps.contacts.services.selection import ContactSelection, check_owned_tags, selection_sql
from apps.contacts.services.sql import add_to_count, bound_cursor
from apps.contacts.services.statuses import STATUS_EVENTS
from apps.core.audit import event_append, events_append_ids
from apps.core.errors import ApplicationError


def attributes_size(value: dict) -> int:
    """Bytes of ``value`` as UTF-8 JSON (what is stored, give or take jsonb's spacing)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def clean_contact_fields(data: dict, *, partial: bool) -> tuple[dict, dict]:
    """Validated fields and a dict of field → reason for what is wrong."""
    clean: dict = {}
    errors: dict = {}
    if "email" in data or not partial:
        email = normalize_email(data.get("email"))
        if email is None:
            errors["email"] = "enter a valid e-mail address"
        else:
            clean["email"] = email
    for name in ("first_name", "last_name"):
        if name in data:
            value = data[name]
            if value is None:
                value = ""
            if not isinstance(value, str):
                errors[name] = "must be a string"
            elif len(value) > MAX_NAME_LENGTH:
                errors[name] = f"at most {MAX_NAME_LENGTH} characters"
            else:
                clean[name] = value.strip()
    if "attributes" in data:
        value = data["attributes"]
        if value is None:
            value = {}
        if not isinstance(value, dict):
            errors["attributes"] = "must be a JSON object"
        elif attributes_size(value) > MAX_ATTRIBUTES_BYTES:
            errors["attributes"] = f"at most {MAX_ATTRIBUTES_BYTES} bytes as JSON"
        else:
            clean["attributes"] = value
    if "status" in data:
        if data["status"] not in Contact.Status.values:
            errors["status"] = f"must be one of {', '.join(Contact.Status.values)}"
        else:
            clean["status"] = data["status"]
    return clean, errors


def _raise_field_errors(errors: dict) -> None:
    if errors:
        name, reason = next(iter(errors.items()))
        raise ApplicationError(f"{name}: {reason}", field=name)


@transaction.atomic
def contact_create(
    *, owner, data: dict, tag_ids: Sequence[int] = (), source: str = "api", actor=None
) -> Contact:
    """Create one contact (e-mail normalised); ``ApplicationError`` if it exists already.
    Appends ``contact.created`` with ``actor``."""
    clean, errors = clean_contact_fields(data, partial=False)
    _raise_field_errors(errors)
    tag_ids = check_owned_tags(owner, tag_ids, field_name="tags")
    if Contact.objects.filter(owner=owner, email=clean["email"]).exists():
        raise ApplicationError("a contact with this e-mail already exists", field="email")
    suppressed = contact_suppressed_status(owner_id=owner.pk, email=clean["email"])
    if suppressed:
        clean["status"] = suppressed  # never silently active again
    try:
        with transaction.atomic():
            contact = Contact.objects.create(owner=owner, source=source, **clean)
    except IntegrityError as exc:
        raise ApplicationError("a contact with this e-mail already exists", field="email") from exc
    if tag_ids:
        tag_add_contact_ids(
            tag_ids=tag_ids, contact_ids_sql="SELECT %s::bigint AS id", params=[contact.pk]
        )
    event_append(
        "contact.created",
        owner=owner,
        actor=actor,
        subject=contact,
        payload={"email": contact.email, "source": source, "tags": sorted(tag_ids)},
    )
    return contact


@transaction.atomic
def contact_update(*, contact: Contact, data: dict, actor=None) -> Contact:
    """Change the given fields of a contact (e-mail re-normalised and kept unique).
    Appends ``contact.changed`` naming the changed fields (status changes are
    ``contact.unsubscribed`` and its kind when the new status says so)."""
    clean, errors = clean_contact_fields(data, partial=True)
    _raise_field_errors(errors)
    if "email" in clean and clean["email"] != contact.email:
        taken = Contact.objects.filter(owner_id=contact.owner_id, email=clean["email"])
        if taken.exclude(pk=contact.pk).exists():
            raise ApplicationError("a contact with this e-mail already exists", field="email")
    if clean.get("status") == Contact.Status.ACTIVE and contact.status != Contact.Status.ACTIVE:
        why = contact_suppressed_status(
            owner_id=contact.owner_id, email=clean.get("email", contact.email)
        )
        if why:
            raise ApplicationError(
                f"this address is suppressed ({why}); only an operator can lift that",
                field="status",
            )
    changed = sorted(name for name, value in clean.items() if getattr(contact, name) != value)
    for name, value in clean.items():
        setattr(contact, name, value)
    contact.save()
    event_append(
        STATUS_EVENTS.get(clean.get("status"), "contact.changed")
        if "status" in changed
        else "contact.changed",
        owner=contact.owner_id,
        actor=actor,
        subject=contact,
        payload={"fields": changed, "status": contact.status},
    )
    return contact


def contact_suppressed_status(*, owner_id: int, email: str) -> str | None:
    """The status an address's suppression stands for (unsubscribed, bounced,
    complained), or None when it is not suppressed that way."""
    from apps.deliverability.selectors import suppression_for
    from apps.deliverability.services import STATUS_OF_REASON

    suppression = suppression_for(owner_id=owner_id, email=email)
    if suppression is None or not suppression.email:
        return None
    return STATUS_OF_REASON.get(suppression.reason)


@transaction.atomic
def contacts_delete(*, owner, contact_ids: Sequence[int], actor=None) -> int:
    """Delete the owner's contacts with these ids and their memberships; returns how many.
    Appends one ``contact.deleted`` per contact, in one statement.

    The contacts' tags are locked in id order before their rows go, and each tag's count
    drops by the memberships actually deleted.
    """
    ids = sorted({int(i) for i in contact_ids})
    with bound_cursor() as cursor:
        # All the owner's tags first (the global lock order is tags, then contacts): a
        # concurrent tagging of these contacts either committed before (and its rows are
        # deleted here) or starts after and no longer finds them. Without the foreign
        # keys, that ordering is what keeps orphaned memberships from appearing.
        cursor.execute(
            "SELECT id FROM contacts_tag WHERE owner_id = %s ORDER BY id FOR UPDATE", [owner.pk]
        )
        cursor.execute(
            "SELECT id FROM contacts_contact WHERE owner_id = %s AND id = ANY(%s::bigint[])"
            " ORDER BY id FOR UPDATE",
            [owner.pk, ids],
        )
        ids = [row[0] for row in cursor.fetchall()]
        if not ids:
            return 0
        cursor.execute(
            "WITH gone AS (DELETE FROM contacts_contacttag WHERE contact_id = ANY(%s::bigint[])"
            " RETURNING tag_id) SELECT tag_id, count(*) FROM gone GROUP BY tag_id ORDER BY 1",
            [ids],
        )
        for tag_id, removed in cursor.fetchall():
            add_to_count(cursor, tag_id, -removed)
        cursor.execute("DELETE FROM contacts_contact WHERE id = ANY(%s::bigint[])", [ids])
        deleted = cursor.rowcount
    events_append_ids(
        "contact.deleted", subject_type="contacts.contact", ids=ids, owner=owner, actor=actor
    )
    return deleted


def contact_delete(*, contact: Contact, actor=None) -> None:
    contacts_delete(owner=contact.owner, contact_ids=[contact.pk], actor=actor)


@transaction.atomic
def contacts_set_status(*, owner, selection: ContactSelection, status: str, actor=None) -> int:
    """Set ``status`` (e.g. unsubscribed) on the selected contacts; returns rows changed.
    Appends one event per changed contact (``contact.unsubscribed``, …), in one statement."""
    if status not in Contact.Status.values:
        raise ApplicationError(f"unknown status {status!r}", field="status")
    source_sql, params = selection_sql(owner=owner, selection=selection)
    with bound_cursor() as cursor:
        cursor.execute(
            f"UPDATE contacts_contact SET status = %s, updated_at = now()"
            f" WHERE id IN ({source_sql}) AND status <> %s RETURNING id",
            [status, *params, status],
        )
        ids = [row[0] for row in cursor.fetchall()]
    events_append_ids(
        STATUS_EVENTS.get(status, "contact.changed"),
        subject_type="contacts.contact",
        ids=ids,
        owner=owner,
        actor=actor,
        payload={"fields": ["status"], "status": status},
    )
    return len(ids)
