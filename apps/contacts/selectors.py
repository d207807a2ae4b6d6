"""Reads of contacts and tags shared by the API, the admin, the commands and other apps.

Every selector is owner-scoped: it takes the owner and never returns another owner's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Exists, F, OuterRef, Q, QuerySet

from apps.contacts.models import Contact, ContactImport, ContactTag, Tag


@dataclass(frozen=True)
class ContactFilter:
    """Which contacts of an owner: all of ``tags``, none of ``exclude_tags``, and optionally
    one ``status`` and a ``search`` text (e-mail or name, case-insensitive substring)."""

    tags: tuple[int, ...] = field(default_factory=tuple)
    exclude_tags: tuple[int, ...] = field(default_factory=tuple)
    status: str | None = None
    search: str | None = None

    @property
    def is_tag_only(self) -> bool:
        return bool(self.tags) and not self.status and not self.search


def tag_list(*, owner) -> QuerySet[Tag]:
    """The owner's tags by name; ``contact_count`` is exact and costs no COUNT."""
    return Tag.objects.filter(owner=owner).order_by("name")


def tag_get(*, owner, tag_id) -> Tag:
    """The owner's tag, or ``Tag.DoesNotExist`` (answered 404) for any other id."""
    return Tag.objects.get(owner=owner, pk=tag_id)


def contact_get(*, owner, contact_id) -> Contact:
    return Contact.objects.get(owner=owner, pk=contact_id)


def _membership(tag_id: int) -> Exists:
    return Exists(ContactTag.objects.filter(tag_id=tag_id, contact_id=OuterRef("pk")))


def contact_list(*, owner, filters: ContactFilter | None = None) -> QuerySet[Contact]:
    """The owner's contacts matching ``filters``; callers order by ``-id`` (keyset pages).

    The first required tag is a join, so the planner walks that tag's ``(tag, contact)``
    primary key in id order and a page of a 500,000-member tag reads ~50 index entries
    (order such a queryset by ``-member_id``; see below); further tags are semi-joins and
    excluded tags anti-joins on the same key.
    """
    filters = filters or ContactFilter()
    qs = Contact.objects.filter(owner=owner)
    if filters.tags:
        first, *others = filters.tags
        # ``member_id`` is the membership's copy of the contact id: keyset pages compare
        # and order on it, so a deep page starts its index range scan at the cursor
        # instead of walking the tag's key from the top (PostgreSQL does not carry
        # ``contact.id < X`` over the join to ``contacttag.contact_id``).
        qs = qs.filter(memberships__tag_id=first).annotate(member_id=F("memberships__contact_id"))
        for tag_id in others:
            qs = qs.filter(_membership(tag_id))
    for tag_id in filters.exclude_tags:
        qs = qs.exclude(_membership(tag_id))
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.search:
        text = filters.search.strip()
        qs = qs.filter(
            Q(email__icontains=text) | Q(first_name__icontains=text) | Q(last_name__icontains=text)
        )
    return qs


def contact_ids_sql(*, owner, filters: ContactFilter) -> tuple[str, list]:
    """SQL (and its parameters) selecting ``id`` of the owner's contacts matching ``filters``.

    Filters on tags alone are answered from the membership table only (index-only scans
    of the ``(tag, contact)`` key: "tag A and not tag B" never touches the contact rows);
    anything else goes through :func:`contact_list`. The tags must already be known to
    belong to the owner (the services check), which is what makes the first form
    owner-scoped.
    """
    if filters.is_tag_only:
        first, *others = filters.tags
        sql = ["SELECT m.contact_id AS id FROM contacts_contacttag m WHERE m.tag_id = %s"]
        params: list = [first]
        for tag_id in others:
            sql.append(
                "AND EXISTS (SELECT 1 FROM contacts_contacttag x"
                " WHERE x.tag_id = %s AND x.contact_id = m.contact_id)"
            )
            params.append(tag_id)
        for tag_id in filters.exclude_tags:
            sql.append(
                "AND NOT EXISTS (SELECT 1 FROM contacts_contacttag x"
                " WHERE x.tag_id = %s AND x.contact_id = m.contact_id)"
            )
            params.append(tag_id)
        return " ".join(sql), params
    query = contact_list(owner=owner, filters=filters).order_by().values("id").query
    sql, params = query.sql_with_params()
    return sql, list(params)


def contact_count_matching(*, owner, filters: ContactFilter) -> int:
    """How many of the owner's contacts match ``filters`` (an exact COUNT)."""
    from django.db import connection, transaction

    sql, params = contact_ids_sql(owner=owner, filters=filters)
    with transaction.atomic(), connection.cursor() as cursor:
        if filters.is_tag_only:
            prefer_merge_joins(cursor)
        cursor.execute(f"SELECT count(*) FROM ({sql}) s", params)
        return cursor.fetchone()[0]


def prefer_merge_joins(cursor) -> None:
    """For the rest of the transaction, join memberships by merging their index order.

    Tag-only filters read each tag's ``(tag, contact)`` key range, already sorted by
    contact id, so a merge (anti-)join is the natural plan; the planner tends to prefer a
    parallel hash join instead, measured 2-4x slower on a 500,000-member tag (and worse
    when the cores are busy). Must run inside a transaction (``SET LOCAL``).
    """
    cursor.execute("SET LOCAL enable_hashjoin = off")
    cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")


def import_list(*, owner) -> QuerySet[ContactImport]:
    return ContactImport.objects.filter(owner=owner).order_by("-id")


def import_get(*, owner, import_id) -> ContactImport:
    return ContactImport.objects.get(owner=owner, pk=import_id)


@dataclass(frozen=True)
class ConsistencyReport:
    """What ``check_tag_consistency`` found: (tag id, name, stored, real) per wrong count,
    and the number of rows pointing at nothing."""

    wrong_counts: list[tuple[int, str, int, int]]
    orphan_memberships: int
    cross_owner_memberships: int
    orphan_contacts: int

    @property
    def ok(self) -> bool:
        return not (
            self.wrong_counts
            or self.orphan_memberships
            or self.cross_owner_memberships
            or self.orphan_contacts
        )


def tag_consistency_report(*, owner=None) -> ConsistencyReport:
    """Compare every tag's ``contact_count`` with its memberships; find orphaned rows.

    Orphans are memberships whose tag or contact is gone, memberships joining a contact
    and a tag of different owners, and contacts whose owner is gone (the relation has no
    database foreign keys; see ``models``).
    """
    from django.db import connection

    where, params = ("WHERE t.owner_id = %s", [owner.pk]) if owner is not None else ("", [])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.id, t.name, t.contact_count, coalesce(m.n, 0) FROM contacts_tag t"
            " LEFT JOIN (SELECT tag_id, count(*) AS n FROM contacts_contacttag"
            " GROUP BY tag_id) m ON m.tag_id = t.id "
            + where
            + (" AND" if where else " WHERE")
            + " t.contact_count <> coalesce(m.n, 0) ORDER BY t.id",
            params,
        )
        wrong = [tuple(row) for row in cursor.fetchall()]
        cursor.execute(
            "SELECT count(*) FILTER (WHERE t.id IS NULL OR c.id IS NULL),"
            " count(*) FILTER (WHERE t.owner_id <> c.owner_id)"
            " FROM contacts_contacttag m"
            " LEFT JOIN contacts_tag t ON t.id = m.tag_id"
            " LEFT JOIN contacts_contact c ON c.id = m.contact_id"
        )
        orphans, cross = cursor.fetchone()
        cursor.execute(
            "SELECT count(*) FROM contacts_contact c WHERE NOT EXISTS"
            " (SELECT 1 FROM auth_user u WHERE u.id = c.owner_id)"
        )
        orphan_contacts = cursor.fetchone()[0]
    return ConsistencyReport(wrong, orphans, cross, orphan_contacts)
