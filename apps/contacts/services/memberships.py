"""Memberships: adding contacts to and removing them from tags, counts included."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from apps.contacts.models import Tag
from apps.contacts.services.selection import ContactSelection, check_all_found, selection_sql
from apps.contacts.services.sql import (
    add_to_count,
    bound_cursor,
    insert_members_sql,
    lock_tags,
    tag_count,
)
from apps.core.audit import event_append


@dataclass(frozen=True)
class MembershipChange:
    matched: int
    changed: int
    # The tag's contact_count when the change committed.
    contact_count: int = 0


@transaction.atomic
def tag_add_contacts(*, tag: Tag, selection: ContactSelection, actor=None) -> MembershipChange:
    """Add the selected contacts of the tag's owner to ``tag``.

    Returns how many contacts matched and how many were not yet members (the increase of
    ``contact_count``). Unknown ids or e-mails raise ``ApplicationError`` and change
    nothing.
    """
    owner = tag.owner
    source_sql, params = selection_sql(owner=owner, selection=selection)
    with bound_cursor() as cursor:
        lock_tags(cursor, [tag.pk])
        # One statement: the inserted rows, not the requested ones, move the count.
        cursor.execute(
            f"WITH src AS MATERIALIZED ({source_sql}),"
            f" ins AS ({insert_members_sql('SELECT id FROM src')})"
            " SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM ins)",
            [*params, tag.pk, tag.pk],
        )
        matched, added = cursor.fetchone()
        check_all_found(owner=owner, selection=selection, matched=matched)
        add_to_count(cursor, tag.pk, added)
        count = tag_count(cursor, tag.pk)
    _members_changed(tag, actor, added=added, removed=0)
    return MembershipChange(matched=matched, changed=added, contact_count=count)


@transaction.atomic
def tag_remove_contacts(*, tag: Tag, selection: ContactSelection, actor=None) -> MembershipChange:
    """Remove the selected contacts from ``tag``; returns matched and removed counts."""
    owner = tag.owner
    source_sql, params = selection_sql(owner=owner, selection=selection)
    with bound_cursor() as cursor:
        lock_tags(cursor, [tag.pk])
        cursor.execute(
            f"WITH src AS MATERIALIZED ({source_sql}),"
            " gone AS (DELETE FROM contacts_contacttag m USING src"
            " WHERE m.tag_id = %s AND m.contact_id = src.id RETURNING 1)"
            " SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM gone)",
            [*params, tag.pk],
        )
        matched, removed = cursor.fetchone()
        check_all_found(owner=owner, selection=selection, matched=matched)
        add_to_count(cursor, tag.pk, -removed)
        count = tag_count(cursor, tag.pk)
    _members_changed(tag, actor, added=0, removed=removed)
    return MembershipChange(matched=matched, changed=removed, contact_count=count)


def _members_changed(tag: Tag, actor, *, added: int, removed: int) -> None:
    """``tag.members_changed`` with the counts (not the ids: a change may move 100,000)."""
    event_append(
        "tag.members_changed",
        owner=tag.owner_id,
        actor=actor,
        subject=tag,
        payload={"added": added, "removed": removed},
    )


def tag_add_contact_ids(*, tag_ids: Sequence[int], contact_ids_sql: str, params: list) -> None:
    """Add the contacts selected by ``contact_ids_sql`` to several tags (import, bulk).

    For internal callers that already checked ownership; must run inside their
    transaction. Tags are locked in id order first.
    """
    with bound_cursor() as cursor:
        lock_tags(cursor, tag_ids)
        for tag_id in sorted(tag_ids):
            # DISTINCT: the plain insert must not see an id twice (the callers' sources are
            # unique today; this keeps a duplicate from ever turning into an error).
            distinct_sql = f"SELECT DISTINCT id FROM ({contact_ids_sql}) AS ids"
            cursor.execute(
                f"WITH ins AS ({insert_members_sql(distinct_sql)}) SELECT count(*) FROM ins",
                [tag_id, *params, tag_id],
            )
            add_to_count(cursor, tag_id, cursor.fetchone()[0])
