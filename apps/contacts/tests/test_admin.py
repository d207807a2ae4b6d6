"""One smoke test per admin page and action."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps.contacts.models import Contact, ContactImport, Tag
from apps.contacts.services import contacts_bulk_upsert

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def data(user):
    rows = [{"email": f"c{i}@example.com", "first_name": f"C{i}"} for i in range(3)]
    ids = [r["id"] for r in contacts_bulk_upsert(owner=user, rows=rows, tag_names=["vip"])]
    return {"ids": ids, "tag": Tag.objects.get(name="vip")}


def test_contact_changelist_with_filters_and_search(admin_client, data):
    url = reverse("admin:contacts_contact_changelist")
    response = admin_client.get(url, {"tag": data["tag"].pk, "status": "active", "q": "c1"})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [Contact.objects.get(email="c1@example.com")]


def test_count_free_paginator_falls_back_to_the_estimate(admin_client, data, monkeypatch):
    from django.db import connection

    from apps.contacts.admin import CountFreePaginator

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class"
            " WHERE oid = 'contacts_contact'::regclass"
        )
        estimate = cursor.fetchone()[0]
    assert estimate != 3  # never analysed: the estimate differs from the real count
    monkeypatch.setattr(CountFreePaginator, "timeout_ms", 1)
    slow = Contact.objects.extra(where=["pg_sleep(0.02) IS NOT NULL"]).order_by("-id")
    assert CountFreePaginator(slow, 50).count == estimate  # the COUNT was cut off
    monkeypatch.setattr(CountFreePaginator, "timeout_ms", 5000)
    assert CountFreePaginator(Contact.objects.order_by("-id"), 50).count == 3


def test_contact_change_and_add_pages(admin_client, data, user):
    assert (
        admin_client.get(
            reverse("admin:contacts_contact_change", args=[data["ids"][0]])
        ).status_code
        == 200
    )
    response = admin_client.post(
        reverse("admin:contacts_contact_add"),
        {
            "owner": user.pk,
            "email": "NEW@Example.com",
            "attributes": "{}",
            "status": "active",
            "first_name": "",
            "last_name": "",
            "source": "admin",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Contact.objects.filter(email="new@example.com").exists()


def _action(admin_client, action, ids, **extra):
    return admin_client.post(
        reverse("admin:contacts_contact_changelist"),
        {"action": action, ACTION_CHECKBOX_NAME: ids, **extra},
    )


def test_add_to_tag_action_asks_for_the_tag_then_adds(admin_client, data, user):
    other = Tag.objects.create(owner=user, name="other")
    form = _action(admin_client, "add_to_tag", data["ids"][:2])
    assert form.status_code == 200 and b"Add to tag" in form.content
    done = _action(admin_client, "add_to_tag", data["ids"][:2], apply="1", tag=other.pk)
    assert done.status_code == 302
    other.refresh_from_db()
    assert other.contact_count == 2


def test_remove_from_tag_action(admin_client, data):
    done = _action(admin_client, "remove_from_tag", data["ids"][:1], apply="1", tag=data["tag"].pk)
    assert done.status_code == 302
    data["tag"].refresh_from_db()
    assert data["tag"].contact_count == 2


def test_unsubscribe_action(admin_client, data):
    assert _action(admin_client, "unsubscribe", data["ids"][:2]).status_code == 302
    assert Contact.objects.filter(status="unsubscribed").count() == 2


def test_delete_action_keeps_counts_exact(admin_client, data):
    assert _action(admin_client, "delete_selected_contacts", data["ids"][:1]).status_code == 302
    data["tag"].refresh_from_db()
    assert data["tag"].contact_count == 2 and Contact.objects.count() == 2


def test_tag_pages_and_delete_action(admin_client, data):
    assert admin_client.get(reverse("admin:contacts_tag_changelist")).status_code == 200
    assert (
        admin_client.get(reverse("admin:contacts_tag_change", args=[data["tag"].pk])).status_code
        == 200
    )
    response = admin_client.post(
        reverse("admin:contacts_tag_changelist"),
        {
            "action": "delete_selected_tags",
            ACTION_CHECKBOX_NAME: [data["tag"].pk],
        },
    )
    assert response.status_code == 302 and not Tag.objects.exists()
    assert Contact.objects.count() == 3


def test_import_upload_progress_and_report_pages(
    admin_client, settings, tmp_path, django_capture_on_commit_callbacks
):
    from apps.contacts.tasks import run_contact_import

    settings.MEDIA_ROOT = tmp_path
    upload_url = reverse("admin:contacts_contactimport_upload")
    assert admin_client.get(reverse("admin:contacts_contactimport_add")).url == upload_url
    bad = admin_client.post(upload_url, {"file": SimpleUploadedFile("x.csv", b"name\nA\n")})
    assert bad.status_code == 200 and b"no e-mail column" in bad.content
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client.post(
            upload_url,
            {
                "file": SimpleUploadedFile("c.csv", b"email\na@example.com\nbroken\n"),
                "tags": "from-admin, second",
            },
        )
    job = ContactImport.objects.get()
    assert response.status_code == 302 and job.tag_names == ["from-admin", "second"]
    run_contact_import(job.pk)
    page = admin_client.get(reverse("admin:contacts_contactimport_change", args=[job.pk]))
    assert page.status_code == 200 and b"Download the rejected and skipped rows" in page.content
    progress = admin_client.get(
        reverse("admin:contacts_contactimport_progress", args=[job.pk])
    ).json()
    assert (progress["percent"], progress["rows_rejected"], progress["finished"]) == (
        100.0,
        1,
        True,
    )
    report = admin_client.get(reverse("admin:contacts_contactimport_report", args=[job.pk]))
    assert b"broken" in b"".join(report.streaming_content)
    assert admin_client.get(reverse("admin:contacts_contactimport_changelist")).status_code == 200


def test_a_tenant_sees_only_its_own_rows(client, make_user, data, user):
    from apps.core.services import tenant_create

    tenant, _ = tenant_create(username="clerk")
    contacts_bulk_upsert(owner=tenant, rows=[{"email": "mine@example.com"}])
    client.force_login(tenant)
    response = client.get(reverse("admin:contacts_contact_changelist"))
    assert [c.email for c in response.context["cl"].result_list] == ["mine@example.com"]
    # Someone else's contact does not exist for a tenant.
    url = reverse("admin:contacts_contact_change", args=[data["ids"][0]])
    assert client.get(url).status_code == 404
