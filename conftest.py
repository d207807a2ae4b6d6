"""Fixtures shared by every test suite: users, API clients, a real SMTP sink."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.core.smtp_sink import SinkHandler, start_sink


@pytest.fixture(autouse=True)
def _fast_settings(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EDM_SINK_DIR = tmp_path / "mail"
    # API throttles out of reach: a test that is about them sets its own rates.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": None, "address": None, "anon": None},
    }


@pytest.fixture(autouse=True)
def _fresh_config_cache():
    """Each test reads configuration from its own database state, not a cached one."""
    from apps.config.selectors import config_cache_clear

    config_cache_clear()
    yield
    config_cache_clear()


@pytest.fixture
def make_user(db):
    User = get_user_model()
    counter = iter(range(1, 10**6))

    def make(username: str | None = None, *, is_staff: bool = False, **extra):
        name = username or f"user{next(counter)}"
        return User.objects.create_user(
            username=name, password="pw-" + name, is_staff=is_staff,
            is_superuser=extra.pop("is_superuser", False), **extra,
        )

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def other_user(make_user):
    return make_user("bob")


@pytest.fixture
def staff_user(make_user):
    return make_user("operator", is_staff=True, is_superuser=True)


def _client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(user) -> APIClient:
    """An API client authenticated as ``user`` (token auth)."""
    return _client_for(user)


@pytest.fixture
def other_api(other_user) -> APIClient:
    return _client_for(other_user)


@pytest.fixture
def staff_api(staff_user) -> APIClient:
    return _client_for(staff_user)


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


@pytest.fixture
def smtp_sink():
    """A real aiosmtpd server on loopback; ``.handler.messages`` holds what it received."""
    handler = SinkHandler()
    controller = start_sink(handler)
    controller.handler = handler
    yield controller
    controller.stop()
