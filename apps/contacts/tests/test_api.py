from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.contacts.models import Contact, ContactImport, ContactTag, Tag
from apps.contacts.services import contacts_bulk_upsert

pytestmark = pytest.mark.django_db


def test_every_endpoint_requires_authentication(anon_api):
    for url in ["/api/contacts/", "/api/tags/", "/api/imports/", "/api/contacts/bulk/"]:
        assert anon_api.get(url).status_code == 401


def test_bulk_upsert_answers_per_row_results_and_creates_tags(api, user):
    body = {
        "contacts": [
            {
                "email": "Ada@example.com",
                "first_name": "Ada",
                "last_name": "L",
                "attributes": {"plan": "pro"},
            },
            {"email": "alan@example.com", "first_name": "Alan"},
        ],
        "tags": ["customers", "newsletter"],
    }
    response = api.post("/api/contacts/bulk/", body, format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["created"] == 2 and [r["result"] for r in data["results"]] == ["created"] * 2
    again = api.post("/api/contacts/bulk/", body, format="json").json()
    assert again["unchanged"] == 2
    tags = api.get("/api/tags/").json()["results"]
    assert {(t["name"], t["contact_count"]) for t in tags} == {("customers", 2), ("newsletter", 2)}
    assert set(tags[0]) >= {"id", "name", "contact_count"}


def test_bulk_upsert_with_a_bad_row_saves_nothing_and_names_the_row(api):
    body = {"contacts": [{"email": "ok@example.com"}, {"email": "nope"}], "tags": ["t"]}
    response = api.post("/api/contacts/bulk/", body, format="json")
    assert response.status_code == 400
    data = response.json()
    assert data["rows"] == [
        {"index": 1, "email": "nope", "errors": {"email": "enter a valid e-mail address"}}
    ]
    assert not Contact.objects.exists() and not Tag.objects.exists()


def test_bulk_upsert_refuses_an_empty_or_oversized_list(api):
    assert (
        "contacts"
        in api.post("/api/contacts/bulk/", {"contacts": []}, format="json").json()["errors"]
    )
    big = {"contacts": [{"email": f"a{i}@example.com"} for i in range(10_001)]}
    response = api.post("/api/contacts/bulk/", big, format="json")
    assert response.status_code == 400 and "contacts" in response.json()["errors"]


def test_contact_crud(api, user):
    tag = api.post("/api/tags/", {"name": "vip"}, format="json").json()
    created = api.post(
        "/api/contacts/",
        {"email": "X@Example.com", "first_name": "X", "tags": [tag["id"]]},
        format="json",
    )
    assert created.status_code == 201, created.json()
    contact = created.json()
    assert (contact["email"], contact["tags"]) == ("x@example.com", [tag["id"]])
    url = f"/api/contacts/{contact['id']}/"
    patched = api.patch(url, {"status": "unsubscribed", "last_name": "Y"}, format="json").json()
    assert (patched["status"], patched["last_name"], patched["first_name"]) == (
        "unsubscribed",
        "Y",
        "X",
    )
    put = api.put(url, {"email": "x@example.com"}, format="json").json()
    assert put["first_name"] == "" and put["status"] == "unsubscribed"
    assert api.get(url).json()["email"] == "x@example.com"
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    assert api.get(f"/api/tags/{tag['id']}/").json()["contact_count"] == 0


def test_contact_create_names_the_bad_field(api):
    response = api.post("/api/contacts/", {"email": "broken"}, format="json")
    assert response.status_code == 400 and "email" in response.json()["errors"]
    response = api.post("/api/contacts/", {"email": "a@example.com", "status": "x"}, format="json")
    assert response.status_code == 400 and "status" in response.json()["errors"]


def test_another_users_ids_answer_404(api, other_user):
    theirs = contacts_bulk_upsert(
        owner=other_user, rows=[{"email": "t@example.com"}], tag_names=["theirs"]
    )[0]["id"]
    tag = Tag.objects.get(owner=other_user)
    job = ContactImport.objects.create(owner=other_user)
    for url in [
        f"/api/contacts/{theirs}/",
        f"/api/tags/{tag.pk}/",
        f"/api/tags/{tag.pk}/contacts/",
        f"/api/imports/{job.pk}/",
        f"/api/imports/{job.pk}/report/",
    ]:
        assert api.get(url).status_code == 404, url
    assert api.delete(f"/api/contacts/{theirs}/").status_code == 404
    assert api.patch(f"/api/tags/{tag.pk}/", {"name": "x"}, format="json").status_code == 404
    assert (
        api.post(
            f"/api/tags/{tag.pk}/contacts/", {"contact_ids": [theirs]}, format="json"
        ).status_code
        == 404
    )
    assert api.get("/api/contacts/").json()["results"] == []
    assert Contact.objects.filter(owner=other_user).count() == 1


def test_contact_list_filters_and_keyset_pages(api, user):
    contacts_bulk_upsert(
        owner=user, rows=[{"email": f"p{i}@example.com"} for i in range(5)], tag_names=["a"]
    )
    contacts_bulk_upsert(owner=user, rows=[{"email": "p0@example.com"}], tag_names=["b"])
    contacts_bulk_upsert(owner=user, rows=[{"email": "zed@example.com", "first_name": "Zed"}])
    a, b = Tag.objects.get(name="a"), Tag.objects.get(name="b")
    page = api.get("/api/contacts/?page_size=3").json()
    assert len(page["results"]) == 3 and page["next"]
    rest = api.get(page["next"]).json()
    assert len(rest["results"]) == 3 and rest["next"] is None
    emails = [
        c["email"]
        for c in api.get(f"/api/contacts/?tag={a.pk}&exclude_tag={b.pk}").json()["results"]
    ]
    assert sorted(emails) == [f"p{i}@example.com" for i in range(1, 5)]
    assert [c["email"] for c in api.get("/api/contacts/?search=ZED").json()["results"]] == [
        "zed@example.com"
    ]
    assert api.get("/api/contacts/?status=bounced").json()["results"] == []
    assert "status" in api.get("/api/contacts/?status=nope").json()["errors"]
    assert "tag" in api.get("/api/contacts/?tag=999999").json()["errors"]


def test_tag_contacts_list_add_and_remove(api, user, django_assert_num_queries):
    rows = [{"email": f"m{i}@example.com"} for i in range(4)]
    ids = [r["id"] for r in contacts_bulk_upsert(owner=user, rows=rows)]
    tag = api.post("/api/tags/", {"name": "members"}, format="json").json()
    url = f"/api/tags/{tag['id']}/contacts/"
    added = api.post(url, {"contact_ids": ids[:3]}, format="json").json()
    assert added == {"matched": 3, "added": 3, "contact_count": 3}
    by_email = api.post(url, {"emails": ["M3@example.com"]}, format="json").json()
    assert by_email["added"] == 1
    # A page costs three queries however large the tag: token, tag, the page itself.
    with django_assert_num_queries(3):
        page = api.get(f"{url}?page_size=2").json()
    assert [c["id"] for c in page["results"]] == sorted(ids, reverse=True)[:2]
    removed = api.delete(url, {"filter": {"tags": [tag["id"]]}}, format="json").json()
    assert removed == {"matched": 4, "removed": 4, "contact_count": 0}
    assert not ContactTag.objects.exists()


def test_tag_contacts_bad_bodies_answer_400(api, user, other_user):
    tag = api.post("/api/tags/", {"name": "t"}, format="json").json()
    url = f"/api/tags/{tag['id']}/contacts/"
    assert api.post(url, {}, format="json").status_code == 400
    assert (
        api.post(url, {"contact_ids": [1], "emails": ["a@example.com"]}, format="json").status_code
        == 400
    )
    assert api.post(url, {"filter": {}}, format="json").status_code == 400
    response = api.post(url, {"contact_ids": [123456]}, format="json")
    assert response.status_code == 400 and "contact_ids" in response.json()["errors"]
    foreign = Tag.objects.create(owner=other_user, name="x")
    response = api.post(url, {"filter": {"tags": [foreign.pk]}}, format="json")
    assert response.status_code == 400 and "filter" in response.json()["errors"]


def test_tag_crud_merge_and_duplicate_name(api, user):
    parent = api.post("/api/tags/", {"name": "parent"}, format="json").json()
    child = api.post("/api/tags/", {"name": "child", "parent": parent["id"]}, format="json")
    assert child.status_code == 201 and child.json()["parent"] == parent["id"]
    duplicate = api.post("/api/tags/", {"name": "parent"}, format="json")
    assert duplicate.status_code == 400 and "name" in duplicate.json()["errors"]
    assert api.post("/api/tags/", {}, format="json").status_code == 400
    renamed = api.patch(f"/api/tags/{child.json()['id']}/", {"name": "kid"}, format="json")
    assert renamed.json()["name"] == "kid"
    contacts_bulk_upsert(owner=user, rows=[{"email": "a@example.com"}], tag_names=["kid"])
    merged = api.post(
        f"/api/tags/{child.json()['id']}/merge/", {"into": parent["id"]}, format="json"
    ).json()
    assert merged["added"] == 1 and merged["tag"]["contact_count"] == 1
    assert api.get(f"/api/tags/{child.json()['id']}/").status_code == 404
    assert api.delete(f"/api/tags/{parent['id']}/").status_code == 204
    assert Contact.objects.count() == 1


def test_import_upload_progress_and_report(
    api, user, settings, tmp_path, django_capture_on_commit_callbacks
):
    from apps.contacts.tasks import run_contact_import

    settings.MEDIA_ROOT = tmp_path
    content = b"email,first_name\nok@example.com,Ok\nbroken,No\n"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(
            "/api/contacts/import/",
            {
                "file": SimpleUploadedFile("c.csv", content, content_type="text/csv"),
                "tags": ["imported"],
            },
            format="multipart",
        )
    assert response.status_code == 202, response.json()
    job = response.json()
    assert (job["status"], job["percent"], len(callbacks)) == ("pending", 0.0, 1)
    run_contact_import(job["id"])
    detail = api.get(f"/api/imports/{job['id']}/").json()
    assert (
        detail["status"],
        detail["percent"],
        detail["rows_created"],
        detail["rows_rejected"],
    ) == ("completed", 100.0, 1, 1)
    report = api.get(detail["report_url"])
    text = b"".join(report.streaming_content).decode()
    assert report["Content-Type"] == "text/csv" and "3,invalid e-mail address 'broken'" in text
    assert api.get("/api/imports/").json()["results"][0]["id"] == job["id"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\x00\x01binary", "not a CSV"), (b"name\nx\n", "no e-mail column")],
)
def test_import_upload_of_a_bad_file_answers_400_and_stores_nothing(
    api, settings, tmp_path, content, message
):
    settings.MEDIA_ROOT = tmp_path
    response = api.post(
        "/api/contacts/import/",
        {"file": SimpleUploadedFile("c.csv", content, content_type="text/csv")},
        format="multipart",
    )
    assert response.status_code == 400
    assert message in str(response.json())
    assert not ContactImport.objects.exists()


def test_tag_contacts_keyset_pages_walk_forward_and_back(api, user):
    rows = [{"email": f"k{i}@example.com"} for i in range(7)]
    ids = sorted(
        (r["id"] for r in contacts_bulk_upsert(owner=user, rows=rows, tag_names=["k"])),
        reverse=True,
    )
    contacts_bulk_upsert(owner=user, rows=[{"email": "outside@example.com"}])
    tag = Tag.objects.get(name="k")
    url = f"/api/tags/{tag.pk}/contacts/?page_size=3"
    seen, pages, page = [], [], api.get(url).json()
    while True:
        pages.append(page)
        seen.extend(c["id"] for c in page["results"])
        if not page["next"]:
            break
        page = api.get(page["next"]).json()
    assert seen == ids and len(pages) == 3
    back = api.get(pages[2]["previous"]).json()
    assert [c["id"] for c in back["results"]] == ids[3:6]
