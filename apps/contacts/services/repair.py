"""Repair of the contact↔tag relation: orphans removed, counts set to the truth."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, transaction

from apps.contacts.services.sql import lock_tags


@transaction.atomic
def tag_consistency_repair(*, tag_ids: Sequence[int] = ()) -> dict:
    """Delete orphaned rows and set ``contact_count`` of ``tag_ids`` to their real count.

    The tags are locked (id order) before they are recounted, so no membership change
    can slip between the count and its write. Returns how many rows of each kind changed.
    """
    recount = set(tag_ids)
    with connection.cursor() as cursor:
        lock_tags(cursor, recount)
        cursor.execute(
            "DELETE FROM contacts_contacttag m WHERE NOT EXISTS"
            " (SELECT 1 FROM contacts_tag t WHERE t.id = m.tag_id) OR NOT EXISTS"
            " (SELECT 1 FROM contacts_contact c WHERE c.id = m.contact_id) RETURNING m.tag_id"
        )
        touched = [row[0] for row in cursor.fetchall()]
        orphans = len(touched)
        cursor.execute(
            "DELETE FROM contacts_contacttag m USING contacts_tag t, contacts_contact c"
            " WHERE t.id = m.tag_id AND c.id = m.contact_id AND t.owner_id <> c.owner_id"
            " RETURNING m.tag_id"
        )
        cross_rows = [row[0] for row in cursor.fetchall()]
        cross = len(cross_rows)
        touched.extend(cross_rows)
        cursor.execute(
            "DELETE FROM contacts_contact c WHERE NOT EXISTS"
            " (SELECT 1 FROM auth_user u WHERE u.id = c.owner_id)"
        )
        orphan_contacts = cursor.rowcount
        # Tags that lost rows above are recounted too (locked now, in id order).
        lock_tags(cursor, set(touched) - recount)
        recount |= set(touched)
        cursor.execute(
            "UPDATE contacts_tag t SET contact_count = (SELECT count(*) FROM"
            " contacts_contacttag m WHERE m.tag_id = t.id), updated_at = now()"
            " WHERE t.id = ANY(%s::bigint[])",
            [sorted(recount)],
        )
        counts = cursor.rowcount
    return {
        "orphan_memberships": orphans,
        "cross_owner_memberships": cross,
        "orphan_contacts": orphan_contacts,
        "counts_fixed": counts,
    }
