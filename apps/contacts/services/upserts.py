"""Bulk create-or-update of contacts by e-mail (the API's bulk call, the demo)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from django.db import connection, transaction

from apps.contacts.models import Contact
from apps.contacts.services.contacts import clean_contact_fields
from apps.contacts.services.memberships import tag_add_contact_ids
from apps.contacts.services.sql import lock_tags
from apps.contacts.services.tags import tags_get_or_create
from apps.core.audit import events_append_ids
from apps.core.errors import ApplicationError
from apps.deliverability.selectors import new_contact_status_sql, suppressions_exist

MAX_BULK_ROWS = 10_000


class BulkValidationError(ApplicationError):
    """Some rows of a bulk call are invalid; nothing was written. ``rows`` lists them."""

    def __init__(self, rows: list[dict]):
        super().__init__(
            f"{len(rows)} row(s) are invalid; nothing was saved",
            field="contacts",
            code="invalid_rows",
        )
        self.rows = rows

    def as_dict(self) -> dict:
        body = super().as_dict()
        body["rows"] = self.rows
        return body


@transaction.atomic
def contacts_bulk_upsert(
    *,
    owner,
    rows: Sequence[object],
    tag_names: Sequence[str] = (),
    source: str = "api",
    actor=None,
) -> list[dict]:
    """Create or update up to 10,000 contacts by e-mail, all or nothing.

    A given ``first_name``/``last_name`` replaces the stored one; given ``attributes`` are
    merged into the stored ones; absent keys keep what is stored; an existing contact's
    status is never changed (an unsubscribed contact stays unsubscribed). Tags named in
    ``tag_names`` are created when missing and receive every row.

    Returns one ``{"index", "email", "id", "result"}`` per row, ``result`` being
    ``created``, ``updated`` or ``unchanged``. Raises :class:`BulkValidationError` listing
    every invalid row (index, e-mail, field → reason) and then nothing is written.
    Appends ``contact.created`` / ``contact.changed`` per row written, in one statement each.
    """
    if not isinstance(rows, list | tuple) or not rows:
        raise ApplicationError("give a non-empty list of contacts", field="contacts")
    if len(rows) > MAX_BULK_ROWS:
        raise ApplicationError(
            f"at most {MAX_BULK_ROWS} contacts per call (got {len(rows)})", field="contacts"
        )
    cleaned: list[dict] = []
    bad: list[dict] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            bad.append({"index": index, "errors": {"non_field_errors": "must be an object"}})
            continue
        clean, errors = clean_contact_fields(row, partial=False)
        clean.pop("status", None)
        errors.pop("status", None)
        email = clean.get("email")
        if email is not None and email in seen:
            errors["email"] = f"duplicate of row {seen[email]} in this call"
        if errors:
            bad.append({"index": index, "email": row.get("email"), "errors": errors})
            continue
        seen[email] = index
        cleaned.append(clean)
    if bad:
        raise BulkValidationError(bad)
    tags = tags_get_or_create(owner=owner, names=tag_names)
    if tags:
        # Tags before contacts: the lock order every writer follows (see contacts_delete).
        with connection.cursor() as cursor:
            lock_tags(cursor, [t.pk for t in tags])

    emails = [c["email"] for c in cleaned]
    existing = {
        c.email: c
        for c in Contact.objects.filter(owner=owner, email__in=emails).select_for_update()
    }
    firsts, lasts, attrs = [], [], []
    for clean in cleaned:
        old = existing.get(clean["email"])
        firsts.append(clean.get("first_name", old.first_name if old else ""))
        lasts.append(clean.get("last_name", old.last_name if old else ""))
        merged = {**(old.attributes if old else {}), **clean.get("attributes", {})}
        attrs.append(json.dumps(merged))
    with connection.cursor() as cursor:
        # Rows whose values are already stored are not written (no dead tuple, no
        # updated_at change): that is what makes a repeated call report "unchanged".
        # A new contact whose address unsubscribed, bounced or complained starts so.
        status = (
            new_contact_status_sql(owner="%s", email="r.email")
            if suppressions_exist(owner_id=owner.pk)
            else "'active'"
        )
        params = [owner.pk, *([owner.pk] if status != "'active'" else []), source]
        cursor.execute(
            "INSERT INTO contacts_contact AS c (owner_id, email, first_name, last_name,"
            " attributes, status, source, created_at, updated_at)"
            f" SELECT %s, r.email, r.first_name, r.last_name, r.attributes, {status}, %s,"
            " now(), now()"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[])"
            " AS r(email, first_name, last_name, attributes)"
            " ON CONFLICT (owner_id, email) DO UPDATE SET first_name = excluded.first_name,"
            " last_name = excluded.last_name, attributes = excluded.attributes,"
            " updated_at = now()"
            " WHERE (c.first_name, c.last_name, c.attributes)"
            " IS DISTINCT FROM (excluded.first_name, excluded.last_name, excluded.attributes)"
            " RETURNING c.id, c.email, (c.xmax = 0) AS inserted",
            [*params, emails, firsts, lasts, attrs],
        )
        written = {email: (pk, inserted) for pk, email, inserted in cursor.fetchall()}
    results = []
    for index, email in enumerate(emails):
        if email in written:
            pk, inserted = written[email]
            result = "created" if inserted else "updated"
        else:
            pk, result = existing[email].pk, "unchanged"
        results.append({"index": index, "email": email, "id": pk, "result": result})
    if tags:
        tag_add_contact_ids(
            tag_ids=[t.pk for t in tags],
            contact_ids_sql="SELECT unnest(%s::bigint[]) AS id",
            params=[sorted(r["id"] for r in results)],
        )
    for result, event_type in (("created", "contact.created"), ("updated", "contact.changed")):
        events_append_ids(
            event_type,
            subject_type="contacts.contact",
            ids=[r["id"] for r in results if r["result"] == result],
            owner=owner,
            actor=actor,
            payload={"source": source, "bulk": True},
        )
    return results
