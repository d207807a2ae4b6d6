"""Tags: create, rename or move, delete, merge, and get-or-create by name."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError, connection, transaction

from apps.contacts.models import Tag
from apps.contacts.services.sql import add_to_count, insert_members_sql, lock_tags
from apps.core.audit import event_append
from apps.core.errors import ApplicationError

MAX_TAG_NAME_LENGTH = 100


def clean_tag_name(name: object) -> str:
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
def tag_create(*, owner, name: str, parent: Tag | None = None, actor=None) -> Tag:
    """Create a tag; raises ``ApplicationError`` (field ``name``) when the name is taken."""
    name = clean_tag_name(name)
    _check_parent(owner, None, parent)
    if Tag.objects.filter(owner=owner, name=name).exists():
        raise ApplicationError(f"a tag named {name!r} already exists", field="name")
    try:
        with transaction.atomic():
            tag = Tag.objects.create(owner=owner, name=name, parent=parent)
    except IntegrityError as exc:
        raise ApplicationError(f"a tag named {name!r} already exists", field="name") from exc
    event_append(
        "tag.created",
        owner=owner,
        actor=actor,
        subject=tag,
        payload={"name": name, "parent": parent.pk if parent else None},
    )
    return tag


@transaction.atomic
def tag_update(
    *, tag: Tag, name: str | None = None, parent: Tag | bool | None = False, actor=None
) -> Tag:
    """Rename a tag and/or move it under ``parent`` (``None`` detaches; ``False`` keeps)."""
    old = {"name": tag.name, "parent": tag.parent_id}
    if name is not None:
        name = clean_tag_name(name)
        if Tag.objects.filter(owner_id=tag.owner_id, name=name).exclude(pk=tag.pk).exists():
            raise ApplicationError(f"a tag named {name!r} already exists", field="name")
        tag.name = name
    if parent is not False:
        _check_parent(tag.owner, tag, parent)
        tag.parent = parent
    tag.save(update_fields=["name", "parent", "updated_at"])
    event_append(
        "tag.changed",
        owner=tag.owner_id,
        actor=actor,
        subject=tag,
        payload={"old": old, "new": {"name": tag.name, "parent": tag.parent_id}},
    )
    return tag


@transaction.atomic
def tag_delete(*, tag: Tag, actor=None) -> int:
    """Delete a tag and its memberships (not the contacts); returns memberships removed."""
    with connection.cursor() as cursor:
        lock_tags(cursor, [tag.pk])
        cursor.execute("DELETE FROM contacts_contacttag WHERE tag_id = %s", [tag.pk])
        removed = cursor.rowcount
    event_append(
        "tag.deleted",
        owner=tag.owner_id,
        actor=actor,
        subject=tag,
        payload={"name": tag.name, "members_removed": removed},
    )
    tag.delete()
    return removed


@transaction.atomic
def tag_merge(*, source: Tag, target: Tag, actor=None) -> int:
    """Move every member of ``source`` into ``target`` and delete ``source``.

    Children of ``source`` move under ``target``. Returns how many contacts joined
    ``target`` (members of both are counted once).
    """
    if source.owner_id != target.owner_id:
        raise ApplicationError("unknown target tag", field="into")
    if source.pk == target.pk:
        raise ApplicationError("a tag cannot be merged into itself", field="into")
    with connection.cursor() as cursor:
        lock_tags(cursor, [source.pk, target.pk])
        members_sql = "SELECT contact_id AS id FROM contacts_contacttag WHERE tag_id = %s"
        cursor.execute(
            f"WITH ins AS ({insert_members_sql(members_sql)}) SELECT count(*) FROM ins",
            [target.pk, source.pk, target.pk],
        )
        added = cursor.fetchone()[0]
        add_to_count(cursor, target.pk, added)
        cursor.execute("DELETE FROM contacts_contacttag WHERE tag_id = %s", [source.pk])
    Tag.objects.filter(parent=source).update(parent=target)
    if target.parent_id == source.pk:
        Tag.objects.filter(pk=target.pk).update(parent=source.parent_id)
    event_append(
        "tag.deleted",
        owner=source.owner_id,
        actor=actor,
        subject=source,
        payload={"name": source.name, "merged_into": target.pk},
    )
    event_append(
        "tag.members_changed",
        owner=target.owner_id,
        actor=actor,
        subject=target,
        payload={"added": added, "removed": 0, "merged_from": source.pk},
    )
    source.delete()
    target.refresh_from_db()
    return added


def tags_get_or_create(*, owner, names: Iterable[str]) -> list[Tag]:
    """The owner's tags with these names, created when missing (safe under concurrency)."""
    clean = sorted({clean_tag_name(n) for n in names})
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
