"""Production security: deploy checks, throttling, the login rate limit, CORS."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from apps.core.tests.test_settings import GOOD_KEY, run_manage

# The production values documented in the README.
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "p9$Wk2@vQz!mR7#tLx4&Nc8^Hs1*Bd6(Fg3)Jy5-Ue0+Ai-7yTr0pLm3Kq8ZvX2nB5",
    "EDM_ENCRYPTION_KEY": GOOD_KEY,
    "ALLOWED_HOSTS": "edm.example.com",
    "EDM_HSTS_SECONDS": "31536000",
    "EDM_SSL_REDIRECT": "1",
    "EDM_SECURE_COOKIES": "1",
    "EDM_PROXY_SSL_HEADER": "X-Forwarded-Proto",
}


def test_check_deploy_is_clean_with_the_documented_production_values():
    result = run_manage(PRODUCTION, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_warns_without_them():
    env = {k: v for k, v in PRODUCTION.items() if not k.startswith(("EDM_HSTS", "EDM_SSL"))}
    result = run_manage(env, "check", "--deploy")
    assert "security.W004" in result.stderr + result.stdout  # HSTS
    assert "security.W008" in result.stderr + result.stdout  # SSL redirect


@pytest.mark.django_db
def test_a_user_over_the_rate_gets_429_with_retry_after_and_others_do_not(rates, api, other_api):
    rates(user="3/min")
    assert [api.get("/api/tags/").status_code for _ in range(3)] == [200] * 3
    refused = api.get("/api/tags/")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert other_api.get("/api/tags/").status_code == 200


@pytest.mark.django_db
def test_one_address_over_its_rate_is_throttled_whoever_it_authenticates_as(rates, api, other_api):
    rates(address="4/min")
    codes = [c.get("/api/tags/").status_code for c in (api, other_api, api, other_api, api)]
    assert codes == [200, 200, 200, 200, 429]


@pytest.mark.django_db
def test_health_is_never_throttled(rates, anon_api):
    rates(address="1/min", anon="1/min")
    assert {anon_api.get("/api/health").status_code for _ in range(5)} == {200}


@pytest.mark.django_db
def test_the_token_endpoint_locks_a_username_out_at_the_fifth_failure(user, rates):
    client = APIClient()
    codes = [
        client.post(
            "/api/auth/token/", {"username": "alice", "password": "wrong"}, format="json"
        ).status_code
        for _ in range(5)
    ]
    assert codes == [400, 400, 400, 400, 429]
    # Even the right password is refused now, in the API's error shape.
    locked = client.post(
        "/api/auth/token/", {"username": "alice", "password": "pw-alice"}, format="json"
    )
    assert locked.status_code == 429
    assert locked.json()["code"] == "locked_out"
    assert set(locked.json()) >= {"detail", "code", "errors"}
    # Another username from the same address is not locked.
    assert (
        client.post(
            "/api/auth/token/", {"username": "x", "password": "y"}, format="json"
        ).status_code
        == 400
    )


@pytest.mark.django_db
def test_the_admin_login_locks_a_username_out_at_the_fifth_failure(client, staff_user):
    codes = [
        client.post(
            "/admin/login/", {"username": "operator", "password": "wrong", "next": "/admin/"}
        ).status_code
        for _ in range(5)
    ]
    assert codes == [200, 200, 200, 200, 429]  # the form again with its error, then locked
    locked = client.post(
        "/admin/login/", {"username": "operator", "password": "pw-operator", "next": "/admin/"}
    )
    assert locked.status_code == 429
    assert "too many failed logins" in locked.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_a_successful_login_resets_the_failure_count(user, rates):
    client = APIClient()
    for _ in range(4):
        client.post("/api/auth/token/", {"username": "alice", "password": "no"}, format="json")
    assert (
        client.post(
            "/api/auth/token/", {"username": "alice", "password": "pw-alice"}, format="json"
        ).status_code
        == 200
    )
    for _ in range(4):
        client.post("/api/auth/token/", {"username": "alice", "password": "no"}, format="json")
    assert (
        client.post(
            "/api/auth/token/", {"username": "alice", "password": "pw-alice"}, format="json"
        ).status_code
        == 200
    )


@pytest.mark.django_db
def test_cors_is_closed_by_default(api):
    response = api.get("/api/tags/", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in response
    preflight = api.options(
        "/api/tags/",
        HTTP_ORIGIN="https://evil.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="DELETE",
    )
    assert "Access-Control-Allow-Origin" not in preflight


@pytest.mark.django_db
def test_cors_opens_to_the_listed_origins_only(api, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    allowed = api.get("/api/tags/", HTTP_ORIGIN="https://app.example")
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Access-Control-Allow-Origin" not in api.get(
        "/api/tags/", HTTP_ORIGIN="https://evil.example"
    )
