"""Contact and tag changes are events with their actor; bulk changes append one event
per contact in one statement; an import's outcome is its starter's import.completed."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.contacts import services
from apps.contacts.models import Contact
from apps.core.errors import ApplicationError
from apps.events.models import Event

pytestmark = pytest.mark.django_db


def test_a_bulk_upsert_records_each_created_and_updated_contact(user, staff_user):
    services.contacts_bulk_upsert(owner=user, rows=[{"email": "a@x.test"}], actor=staff_user)
    results = services.contacts_bulk_upsert(
        owner=user,
        rows=[{"email": "a@x.test", "first_name": "A"}, {"email": "b@x.test"}],
        actor=staff_user,
    )
    by_id = {r["id"]: r["result"] for r in results}
    events = Event.objects.filter(actor_id=staff_user.pk).exclude(pk=Event.objects.first().pk)
    assert {(int(e.subject_id), e.type) for e in events} == {
        (pk, "contact.created" if result == "created" else "contact.changed")
        for pk, result in by_id.items()
    }
    assert {e.owner_id for e in events} == {user.pk}


def test_unsubscribing_a_selection_records_each_contact_once(user, staff_user):
    services.contacts_bulk_upsert(owner=user, rows=[{"email": f"{i}@x.test"} for i in range(3)])
    ids = list(Contact.objects.filter(owner=user).values_list("pk", flat=True))
    selection = services.ContactSelection(ids=ids)
    assert (
        services.contacts_set_status(
            owner=user, selection=selection, status="unsubscribed", actor=staff_user
        )
        == 3
    )
    services.contacts_set_status(
        owner=user, selection=selection, status="unsubscribed", actor=staff_user
    )
    events = Event.objects.filter(type="contact.unsubscribed")
    assert sorted(int(e.subject_id) for e in events) == sorted(ids)
    assert {e.actor_id for e in events} == {staff_user.pk}


def test_a_failed_change_records_nothing(user):
    services.contact_create(owner=user, data={"email": "a@x.test"}, actor=user)
    before = Event.objects.count()
    with pytest.raises(ApplicationError, match="already exists"):
        services.contact_create(owner=user, data={"email": "A@x.test"}, actor=user)
    assert Event.objects.count() == before


def test_an_import_is_completed_by_the_user_who_started_it(user, staff_user):
    job = services.contact_import_create(
        owner=user,
        uploaded_file=SimpleUploadedFile("c.csv", b"email\na@x.test\nnot-an-address\n"),
        actor=staff_user,
    )
    services.contact_import_run(import_id=job.pk)
    event = Event.objects.get(type="import.completed")
    assert (event.actor_id, event.owner_id, event.subject_id) == (
        staff_user.pk,
        user.pk,
        str(job.pk),
    )
    assert (event.payload["status"], event.payload["created"], event.payload["rejected"]) == (
        "completed",
        1,
        1,
    )
