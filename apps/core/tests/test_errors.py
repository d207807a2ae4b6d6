"""Every 4xx under /api/ has the one shape ``{"detail", "code", "errors": {field: [...]}}``."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework import exceptions
from rest_framework.test import APIClient

from apps.contacts.models import Tag
from apps.core.api import exception_handler
from apps.core.services import tenant_create
from apps.dispatch import services as dispatch


def shaped(response, status: int, *, code: str | None = None, field: str | None = None) -> dict:
    """The body of ``response``, after checking it is the one error shape."""
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) >= {"detail", "code", "errors"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["errors"], dict)
    for reasons in body["errors"].values():
        assert isinstance(reasons, list) and all(isinstance(r, str) for r in reasons), body
    if code is not None:
        assert body["code"] == code, body
    if field is not None:
        assert field in body["errors"], body
    return body


@pytest.fixture
def task(user, db):
    from apps.services.selectors import pool_default

    pool_default()
    tag = Tag.objects.create(owner=user, name="list")
    return dispatch.task_create(
        owner=user, name="t", subject="s", body_text="b", contacts=[], include_tags=[tag.pk]
    )


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("url", ["/api/nope", "/api/tasks/abc/", "/api/tasks/1/nope/", "/api/"])
def test_an_unknown_api_url_is_a_json_404(api, settings, debug, url):
    settings.DEBUG = debug
    body = shaped(api.get(url), 404, code="not_found")
    assert url in body["detail"]


def test_a_missing_trailing_slash_says_which_url_was_meant(api):
    body = shaped(api.get("/api/tasks"), 404, code="not_found")
    assert "did you mean /api/tasks/" in body["detail"]


def test_another_users_object_is_a_json_404(other_api, task):
    shaped(other_api.get(f"/api/tasks/{task.pk}/"), 404, code="not_found")
    shaped(other_api.post(f"/api/tasks/{task.pk}/queue"), 404, code="not_found")


def test_a_body_that_is_not_json_is_a_parse_error(api):
    response = api.post("/api/tasks/", data="{not json", content_type="application/json")
    body = shaped(response, 400, code="parse_error")
    assert "JSON parse error" in body["detail"]


def test_an_unsupported_media_type_is_a_415(api):
    shaped(api.post("/api/tasks/", data="x", content_type="text/plain"), 415)


def test_a_wrong_login_names_the_reason(anon_api, user):
    response = anon_api.post(
        "/api/auth/token/", {"username": "alice", "password": "wrong"}, format="json"
    )
    body = shaped(response, 400, field="non_field_errors")
    assert "Unable to log in" in body["detail"]


def test_serializer_errors_name_each_field(api):
    body = shaped(api.post("/api/tasks/", {"priority": 500}, format="json"), 400)
    assert {"name", "subject", "priority"} <= set(body["errors"])


def test_list_items_are_named_by_their_field(api):
    body = shaped(
        api.post(
            "/api/tasks/", {"name": "n", "subject": "s", "include_tags": ["x"]}, format="json"
        ),
        400,
        field="include_tags",
    )
    assert body["errors"]["include_tags"] == ["item 0: A valid integer is required."]


def test_service_validation_names_the_field_and_the_template_line(api, task):
    payload = {"name": "n", "subject": "ok", "body_text": "a\n{% if %}", "include_tags": []}
    body = shaped(api.post("/api/tasks/", payload, format="json"), 400, field="body_text")
    assert "line 2" in body["errors"]["body_text"][0]


def test_an_application_error_has_the_shape(api, task):
    # The task's tag has no contact: a service refuses, naming what is wrong.
    shaped(api.post(f"/api/tasks/{task.pk}/queue"), 400, field="recipients")


def test_not_logged_in_is_a_401(anon_api, db):
    response = anon_api.get("/api/tasks/", HTTP_ACCEPT="application/json")
    shaped(response, 401, code="not_authenticated")
    assert response["WWW-Authenticate"] == "Token"


def test_a_bad_token_is_a_401(anon_api, db):
    anon_api.credentials(HTTP_AUTHORIZATION="Token nope")
    shaped(anon_api.get("/api/tasks/"), 401, code="authentication_failed")


def test_a_tenant_on_an_operators_endpoint_is_a_403(db):
    tenant, _ = tenant_create(username="t1")
    client = APIClient()
    client.force_authenticate(tenant)
    shaped(client.get("/api/services/"), 403, code="permission_denied")
    shaped(
        client.put(
            "/api/system-config/queue.batch_size", {"value": 5, "reason": "x"}, format="json"
        ),
        403,
        code="permission_denied",
    )


def test_a_method_not_allowed_is_a_405(api):
    shaped(api.delete("/api/tasks/"), 405, code="method_not_allowed")


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/tasks/?pagesize=10", "pagesize"),
        ("/api/tasks/?staus=queued", "staus"),
        ("/api/tags/?ordering=name", "ordering"),
        ("/api/contacts/?tags=1", "tags"),
        ("/api/dlq?task_id=1", "task_id"),
        ("/api/dlq/stats?owner=1&x=2", "x"),
    ],
)
def test_an_unknown_query_parameter_is_named(api, url, field):
    body = shaped(api.get(url), 400, code="unknown_parameter", field=field)
    assert "unknown query parameter" in body["errors"][field][0]


def test_an_unknown_query_parameter_of_a_detail_url_is_named(api, task):
    shaped(api.get(f"/api/tasks/{task.pk}/?verbose=1"), 400, field="verbose")


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/tasks/?page_size=abc", "page_size"),
        ("/api/tasks/?page_size=0", "page_size"),
        ("/api/tasks/?page_size=100000", "page_size"),
        ("/api/tasks/?page=x", "page"),
        ("/api/tags/?page_size=-1", "page_size"),
        ("/api/contacts/?page_size=abc", "page_size"),
        ("/api/contacts/?cursor=garbage", "cursor"),
        ("/api/dlq?cursor=cD1hYmM=", "cursor"),  # a well-formed cursor with a bad position
        ("/api/tasks/?status=flying", "status"),
        ("/api/contacts/?tag=x", "tag"),
    ],
)
def test_a_malformed_query_parameter_is_named(api, url, field):
    shaped(api.get(url), 400, field=field)


def test_known_query_parameters_still_work(api, task):
    assert api.get("/api/tasks/?page_size=1&page=1&status=draft").json()["results"][0]["id"] == (
        task.pk
    )
    assert api.get("/api/tasks/?format=json").status_code == 200
    assert api.get(f"/api/tasks/{task.pk}/subtasks/?page_size=5&status=pending").status_code == 200


def test_a_page_past_the_end_is_a_404(api, task):
    shaped(api.get("/api/tasks/?page=9"), 404, code="not_found")


def test_throttling_answers_429_in_the_shape():
    response = exception_handler(exceptions.Throttled(wait=7), {})
    assert response.status_code == 429 and response["Retry-After"] == "7"
    assert set(response.data) == {"detail", "code", "errors"} and response.data["code"] == (
        "throttled"
    )


@pytest.mark.parametrize("view", ["bad_request", "permission_denied", "page_not_found"])
def test_djangos_own_error_pages_are_json_under_the_api(rf, view):
    from apps.core import views

    response = getattr(views, view)(rf.get("/api/tasks/"), exception=None)
    assert response.status_code in (400, 403, 404)
    import json

    body = json.loads(response.content)
    assert set(body) == {"detail", "code", "errors"}
    html = getattr(views, view)(rf.get("/admin/x"), exception=None)
    assert not html["Content-Type"].startswith("application/json")


def test_the_schema_documents_the_error_shape(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["components"]["schemas"]["Error"]["required"] == ["detail", "code", "errors"]
    responses = schema["paths"]["/api/tasks/"]["post"]["responses"]
    assert responses["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


def test_a_browser_that_is_not_logged_in_gets_a_login_link(client, db):
    response = client.get("/api/docs/", HTTP_ACCEPT="text/html")
    assert response.status_code == 401
    assert 'href="/admin/login/?next=/api/docs/"' in response.content.decode()
    browsable = client.get("/api/tasks/", HTTP_ACCEPT="text/html")
    assert browsable.status_code == 401 and "/admin/login/?next=/api/tasks/" in (
        browsable.content.decode()
    )


def test_a_tenant_reaches_the_docs_and_the_browsable_api_after_the_admin_login(client, db):
    tenant_create(username="reader", password="a-long-password-1")
    assert client.login(username="reader", password="a-long-password-1")
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/tasks/", HTTP_ACCEPT="text/html").status_code == 200
    assert get_user_model().objects.get(username="reader").is_staff
