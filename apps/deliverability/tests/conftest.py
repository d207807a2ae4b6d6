"""Fixtures of the deliverability tests: the dispatch fixtures (pool, services on a real
SMTP sink, contacts, configuration) and a public URL for the links."""

from __future__ import annotations

import pytest

from apps.deliverability import dkim
from apps.dispatch.tests.conftest import (  # noqa: F401 - fixtures
    make_contacts,
    make_service,
    pool,
    set_config,
)

PUBLIC_URL = "https://edm.example.test"


@pytest.fixture(autouse=True)
def _public_url(settings):
    settings.EDM_PUBLIC_URL = PUBLIC_URL
    settings.EDM_BOUNCE_DOMAIN = ""
    dkim.cache_clear()
    yield
    dkim.cache_clear()
