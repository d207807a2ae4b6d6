"""API tokens remembered per process (``apps.core.tokens``): no query to authenticate a
client's next requests, and nothing remembered past a change of the token or its user."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from apps.core.tokens import tokens_forget

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _nothing_remembered(settings):
    settings.EDM_TOKEN_CACHE_SECONDS = 5  # the default (the suite turns it off)
    tokens_forget()
    yield
    tokens_forget()


def _token_queries(client, url: str = "/api/tags/") -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return sum("authtoken_token" in q["sql"] for q in queries.captured_queries)


def test_a_clients_next_requests_cost_no_query_to_authenticate(api):
    assert _token_queries(api) == 1
    assert _token_queries(api) == 0
    assert _token_queries(api) == 0


def test_with_the_cache_off_every_request_looks_its_token_up(api, settings):
    settings.EDM_TOKEN_CACHE_SECONDS = 0
    assert _token_queries(api) == 1
    assert _token_queries(api) == 1


def test_a_deleted_token_is_refused_at_once(api, user):
    assert api.get("/api/tags/").status_code == 200
    Token.objects.filter(user=user).delete()
    assert api.get("/api/tags/").status_code == 401


def test_a_deactivated_user_is_refused_at_once(api, user):
    assert api.get("/api/tags/").status_code == 200
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert api.get("/api/tags/").status_code == 401


def test_each_request_gets_its_own_copy_of_the_user(api, user):
    from apps.core.tokens import CachedTokenAuthentication

    auth = CachedTokenAuthentication()
    key = Token.objects.get(user=user).key
    first, _ = auth.authenticate_credentials(key)
    second, _ = auth.authenticate_credentials(key)
    assert first == second == user
    assert first is not second and first._state is not second._state
    first._perm_cache = {"dispatch.view_task"}  # what a permission check leaves behind
    assert not hasattr(second, "_perm_cache")
    assert auth.authenticate_credentials(key)[0].__dict__.keys() == second.__dict__.keys()
