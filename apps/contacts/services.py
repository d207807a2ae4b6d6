"""Writes of contacts and tags. Every membership change goes through this module.

Locking rule (why counts never drift and never deadlock): a transaction that changes the
membership of tags first locks those tag rows ``FOR UPDATE`` in id order, then changes
``contacts_contacttag`` with one set-based statement whose ``RETURNING`` rows are exactly
the rows it inserted or deleted, and adds that number to ``contact_count`` before it
commits. Concurrent changes of one tag therefore run one after the other, and two
transactions that touch several tags wait for each other in the same order.

Inserts of memberships are plain ``INSERT … SELECT`` of the rows that are not yet members
(an anti-join on the ``(tag, contact)`` primary key), not ``ON CONFLICT DO NOTHING``: the
speculative insertion of ``ON CONFLICT`` was over a quarter of the database time of tagging
100,000 contacts. It is exact because it runs after the tag lock: in READ COMMITTED the
statement's snapshot is taken once the lock is held, so it sees every membership of that
tag that any earlier writer committed, and no other writer of the tag can run until this
transaction ends. Were a writer ever to skip the lock, the primary key would still refuse
the duplicate (an error, never a wrong count).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

import psycopg
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.contacts.emails import normalize_email
from apps.contacts.models import Contact, ContactImport, Tag
from apps.contacts.selectors import ContactFilter, contact_ids_sql, prefer_merge_joins
from apps.core.errors import ApplicationError

MAX_BULK_ROWS = 10_000
MAX_NAME_LENGTH = 150
MAX_TAG_NAME_LENGTH = 100


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


@dataclass(frozen=True)
class ContactSelection:
    """Contacts of one owner chosen by ids, by e-mail addresses, or by a filter."""

    ids: Sequence[int] | None = None
    emails: Sequence[str] | None = None
    filters: ContactFilter | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("ids", "emails", "filters") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ApplicationError(
                "give exactly one of contact_ids, emails or filter", field="contacts"
            )

    @cached_property
    def unique_ids(self) -> list[int]:
        """``ids`` as ints, without repeats, sorted; computed once per selection."""
        return sorted({int(i) for i in self.ids or ()})


# --- helpers -------------------------------------------------------------------------


@contextmanager
def _bound_cursor() -> Iterator[psycopg.Cursor]:
    """A cursor on Django's connection (so inside its transaction) that binds parameters
    on the server. Django's default cursor inlines them into the SQL text: a list of
    100,000 ids would become a literal that PostgreSQL spends ~0.3 s parsing and planning.
    """
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def _bigint_array(ids: Sequence[int]) -> str:
    """``ids`` (ints) as the text of a PostgreSQL array, to bind as ``%s::bigint[]``.

    psycopg's adaptation of a Python list costs ~1.5-3 µs per element here (0.15-0.3 s of
    client time for 100,000 ids); joining the text costs ~0.3 µs, and the server parses it
    in a few milliseconds.
    """
    return "{" + ",".join(map(str, ids)) + "}"


def _lock_tags(cursor, tag_ids: Iterable[int]) -> None:
    # Id order is the global lock order of tags (see the module docstring).
    cursor.execute(
        "SELECT id FROM contacts_tag WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE",
        [sorted(set(tag_ids))],
    )


def _add_to_count(cursor, tag_id: int, delta: int) -> None:
    if delta:
        cursor.execute(
            "UPDATE contacts_tag SET contact_count = contact_count + %s, updated_at = now()"
            " WHERE id = %s",
            [delta, tag_id],
        )


def _insert_members_sql(source_sql: str) -> str:
    """``INSERT`` into the tag (first parameter) the ids of ``source_sql`` (its rows, one
    column ``id``, unique) that are not members yet (the tag id again as the last
    parameter), in id order, ``RETURNING 1`` per inserted row. Run only under the tag's
    row lock (see the module docstring)."""
    return (
        "INSERT INTO contacts_contacttag (tag_id, contact_id)"
        f" SELECT %s, src.id FROM ({source_sql}) AS src"
        " WHERE NOT EXISTS (SELECT 1 FROM contacts_contacttag m"
        " WHERE m.tag_id = %s AND m.contact_id = src.id)"
        " ORDER BY src.id RETURNING 1"
    )


def _check_owned_tags(owner, tag_ids: Iterable[int], *, field_name: str) -> list[int]:
    ids = sorted({int(t) for t in tag_ids})
    found = set(Tag.objects.filter(owner=owner, pk__in=ids).values_list("pk", flat=True))
    missing = [t for t in ids if t not in found]
    if missing:
        raise ApplicationError(f"unknown tag id(s): {missing[:20]}", field=field_name)
    return ids


def _selection_sql(*, owner, selection: ContactSelection) -> tuple[str, list]:
    if selection.ids is not None:
        ids = selection.unique_ids
        # One sorted array, unnested and merge-joined with the owner's (owner, id) index:
        # `id = ANY(array)` made PostgreSQL plan with 100,000 constants (~30 ms) and then
        # scan the whole contact table with a hashed filter (~0.5 s for 100,000 ids).
        return (
            "SELECT c.id FROM unnest(%s::bigint[]) AS u(id)"
            " JOIN contacts_contact c ON c.id = u.id WHERE c.owner_id = %s",
            [_bigint_array(ids), owner.pk],
        )
    if selection.emails is not None:
        emails = sorted({(e or "").strip().lower() for e in selection.emails})
        return (
            "SELECT id FROM contacts_contact WHERE owner_id = %s AND email = ANY(%s::text[])",
            [owner.pk, emails],
        )
    filters = selection.filters
    _check_owned_tags(owner, (*filters.tags, *filters.exclude_tags), field_name="filter")
    if filters.is_tag_only:
        with connection.cursor() as cursor:
            prefer_merge_joins(cursor)
    return contact_ids_sql(owner=owner, filters=filters)


def _check_all_found(*, owner, selection: ContactSelection, matched: int) -> None:
    """All-or-nothing for explicit lists: an id or e-mail the owner lacks is an error."""
    if selection.ids is not None:
        if matched == len(selection.unique_ids):
            return
        wanted = set(selection.unique_ids)
        found = set(Contact.objects.filter(owner=owner, pk__in=wanted).values_list("pk", flat=True))
        missing = sorted(wanted - found)
        raise ApplicationError(f"unknown contact id(s): {missing[:20]}", field="contact_ids")
    if selection.emails is not None:
        wanted = {(e or "").strip().lower() for e in selection.emails}
        if matched == len(wanted):
            return
        found = set(
            Contact.objects.filter(owner=owner, email__in=wanted).values_list("email", flat=True)
        )
        missing = sorted(wanted - found)
        raise ApplicationError(f"unknown e-mail(s): {missing[:20]}", field="emails")


# --- tags ----------------------------------------------------------------------------


def _clean_tag_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ApplicationError("a tag name must be a non-empty string", field="name")
    name = name.strip()
    if len(name) > MAX_TAG_NAME_LENGTH:
        raise ApplicationError(
            f"a tag name has at most {MAX_TAG_NAME_LENGTH} characters", field="name"
        )
    return name


def _check_parent(owner, tag: Tag | None, parent: Tag | None) -> None:
    if parent is None:
        return
    if parent.owner_id != owner.pk:
        raise ApplicationError("unknown parent tag", field="parent")
    node: Tag | None = parent
    while node is not None and tag is not None:
        if node.pk == tag.pk:
            raise ApplicationError("a tag cannot be its own ancestor", field="parent")
        node = node.parent


@transaction.atomic
def tag_create(*, owner, name: str, parent: Tag | None = None) -> Tag:
    """Create a tag; raises ``ApplicationError`` (field ``name``) when the name is taken."""
    name = _clean_tag_name(name)
    _check_parent(owner, None, parent)
    if Tag.objects.filter(owner=owner, name=name).exists():
        raise ApplicationError(f"a tag named {name!r} already exists", field="name")
    try:
        with transaction.atomic():
            return Tag.objects.create(owner=owner, name=name, parent=parent)
    except IntegrityError as exc:
        raise ApplicationError(f"a tag named {name!r} already exists", field="name") from exc


@transaction.atomic
def tag_update(*, tag: Tag, name: str | None = None, parent: Tag | bool | None = False) -> Tag:
    """Rename a tag and/or move it under ``parent`` (``None`` detaches; ``False`` keeps)."""
    if name is not None:
        name = _clean_tag_name(name)
        if Tag.objects.filter(owner_id=tag.owner_id, name=name).exclude(pk=tag.pk).exists():
            raise ApplicationError(f"a tag named {name!r} already exists", field="name")
        tag.name = name
    if parent is not False:
        _check_parent(tag.owner, tag, parent)
        tag.parent = parent
    tag.save(update_fields=["name", "parent", "updated_at"])
    return tag


@transaction.atomic
def tag_delete(*, tag: Tag) -> int:
    """Delete a tag and its memberships (not the contacts); returns memberships removed."""
    with connection.cursor() as cursor:
        _lock_tags(cursor, [tag.pk])
        cursor.execute("DELETE FROM contacts_contacttag WHERE tag_id = %s", [tag.pk])
        removed = cursor.rowcount
    tag.delete()
    return removed


@transaction.atomic
def tag_merge(*, source: Tag, target: Tag) -> int:
    """Move every member of ``source`` into ``target`` and delete ``source``.

    Children of ``source`` move under ``target``. Returns how many contacts joined
    ``target`` (members of both are counted once).
    """
    if source.owner_id != target.owner_id:
        raise ApplicationError("unknown target tag", field="into")
    if source.pk == target.pk:
        raise ApplicationError("a tag cannot be merged into itself", field="into")
    with connection.cursor() as cursor:
        _lock_tags(cursor, [source.pk, target.pk])
        members_sql = "SELECT contact_id AS id FROM contacts_contacttag WHERE tag_id = %s"
        cursor.execute(
            f"WITH ins AS ({_insert_members_sql(members_sql)}) SELECT count(*) FROM ins",
            [target.pk, source.pk, target.pk],
        )
        added = cursor.fetchone()[0]
        _add_to_count(cursor, target.pk, added)
        cursor.execute("DELETE FROM contacts_contacttag WHERE tag_id = %s", [source.pk])
    Tag.objects.filter(parent=source).update(parent=target)
    if target.parent_id == source.pk:
        Tag.objects.filter(pk=target.pk).update(parent=source.parent_id)
    source.delete()
    target.refresh_from_db()
    return added


def tags_get_or_create(*, owner, names: Iterable[str]) -> list[Tag]:
    """The owner's tags with these names, created when missing (safe under concurrency)."""
    clean = sorted({_clean_tag_name(n) for n in names})
    if not clean:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO contacts_tag (owner_id, name, contact_count, created_at, updated_at)"
            " SELECT %s, n, 0, now(), now() FROM unnest(%s::text[]) AS n"
            " ON CONFLICT (owner_id, name) DO NOTHING",
            [owner.pk, clean],
        )
    return list(Tag.objects.filter(owner=owner, name__in=clean).order_by("pk"))


# --- membership ----------------------------------------------------------------------


@dataclass(frozen=True)
class MembershipChange:
    matched: int
    changed: int


@transaction.atomic
def tag_add_contacts(*, tag: Tag, selection: ContactSelection) -> MembershipChange:
    """Add the selected contacts of the tag's owner to ``tag``.

    Returns how many contacts matched and how many were not yet members (the increase of
    ``contact_count``). Unknown ids or e-mails raise ``ApplicationError`` and change
    nothing.
    """
    owner = tag.owner
    source_sql, params = _selection_sql(owner=owner, selection=selection)
    with _bound_cursor() as cursor:
        _lock_tags(cursor, [tag.pk])
        # One statement: the inserted rows, not the requested ones, move the count.
        cursor.execute(
            f"WITH src AS MATERIALIZED ({source_sql}),"
            f" ins AS ({_insert_members_sql('SELECT id FROM src')})"
            " SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM ins)",
            [*params, tag.pk, tag.pk],
        )
        matched, added = cursor.fetchone()
        _check_all_found(owner=owner, selection=selection, matched=matched)
        _add_to_count(cursor, tag.pk, added)
    return MembershipChange(matched=matched, changed=added)


@transaction.atomic
def tag_remove_contacts(*, tag: Tag, selection: ContactSelection) -> MembershipChange:
    """Remove the selected contacts from ``tag``; returns matched and removed counts."""
    owner = tag.owner
    source_sql, params = _selection_sql(owner=owner, selection=selection)
    with _bound_cursor() as cursor:
        _lock_tags(cursor, [tag.pk])
        cursor.execute(
            f"WITH src AS MATERIALIZED ({source_sql}),"
            " gone AS (DELETE FROM contacts_contacttag m USING src"
            " WHERE m.tag_id = %s AND m.contact_id = src.id RETURNING 1)"
            " SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM gone)",
            [*params, tag.pk],
        )
        matched, removed = cursor.fetchone()
        _check_all_found(owner=owner, selection=selection, matched=matched)
        _add_to_count(cursor, tag.pk, -removed)
    return MembershipChange(matched=matched, changed=removed)


def tag_add_contact_ids(*, tag_ids: Sequence[int], contact_ids_sql: str, params: list) -> None:
    """Add the contacts selected by ``contact_ids_sql`` to several tags (import, bulk).

    For internal callers that already checked ownership; must run inside their
    transaction. Tags are locked in id order first.
    """
    with _bound_cursor() as cursor:
        _lock_tags(cursor, tag_ids)
        for tag_id in sorted(tag_ids):
            # DISTINCT: the plain insert must not see an id twice (the callers' sources are
            # unique today; this keeps a duplicate from ever turning into an error).
            distinct_sql = f"SELECT DISTINCT id FROM ({contact_ids_sql}) AS ids"
            cursor.execute(
                f"WITH ins AS ({_insert_members_sql(distinct_sql)}) SELECT count(*) FROM ins",
                [tag_id, *params, tag_id],
            )
            _add_to_count(cursor, tag_id, cursor.fetchone()[0])


# --- contacts ------------------------------------------------------------------------


def _clean_contact_fields(data: dict, *, partial: bool) -> tuple[dict, dict]:
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
    *, owner, data: dict, tag_ids: Sequence[int] = (), source: str = "api"
) -> Contact:
    """Create one contact (e-mail normalised); ``ApplicationError`` if it exists already."""
    clean, errors = _clean_contact_fields(data, partial=False)
    _raise_field_errors(errors)
    tag_ids = _check_owned_tags(owner, tag_ids, field_name="tags")
    if Contact.objects.filter(owner=owner, email=clean["email"]).exists():
        raise ApplicationError("a contact with this e-mail already exists", field="email")
    try:
        with transaction.atomic():
            contact = Contact.objects.create(owner=owner, source=source, **clean)
    except IntegrityError as exc:
        raise ApplicationError("a contact with this e-mail already exists", field="email") from exc
    if tag_ids:
        tag_add_contact_ids(
            tag_ids=tag_ids, contact_ids_sql="SELECT %s::bigint AS id", params=[contact.pk]
        )
    return contact


@transaction.atomic
def contact_update(*, contact: Contact, data: dict) -> Contact:
    """Change the given fields of a contact (e-mail re-normalised and kept unique)."""
    clean, errors = _clean_contact_fields(data, partial=True)
    _raise_field_errors(errors)
    if "email" in clean and clean["email"] != contact.email:
        taken = Contact.objects.filter(owner_id=contact.owner_id, email=clean["email"])
        if taken.exclude(pk=contact.pk).exists():
            raise ApplicationError("a contact with this e-mail already exists", field="email")
    for name, value in clean.items():
        setattr(contact, name, value)
    contact.save()
    return contact


@transaction.atomic
def contacts_delete(*, owner, contact_ids: Sequence[int]) -> int:
    """Delete the owner's contacts with these ids and their memberships; returns how many.

    The contacts' tags are locked in id order before their rows go, and each tag's count
    drops by the memberships actually deleted.
    """
    ids = sorted({int(i) for i in contact_ids})
    with _bound_cursor() as cursor:
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
            _add_to_count(cursor, tag_id, -removed)
        cursor.execute("DELETE FROM contacts_contact WHERE id = ANY(%s::bigint[])", [ids])
        return cursor.rowcount


def contact_delete(*, contact: Contact) -> None:
    contacts_delete(owner=contact.owner, contact_ids=[contact.pk])


@transaction.atomic
def contacts_set_status(*, owner, selection: ContactSelection, status: str) -> int:
    """Set ``status`` (e.g. unsubscribed) on the selected contacts; returns rows changed."""
    if status not in Contact.Status.values:
        raise ApplicationError(f"unknown status {status!r}", field="status")
    source_sql, params = _selection_sql(owner=owner, selection=selection)
    with _bound_cursor() as cursor:
        cursor.execute(
            f"UPDATE contacts_contact SET status = %s, updated_at = now()"
            f" WHERE id IN ({source_sql}) AND status <> %s",
            [status, *params, status],
        )
        return cursor.rowcount


@transaction.atomic
def contacts_bulk_upsert(
    *, owner, rows: Sequence[object], tag_names: Sequence[str] = (), source: str = "api"
) -> list[dict]:
    """Create or update up to 10,000 contacts by e-mail, all or nothing.

    A given ``first_name``/``last_name`` replaces the stored one; given ``attributes`` are
    merged into the stored ones; absent keys keep what is stored; an existing contact's
    status is never changed (an unsubscribed contact stays unsubscribed). Tags named in
    ``tag_names`` are created when missing and receive every row.

    Returns one ``{"index", "email", "id", "result"}`` per row, ``result`` being
    ``created``, ``updated`` or ``unchanged``. Raises :class:`BulkValidationError` listing
    every invalid row (index, e-mail, field → reason) and then nothing is written.
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
        clean, errors = _clean_contact_fields(row, partial=False)
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
            _lock_tags(cursor, [t.pk for t in tags])

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
        cursor.execute(
            "INSERT INTO contacts_contact AS c (owner_id, email, first_name, last_name,"
            " attributes, status, source, created_at, updated_at)"
            " SELECT %s, r.email, r.first_name, r.last_name, r.attributes, 'active', %s,"
            " now(), now()"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[])"
            " AS r(email, first_name, last_name, attributes)"
            " ON CONFLICT (owner_id, email) DO UPDATE SET first_name = excluded.first_name,"
            " last_name = excluded.last_name, attributes = excluded.attributes,"
            " updated_at = now()"
            " WHERE (c.first_name, c.last_name, c.attributes)"
            " IS DISTINCT FROM (excluded.first_name, excluded.last_name, excluded.attributes)"
            " RETURNING c.id, c.email, (c.xmax = 0) AS inserted",
            [owner.pk, source, emails, firsts, lasts, attrs],
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
    return results


# --- CSV import jobs -----------------------------------------------------------------


def contact_import_create(*, owner, uploaded_file, tag_names: Sequence[str] = ()) -> ContactImport:
    """Store an uploaded CSV and queue its import as a django-q2 job.

    The header is checked now, so a file that is empty, not CSV or without an e-mail
    column is refused at once (``ApplicationError`` on ``file``) and nothing is stored.
    The job is queued when the surrounding transaction commits.
    """
    from apps.contacts.csv_import import ImportFileError, read_header

    if uploaded_file is None:
        raise ApplicationError("upload a CSV file", field="file")
    names = sorted({_clean_tag_name(n) for n in tag_names})
    try:
        read_header(uploaded_file)
    except ImportFileError as exc:
        raise ApplicationError(str(exc), field="file") from exc
    with transaction.atomic():
        job = ContactImport.objects.create(
            owner=owner,
            file=uploaded_file,
            original_name=(getattr(uploaded_file, "name", "") or "")[:255],
            tag_names=names,
            bytes_total=uploaded_file.size or 0,
        )
        transaction.on_commit(lambda: _enqueue_import(job.pk))
    return job


def _enqueue_import(import_id: int) -> None:
    from django_q.tasks import async_task

    async_task(
        "apps.contacts.tasks.run_contact_import", import_id, task_name=f"contact-import-{import_id}"
    )


def contact_import_run(*, import_id: int, progress=None) -> ContactImport | None:
    """Run a queued import once. Returns the job, or ``None`` if it was already claimed.

    The claim is a conditional UPDATE (pending → running): a duplicated or retried q2
    job finds it taken and does nothing.
    """
    from apps.contacts.csv_import import run_import

    claimed = ContactImport.objects.filter(
        pk=import_id, status=ContactImport.Status.PENDING
    ).update(status=ContactImport.Status.RUNNING, started_at=timezone.now())
    if claimed != 1:
        return None
    job = ContactImport.objects.select_related("owner").get(pk=import_id)
    try:
        stored = job.file.open("rb")
    except OSError as exc:
        ContactImport.objects.filter(pk=job.pk).update(
            status=ContactImport.Status.FAILED,
            error=f"the uploaded file cannot be read: {exc.strerror or exc}",
            finished_at=timezone.now(),
        )
        job.refresh_from_db()
        return job
    with stored:
        # The storage's own file object when there is one: faster line reads.
        return run_import(job, getattr(stored, "file", stored), progress=progress)


def contact_imports_fail_stale(*, older_than_seconds: int) -> int:
    """Mark imports still ``running`` after ``older_than_seconds`` as failed.

    A job runs longer than the q2 ``timeout`` only if its worker was killed; what it
    counted is stored (counters commit with their rows) and importing the same file again
    finishes it, leaving the rows already imported unchanged. Returns how many were marked.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return ContactImport.objects.filter(
        status=ContactImport.Status.RUNNING, started_at__lt=cutoff
    ).update(
        status=ContactImport.Status.FAILED,
        error="interrupted: the import stopped before the end of the file; the counted rows"
        " are stored, import the file again to finish it",
        finished_at=timezone.now(),
    )


def contacts_import_file(
    *, owner, path: str, tag_names: Sequence[str] = (), progress=None
) -> ContactImport:
    """Import a CSV file from the local disk now (``manage.py import_contacts``).

    Raises ``ApplicationError`` (field ``file``) for a file-level problem; then nothing is
    imported. Otherwise returns the completed job with its counters.
    """
    from apps.contacts.csv_import import ImportFileError, read_header, run_import

    names = sorted({_clean_tag_name(n) for n in tag_names})
    with open(path, "rb") as stream:
        try:
            read_header(stream)
        except ImportFileError as exc:
            raise ApplicationError(str(exc), field="file") from exc
        size = os.fstat(stream.fileno()).st_size
        job = ContactImport.objects.create(
            owner=owner,
            original_name=os.path.basename(path)[:255],
            tag_names=names,
            bytes_total=size,
            status=ContactImport.Status.RUNNING,
            started_at=timezone.now(),
        )
        return run_import(job, stream, progress=progress)


# --- consistency ---------------------------------------------------------------------


@transaction.atomic
def tag_consistency_repair(*, tag_ids: Sequence[int] = ()) -> dict:
    """Delete orphaned rows and set ``contact_count`` of ``tag_ids`` to their real count.

    The tags are locked (id order) before they are recounted, so no membership change
    can slip between the count and its write. Returns how many rows of each kind changed.
    """
    recount = set(tag_ids)
    with connection.cursor() as cursor:
        _lock_tags(cursor, recount)
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
        _lock_tags(cursor, set(touched) - recount)
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
