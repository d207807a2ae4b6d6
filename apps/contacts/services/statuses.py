"""Contact statuses changed by other apps (unsubscribes, bounces, complaints, lifted
suppressions, the dispatcher's permanent failures): one statement that changes the rows
and appends one event per changed contact, so neither can happen without the other."""

from __future__ import annotations

import json
from collections.abc import Sequence

from django.db import connection

from apps.contacts.models import Contact
from apps.core.audit import actor_id
from apps.core.errors import ApplicationError
from apps.events.types import check_type

# The event a change to each status is recorded as.
STATUS_EVENTS = {
    Contact.Status.UNSUBSCRIBED: "contact.unsubscribed",
    Contact.Status.BOUNCED: "contact.bounced",
    Contact.Status.COMPLAINED: "contact.complained",
}


def contacts_mark_status(
    *,
    status: str,
    contact_ids: Sequence[int] | None = None,
    email: str | None = None,
    owner_id: int | None = None,
    only_from: Sequence[str] = (Contact.Status.ACTIVE,),
    actor=None,
    payload: dict | None = None,
) -> int:
    """Set ``status`` on the contacts with these ids, or with this ``email`` (of
    ``owner_id``, or of every owner when it is ``None``), that are in one of
    ``only_from`` now; one event each (``contact.bounced``, …; ``contact.changed`` for a
    return to ``active``) with ``actor``, in the same statement. Must run inside the
    caller's transaction. Returns how many contacts changed."""
    if status not in Contact.Status.values:
        raise ApplicationError(f"unknown status {status!r}", field="status")
    if (contact_ids is None) == (email is None):
        raise ValueError("give contact_ids or email")
    if not connection.in_atomic_block:
        raise RuntimeError("contacts_mark_status() must run inside the change's transaction")
    if contact_ids is not None:
        where, params = "id = ANY(%s::bigint[])", [list(contact_ids)]
    else:
        where, params = "email = %s", [email]
        if owner_id is not None:
            where, params = where + " AND owner_id = %s", [*params, owner_id]
    event_type = check_type(STATUS_EVENTS.get(status, "contact.changed"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH changed AS (
                UPDATE contacts_contact SET status = %s, updated_at = now()
                WHERE {where} AND status = ANY(%s::text[])
                RETURNING id, owner_id
            )
            INSERT INTO events_event (type, owner_id, actor_id, subject_type, subject_id,
                                      payload)
            SELECT %s, owner_id, %s, 'contacts.contact', id::text, %s::jsonb FROM changed
            """,
            [
                status,
                *params,
                list(only_from),
                event_type,
                actor_id(actor),
                json.dumps({"fields": ["status"], "status": status, **(payload or {})}),
            ],
        )
        return cursor.rowcount
