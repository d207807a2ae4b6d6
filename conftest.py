"""Fixtures shared by every test suite: users, API clients, a real SMTP sink."""

from __future__ import annotations

import shutil

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.core import throttling
from apps.core.smtp_sink import SinkHandler, start_sink


@pytest.fixture(autouse=True)
def _fast_settings(settings, tmp_path):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EDM_SINK_DIR = tmp_path / "mail"
    # Every request looks its API token up: pinned query counts stay per request
    # (apps/core/tests/test_tokens.py turns the cache on).
    settings.EDM_TOKEN_CACHE_SECONDS = 0
    # A task's detail reads its progress every time (test_api_detail.py turns the
    # per-process reading on).
    settings.EDM_PROGRESS_SECONDS = 0
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
            username=name,
            password="pw-" + name,
            is_staff=is_staff,
            is_superuser=extra.pop("is_superuser", False),
            **extra,
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
def rates(settings):
    """Set some throttle rates for one test (the suite runs with them out of reach)."""
    cache.clear()
    throttling.reset()

    def set_rates(**rates):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {
                **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                **rates,
            },
        }

    yield set_rates
    cache.clear()
    throttling.reset()


@pytest.fixture
def smtp_sink():
    """A real aiosmtpd server on loopback; ``.handler.messages`` holds what it received."""
    handler = SinkHandler()
    controller = start_sink(handler)
    controller.handler = handler
    yield controller
    controller.stop()


@pytest.fixture
def http_receiver():
    """A real HTTP server on loopback: ``.url``, ``.requests`` (path, headers, body),
    ``.statuses`` answered in turn (the last repeats), ``.event`` set on each request."""
    from tests.http import http_receiver as serve

    with serve() as receiver:
        yield receiver


@pytest.fixture
def browser(tmp_path):
    """Debian's Chromium, headless, driven by selenium (1400×1000); skipped where it is missing.

    ``make test`` installs ``chromium`` and ``chromium-driver`` where the machine can
    (root with apt-get); nothing is downloaded by the test itself.
    """
    chromium = shutil.which("chromium")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip(
            "no Chromium on this machine: install Debian's chromium and chromium-driver "
            "(make test does so where it runs as root with apt-get)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # required as root
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        # The machine's network is closed: no background calls to Google's hosts.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
