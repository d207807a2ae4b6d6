"""The API's plumbing: authentication, schema and docs, errors, metrics, request ids."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.test import APIRequestFactory

from apps.core.errors import ApplicationError


def test_unauthenticated_api_calls_get_401(anon_api, db):
    for url in ("/api/schema/", "/api/docs/"):
        response = anon_api.get(url)
        assert response.status_code == 401, url
        assert "WWW-Authenticate" in response


def test_token_endpoint_exchanges_credentials_for_a_token(anon_api, user):
    response = anon_api.post(
        "/api/auth/token/", {"username": "alice", "password": "pw-alice"}, format="json"
    )
    assert response.status_code == 200
    token = response.json()["token"]
    anon_api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon_api.get("/api/schema/").status_code == 200


def test_token_endpoint_rejects_a_wrong_password_naming_the_reason(anon_api, user):
    response = anon_api.post(
        "/api/auth/token/", {"username": "alice", "password": "wrong"}, format="json"
    )
    assert response.status_code == 400
    assert "Unable to log in" in str(response.json())


def test_a_bad_token_gets_401(anon_api, db):
    anon_api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert anon_api.get("/api/schema/").status_code == 401


def test_schema_renders_as_openapi(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/health" in schema["paths"]


def test_docs_are_served_offline_from_the_sidecar(api):
    response = api.get("/api/docs/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "swagger-ui" in body
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", body)
    assert any("/static/drf_spectacular_sidecar/" in url for url in assets), assets
    remote = [url for url in assets if re.match(r"(?:https?:)?//", url)]
    assert remote == [], remote


@api_view(["POST"])
@permission_classes([AllowAny])
def _raises(request):
    kind = request.data["kind"]
    if kind == "application":
        raise ApplicationError("the name is already taken", field="name", code="duplicate")
    raise ValidationError({"priority": ["must be between 0 and 9"]})


def test_application_errors_become_400_naming_field_and_reason():
    request = APIRequestFactory().post("/", {"kind": "application"}, format="json")
    response = _raises(request)
    assert response.status_code == 400
    assert response.data == {
        "detail": "the name is already taken",
        "code": "duplicate",
        "errors": {"name": ["the name is already taken"]},
    }


def test_django_validation_errors_become_400_naming_field_and_reason():
    request = APIRequestFactory().post("/", {"kind": "django"}, format="json")
    response = _raises(request)
    assert response.status_code == 400
    assert response.data["errors"] == {"priority": ["must be between 0 and 9"]}


def test_metrics_are_exposed_for_prometheus(client, db):
    client.get("/api/health")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"django_http_requests_total_by_method_total" in response.content


def test_metrics_can_require_a_bearer_token(client, settings, db):
    settings.EDM_METRICS_TOKEN = "s3cret-scrape-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert ok.status_code == 200


def test_request_id_is_echoed_or_generated(client, db):
    echoed = client.get("/api/health", HTTP_X_REQUEST_ID="abc-123")
    assert echoed["X-Request-ID"] == "abc-123"
    generated = client.get("/api/health", HTTP_X_REQUEST_ID="bad id with spaces\n")
    assert len(generated["X-Request-ID"]) == 32


@pytest.mark.parametrize("url", ["/admin/", "/admin/django_q/schedule/", "/admin/django_q/ormq/"])
def test_admin_pages_render_for_the_operator(client, staff_user, url):
    client.force_login(staff_user)
    assert client.get(url).status_code == 200
