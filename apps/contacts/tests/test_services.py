from __future__ import annotations

import pytest
from django.db import transaction

from apps.contacts.models import Contact, ContactTag, Tag
from apps.contacts.selectors import ContactFilter, contact_count_matching, contact_list
from apps.contacts.services import (
    BulkValidationError,
    ContactSelection,
    contact_create,
    contact_delete,
    contact_update,
    contacts_bulk_upsert,
    contacts_set_status,
    tag_add_contact_ids,
    tag_add_contacts,
    tag_create,
    tag_delete,
    tag_merge,
    tag_remove_contacts,
    tag_update,
)
from apps.core.errors import ApplicationError

pytestmark = pytest.mark.django_db


def members(tag: Tag) -> set[int]:
    return set(ContactTag.objects.filter(tag=tag).values_list("contact_id", flat=True))


def test_contact_create_normalises_the_email_and_refuses_a_case_variant(user):
    contact = contact_create(owner=user, data={"email": "  Ada@Example.COM ", "first_name": "Ada"})
    assert contact.email == "ada@example.com"
    with pytest.raises(ApplicationError, match="already exists"):
        contact_create(owner=user, data={"email": "ADA@example.com"})


def test_contact_create_rejects_an_invalid_email(user):
    with pytest.raises(ApplicationError, match="valid e-mail") as info:
        contact_create(owner=user, data={"email": "not-an-address"})
    assert info.value.field == "email"
    assert not Contact.objects.exists()


def test_contact_create_with_tags_counts_them(user, make_tag):
    tag = make_tag("customers")
    contact = contact_create(owner=user, data={"email": "a@example.com"}, tag_ids=[tag.pk])
    tag.refresh_from_db()
    assert tag.contact_count == 1 and members(tag) == {contact.pk}


def test_the_same_email_may_belong_to_two_owners(user, other_user):
    contact_create(owner=user, data={"email": "a@example.com"})
    contact_create(owner=other_user, data={"email": "a@example.com"})
    assert Contact.objects.filter(email="a@example.com").count() == 2


def test_contact_update_changes_given_fields_and_keeps_emails_unique(user, make_contacts):
    first, second = make_contacts(2)
    contact_update(contact=first, data={"last_name": "Lovelace", "attributes": {"plan": "pro"}})
    first.refresh_from_db()
    assert (first.last_name, first.attributes) == ("Lovelace", {"plan": "pro"})
    with pytest.raises(ApplicationError, match="already exists"):
        contact_update(contact=first, data={"email": second.email.upper()})


def test_contact_delete_removes_memberships_and_lowers_counts(user, make_contacts, make_tag):
    contacts = make_contacts(3)
    tag_a = make_tag(members=contacts)
    tag_b = make_tag(members=contacts[:1])
    contact_delete(contact=contacts[0])
    tag_a.refresh_from_db()
    tag_b.refresh_from_db()
    assert (tag_a.contact_count, tag_b.contact_count) == (2, 0)
    assert not ContactTag.objects.filter(contact_id=contacts[0].pk).exists()


def test_add_by_ids_counts_only_new_members(user, make_contacts, make_tag):
    contacts = make_contacts(5)
    tag = make_tag(members=contacts[:2])
    change = tag_add_contacts(tag=tag, selection=ContactSelection(ids=[c.pk for c in contacts]))
    tag.refresh_from_db()
    assert (change.matched, change.changed) == (5, 3)
    assert tag.contact_count == 5 == len(members(tag))


def test_add_with_repeated_ids_and_again_adds_each_contact_once(user, make_contacts, make_tag):
    contacts = make_contacts(3)
    tag = make_tag(members=contacts[:1])
    ids = [c.pk for c in contacts] * 2
    change = tag_add_contacts(tag=tag, selection=ContactSelection(ids=ids))
    assert (change.matched, change.changed) == (3, 2)
    again = tag_add_contacts(tag=tag, selection=ContactSelection(ids=list(reversed(ids))))
    assert (again.matched, again.changed) == (3, 0)
    tag.refresh_from_db()
    assert tag.contact_count == 3 == len(members(tag))


def test_adding_a_tags_own_members_to_it_changes_nothing(user, make_contacts, make_tag):
    contacts = make_contacts(3)
    tag = make_tag(members=contacts[:2])
    change = tag_add_contacts(
        tag=tag, selection=ContactSelection(filters=ContactFilter(tags=(tag.pk,)))
    )
    assert (change.matched, change.changed) == (2, 0)
    tag.refresh_from_db()
    assert tag.contact_count == 2 == len(members(tag))


def test_internal_add_of_a_source_repeating_an_id_inserts_it_once(user, make_contacts, make_tag):
    contacts = make_contacts(2)
    first, second = make_tag(members=contacts[:1]), make_tag()
    ids = [contacts[0].pk, contacts[1].pk, contacts[1].pk]
    with transaction.atomic():
        tag_add_contact_ids(
            tag_ids=[second.pk, first.pk],
            contact_ids_sql="SELECT unnest(%s::bigint[]) AS id",
            params=[ids],
        )
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.contact_count == 2 == len(members(first))
    assert second.contact_count == 2 == len(members(second))


def test_add_by_emails_is_case_insensitive(user, make_contacts, make_tag):
    contacts = make_contacts(2)
    tag = make_tag()
    change = tag_add_contacts(
        tag=tag, selection=ContactSelection(emails=[c.email.upper() for c in contacts])
    )
    assert change.changed == 2


def test_another_owners_contact_ids_are_refused_and_nothing_changes(
    user, other_user, make_contacts, make_tag
):
    mine = make_contacts(2)
    theirs = make_contacts(1, owner=other_user)
    tag = make_tag()
    ids = [mine[0].pk, mine[1].pk, theirs[0].pk]
    with pytest.raises(ApplicationError, match=rf"unknown contact id\(s\): \[{theirs[0].pk}\]"):
        tag_add_contacts(tag=tag, selection=ContactSelection(ids=ids))
    tag.refresh_from_db()
    assert tag.contact_count == 0 and not members(tag)


def test_unknown_emails_are_refused(user, make_tag):
    with pytest.raises(ApplicationError, match="unknown e-mail"):
        tag_add_contacts(tag=make_tag(), selection=ContactSelection(emails=["x@example.com"]))


def test_a_selection_needs_exactly_one_kind():
    with pytest.raises(ApplicationError, match="exactly one"):
        ContactSelection(ids=[1], emails=["a@example.com"])


def test_add_by_filter_tag_a_and_not_tag_b(user, make_contacts, make_tag):
    contacts = make_contacts(6)
    tag_a = make_tag(members=contacts[:4])
    tag_b = make_tag(members=contacts[2:])
    target = make_tag()
    filters = ContactFilter(tags=(tag_a.pk,), exclude_tags=(tag_b.pk,))
    assert contact_count_matching(owner=user, filters=filters) == 2
    change = tag_add_contacts(tag=target, selection=ContactSelection(filters=filters))
    assert change.changed == 2
    assert members(target) == {contacts[0].pk, contacts[1].pk}


def test_filter_by_status_and_search(user, make_contacts, make_tag):
    contacts = make_contacts(3)
    contacts_set_status(
        owner=user, selection=ContactSelection(ids=[contacts[0].pk]), status="unsubscribed"
    )
    contact_update(contact=contacts[1], data={"first_name": "Grace"})
    assert list(contact_list(owner=user, filters=ContactFilter(status="unsubscribed"))) == [
        contacts[0]
    ]
    assert list(contact_list(owner=user, filters=ContactFilter(search="grac"))) == [contacts[1]]
    target = make_tag()
    change = tag_add_contacts(
        tag=target, selection=ContactSelection(filters=ContactFilter(status="active"))
    )
    assert change.changed == 2


def test_a_filter_on_another_owners_tag_is_refused(user, other_user, make_tag):
    foreign = make_tag(owner=other_user)
    with pytest.raises(ApplicationError, match="unknown tag"):
        tag_add_contacts(
            tag=make_tag(), selection=ContactSelection(filters=ContactFilter(tags=(foreign.pk,)))
        )


def test_remove_counts_only_actual_members(user, make_contacts, make_tag):
    contacts = make_contacts(4)
    tag = make_tag(members=contacts[:3])
    change = tag_remove_contacts(tag=tag, selection=ContactSelection(ids=[c.pk for c in contacts]))
    tag.refresh_from_db()
    assert (change.matched, change.changed, tag.contact_count) == (4, 3, 0)


def test_tag_create_refuses_a_duplicate_name(user, other_user):
    tag_create(owner=user, name="customers")
    tag_create(owner=other_user, name="customers")
    with pytest.raises(ApplicationError, match="already exists"):
        tag_create(owner=user, name=" customers ")


def test_tag_hierarchy_refuses_a_cycle(user):
    parent = tag_create(owner=user, name="parent")
    child = tag_create(owner=user, name="child", parent=parent)
    with pytest.raises(ApplicationError, match="own ancestor"):
        tag_update(tag=parent, parent=child)
    tag_update(tag=child, name="renamed", parent=None)
    child.refresh_from_db()
    assert (child.name, child.parent_id) == ("renamed", None)


def test_tag_merge_unions_members_and_deletes_the_source(user, make_contacts, make_tag):
    contacts = make_contacts(4)
    source = make_tag(members=contacts[:3])
    target = make_tag(members=contacts[2:])
    child = tag_create(owner=user, name="child", parent=source)
    added = tag_merge(source=source, target=target)
    assert added == 2 and target.contact_count == 4
    assert members(target) == {c.pk for c in contacts}
    assert not Tag.objects.filter(pk=source.pk).exists()
    assert not ContactTag.objects.filter(tag_id=source.pk).exists()
    child.refresh_from_db()
    assert child.parent_id == target.pk


def test_tag_delete_keeps_contacts(user, make_contacts, make_tag):
    contacts = make_contacts(2)
    tag = make_tag(members=contacts)
    assert tag_delete(tag=tag) == 2
    assert Contact.objects.count() == 2 and not ContactTag.objects.exists()


def test_bulk_upsert_creates_updates_and_reports_unchanged(user):
    rows = [{"email": "a@example.com", "first_name": "A"}, {"email": "b@example.com"}]
    first = contacts_bulk_upsert(owner=user, rows=rows, tag_names=["new"])
    assert [r["result"] for r in first] == ["created", "created"]
    again = contacts_bulk_upsert(owner=user, rows=rows, tag_names=["new"])
    assert [r["result"] for r in again] == ["unchanged", "unchanged"]
    changed = contacts_bulk_upsert(
        owner=user, rows=[{"email": "A@example.com", "attributes": {"plan": "pro"}}]
    )
    assert changed[0]["result"] == "updated" and changed[0]["id"] == first[0]["id"]
    contact = Contact.objects.get(pk=first[0]["id"])
    assert (contact.first_name, contact.attributes) == ("A", {"plan": "pro"})
    assert Tag.objects.get(owner=user, name="new").contact_count == 2


def test_bulk_upsert_is_all_or_nothing_with_per_row_errors(user):
    rows = [
        {"email": "ok@example.com"},
        {"email": "broken"},
        {"email": "ok@example.com"},
        "not an object",
        {"email": "x@example.com", "attributes": [1]},
    ]
    with pytest.raises(BulkValidationError) as info:
        contacts_bulk_upsert(owner=user, rows=rows, tag_names=["t"])
    errors = {row["index"]: row["errors"] for row in info.value.rows}
    assert set(errors) == {1, 2, 3, 4}
    assert "email" in errors[1] and "duplicate" in errors[2]["email"]
    assert "attributes" in errors[4]
    assert not Contact.objects.exists() and not Tag.objects.exists()


def test_bulk_upsert_never_resubscribes(user):
    contacts_bulk_upsert(owner=user, rows=[{"email": "a@example.com"}])
    contacts_set_status(
        owner=user, selection=ContactSelection(emails=["a@example.com"]), status="unsubscribed"
    )
    contacts_bulk_upsert(owner=user, rows=[{"email": "a@example.com", "first_name": "A"}])
    assert Contact.objects.get().status == "unsubscribed"


def test_bulk_upsert_refuses_more_than_ten_thousand_rows(user):
    with pytest.raises(ApplicationError, match="at most 10000"):
        contacts_bulk_upsert(owner=user, rows=[{"email": "a@example.com"}] * 10_001)
