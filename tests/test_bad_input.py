"""Bad input at the edge of the API: every refusal is a 4xx in the one error shape
``{"detail", "code", "errors"}``, never a 500, and nothing is stored."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from apps.contacts.models import Contact, ContactTag, Tag

pytestmark = pytest.mark.django_db

HUGE = 99999999999999999999  # beyond PostgreSQL's bigint


def assert_error_shape(response, status: int, *, field: str | None = None) -> dict:
    """The answer is ``status`` with a JSON body in the one error shape (naming
    ``field`` when given)."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}, body
    assert isinstance(body["code"], str) and isinstance(body["errors"], dict), body
    assert isinstance(body["detail"], str) and body["detail"]
    if field is not None:
        assert field in body["errors"], body
    return body


def post_raw(client, url: str, text: str | bytes, *, method: str = "post"):
    return getattr(client, method)(url, data=text, content_type="application/json")


@pytest.fixture
def tag(user):
    return Tag.objects.create(owner=user, name="list")


# --- ids and integers ------------------------------------------------------------------


def test_an_id_beyond_bigint_in_a_body_is_a_400_naming_the_field(api, tag):
    response = post_raw(api, f"/api/tags/{tag.pk}/contacts/", f'{{"contact_ids": [{HUGE}]}}')
    body = assert_error_shape(response, 400, field="contact_ids.0")
    assert "64-bit" in body["detail"]
    assert body["code"] == "invalid_json"
    assert ContactTag.objects.count() == 0


def test_an_id_beyond_bigint_in_the_path_is_a_404(api):
    for url in (f"/api/tasks/{HUGE}/", f"/api/tags/{HUGE}/", f"/api/contacts/{HUGE}/"):
        assert assert_error_shape(api.get(url), 404)["code"] == "not_found"


@pytest.mark.parametrize("query", ["owner=%C2%B2", f"owner={HUGE}", "owner=-1"])
def test_a_malformed_integer_in_the_query_is_a_400_naming_it(staff_api, query):
    assert_error_shape(staff_api.get(f"/api/dlq/stats?{query}"), 400, field="owner")


@pytest.mark.parametrize("query", ["tag=%C2%B2", f"tag={HUGE}", f"exclude_tag={HUGE}"])
def test_a_malformed_tag_id_in_a_contact_filter_is_a_400_naming_it(api, query):
    assert_error_shape(api.get(f"/api/contacts/?{query}"), 400, field=query.split("=")[0])


# --- JSON documents --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/api/contacts/"),
        ("post", "/api/tasks/"),
        ("put", "/api/system-config/batch"),
        ("post", "/api/contacts/bulk/"),
    ],
)
def test_json_nested_a_thousand_deep_is_a_400_on_any_endpoint(api, staff_api, method, url):
    client = staff_api if "system-config" in url else api
    document = "[" * 1000 + "]" * 1000
    response = post_raw(client, url, f'{{"attributes": {document}}}', method=method)
    assert_error_shape(response, 400)


def test_json_nested_deeper_than_the_stack_is_a_400(api):
    document = "[" * 100_000 + "]" * 100_000
    assert_error_shape(post_raw(api, "/api/contacts/", document), 400)


def test_a_nul_character_in_contact_attributes_is_a_400_naming_the_path(api):
    response = api.post(
        "/api/contacts/",
        {"email": "a@example.com", "attributes": {"note": "a\x00b"}},
        format="json",
    )
    assert_error_shape(response, 400, field="attributes.note")
    assert not Contact.objects.exists()


def test_a_nul_character_in_a_json_key_is_a_400(api):
    response = post_raw(api, "/api/contacts/", '{"email": "a@example.com", "\\u0000": 1}')
    assert_error_shape(response, 400)


def test_a_nul_character_in_the_query_string_is_a_400_naming_the_parameter(api):
    assert_error_shape(api.get("/api/contacts/?search=a%00b"), 400, field="search")


def test_a_nul_character_in_the_admin_search_is_a_400(client, staff_user):
    client.force_login(staff_user)
    response = client.get("/admin/contacts/contact/?q=a%00b")
    assert response.status_code == 400


def test_nan_is_not_json(api):
    response = post_raw(
        api, "/api/contacts/", '{"email": "a@example.com", "attributes": {"x": NaN}}'
    )
    body = assert_error_shape(response, 400)
    assert body["code"] == "parse_error" and "NaN" in body["detail"]


# --- sizes -----------------------------------------------------------------------------


@override_settings(EDM_API_MAX_BODY_BYTES=1000)
def test_a_json_body_over_the_limit_is_a_413_before_it_is_read(api):
    response = api.post(
        "/api/contacts/", {"email": "a@example.com", "first_name": "x" * 2000}, format="json"
    )
    body = assert_error_shape(response, 413)
    assert body["code"] == "request_too_large"
    assert not Contact.objects.exists()


@override_settings(EDM_UPLOAD_MAX_BYTES=1000)
def test_an_upload_over_the_limit_is_a_413(api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("c.csv", b"email\n" + b"a@example.com\n" * 200)
    response = api.post("/api/contacts/import/", {"file": upload}, format="multipart")
    assert_error_shape(response, 413)


def test_a_form_with_more_than_a_thousand_fields_is_a_413_in_the_error_shape(api):
    fields = "&".join(f"f{i}=1" for i in range(1500))
    response = api.post(
        "/api/contacts/", data=fields, content_type="application/x-www-form-urlencoded"
    )
    assert_error_shape(response, 413)


def test_a_body_over_the_limit_is_a_413_in_the_error_shape(api):
    # 49 MiB of attributes: refused from Content-Length alone.
    text = json.dumps({"email": "a@example.com", "attributes": {"x": "a" * (49 * 2**20)}})
    assert_error_shape(post_raw(api, "/api/contacts/", text), 413)
    assert not Contact.objects.exists()


def test_contact_attributes_over_64_kb_are_a_400_naming_the_field(api):
    response = api.post(
        "/api/contacts/",
        {"email": "a@example.com", "attributes": {"x": "a" * 70_000}},
        format="json",
    )
    assert_error_shape(response, 400, field="attributes")
    assert not Contact.objects.exists()


def test_bulk_rows_with_attributes_over_64_kb_are_refused(api):
    response = api.post(
        "/api/contacts/bulk/",
        {"contacts": [{"email": "a@example.com", "attributes": {"x": "a" * 70_000}}]},
        format="json",
    )
    assert 400 <= response.status_code < 500
    assert "attributes" in json.dumps(response.json())
    assert not Contact.objects.exists()


@pytest.mark.parametrize("field", ["body_text", "body_html"])
def test_a_task_body_over_2_mb_is_a_400_naming_the_field(api, tag, field):
    response = api.post(
        "/api/tasks/",
        {
            "name": "big",
            "subject": "Hi",
            field: "x" * (2 * 1024 * 1024 + 1),
            "include_tags": [tag.pk],
        },
        format="json",
    )
    assert_error_shape(response, 400, field=field)


def test_a_search_over_its_cap_is_a_400(api):
    assert_error_shape(api.get("/api/contacts/?search=" + "a" * 300), 400, field="search")
