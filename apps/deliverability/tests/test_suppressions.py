"""The suppression list: API, CSV, lifting, and imports that never reactivate."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group

from apps.contacts.models import Contact
from apps.contacts.services import contacts_bulk_upsert, contacts_delete
from apps.deliverability import services
from apps.deliverability.models import Suppression, SuppressionLift

pytestmark = pytest.mark.django_db


def test_an_address_or_a_domain_is_suppressed_through_the_api(api, other_api, user):
    created = api.post("/api/suppressions/", {"email": " Ann@Example.ORG "}, format="json")
    assert created.status_code == 201 and created.json()["email"] == "ann@example.org"
    again = api.post("/api/suppressions/", {"email": "ann@example.org"}, format="json")
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    domain = api.post("/api/suppressions/", {"domain": "spamtrap.example"}, format="json")
    assert domain.status_code == 201
    listed = api.get("/api/suppressions/").json()["results"]
    assert {(r["email"], r["domain"]) for r in listed} == {
        ("ann@example.org", ""),
        ("", "spamtrap.example"),
    }
    assert other_api.get("/api/suppressions/").json()["results"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "email"),
        ({"email": "a@b.example", "domain": "b.example"}, "email"),
        ({"email": "not an address"}, "email"),
        ({"domain": "bad domain"}, "domain"),
        ({"email": "a@b.example", "reason": "nope"}, "reason"),
        ({"email": "a@b.example", "global": True}, "global"),
    ],
)
def test_bad_suppressions_get_a_400_naming_the_field(api, body, field):
    response = api.post("/api/suppressions/", body, format="json")
    assert response.status_code == 400
    body = response.json()
    # ApplicationError answers {"detail", "code", "errors"}; serializer errors DRF's shape.
    assert field in body.get("errors", body), body
    assert not Suppression.objects.exists()


def test_a_reimport_never_reactivates_an_unsubscribed_address(user):
    [row] = contacts_bulk_upsert(owner=user, rows=[{"email": "ann@example.org"}])
    services.contact_unsubscribe(contact_id=row["id"], task_id=None, source="one-click")
    contacts_bulk_upsert(owner=user, rows=[{"email": "ann@example.org", "first_name": "A"}])
    assert Contact.objects.get(email="ann@example.org").status == "unsubscribed"
    # Even after the contact was deleted, the suppression holds.
    contacts_delete(owner=user, contact_ids=[row["id"]])
    [again] = contacts_bulk_upsert(owner=user, rows=[{"email": "ANN@example.org"}])
    assert again["result"] == "created"
    assert Contact.objects.get(pk=again["id"]).status == "unsubscribed"


def test_a_csv_import_never_reactivates_a_bounced_address(user, tmp_path):
    from apps.contacts.services import contacts_import_file

    services.suppression_add(owner=user, email="bob@example.org", reason="bounced")
    path = tmp_path / "contacts.csv"
    path.write_text("email,first_name\nbob@example.org,Bob\ncid@example.org,Cid\n")
    contacts_import_file(owner=user, path=str(path))
    status = dict(Contact.objects.values_list("email", "status"))
    assert status == {"bob@example.org": "bounced", "cid@example.org": "active"}


def test_the_api_refuses_to_set_a_suppressed_contact_active(api, user):
    contact = Contact.objects.create(owner=user, email="ann@example.org")
    services.contact_unsubscribe(contact_id=contact.pk, task_id=None, source="one-click")
    response = api.patch(f"/api/contacts/{contact.pk}/", {"status": "active"}, format="json")
    assert response.status_code == 400 and "status" in response.json()["errors"]
    contact.refresh_from_db()
    assert contact.status == "unsubscribed"


def test_only_an_operator_lifts_a_suppression_and_it_is_recorded(api, staff_api, user, staff_user):
    contact = Contact.objects.create(owner=user, email="ann@example.org")
    services.contact_unsubscribe(contact_id=contact.pk, task_id=None, source="one-click")
    entry = Suppression.objects.get()
    refused = api.post(f"/api/suppressions/{entry.pk}/lift", {"reason": "x"}, format="json")
    assert refused.status_code == 400
    no_reason = staff_api.post(f"/api/suppressions/{entry.pk}/lift", {}, format="json")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["errors"]
    lifted = staff_api.post(
        f"/api/suppressions/{entry.pk}/lift", {"reason": "asked us by phone"}, format="json"
    )
    assert lifted.json() == {"lifted": "ann@example.org", "contacts_reactivated": 1}
    contact.refresh_from_db()
    assert contact.status == "active" and not Suppression.objects.exists()
    lift = SuppressionLift.objects.get()
    assert (lift.lifted_by, lift.reason, lift.original_reason) == (
        staff_user,
        "asked us by phone",
        "unsubscribed",
    )


def test_a_member_of_the_operators_group_keeps_the_global_list(make_user):
    from rest_framework.test import APIClient

    operator = make_user("ops", is_staff=True)
    operator.groups.add(Group.objects.get_or_create(name="operators")[0])
    client = APIClient()
    client.force_authenticate(operator)
    response = client.post("/api/suppressions/", {"domain": "x.example", "global": True})
    assert response.status_code == 201 and response.json()["scope"] == "global"


def test_suppressions_round_trip_through_csv(api, user):
    upload = io.BytesIO(
        b"email,domain,reason,note\nA@x.example,,,from the old tool\n,y.example,manual,\n"
    )
    upload.name = "s.csv"
    assert api.post("/api/suppressions/import", {"file": upload}).json() == {
        "created": 2,
        "existing": 0,
    }
    exported = api.get("/api/suppressions/export")
    assert exported["Content-Type"].startswith("text/csv")
    lines = exported.content.decode().splitlines()
    assert lines[0] == "email,domain,reason,note,source,scope,created_at"
    assert lines[1].startswith("a@x.example,,imported,from the old tool,csv,owner,")
    assert lines[2].startswith(",y.example,manual,,csv,owner,")
    again = io.BytesIO(exported.content)
    again.name = "again.csv"
    assert api.post("/api/suppressions/import", {"file": again}).json() == {
        "created": 0,
        "existing": 2,
    }


def test_a_bad_csv_line_is_named_and_nothing_is_stored(api):
    upload = io.BytesIO(b"email\ngood@x.example\nnot-an-address\n")
    upload.name = "s.csv"
    response = api.post("/api/suppressions/import", {"file": upload})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("line 3: ")
    assert not Suppression.objects.exists()
