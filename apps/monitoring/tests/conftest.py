"""Fixtures of the monitoring tests: the dispatch fixtures (pools, services on real
sinks, contacts, configuration) and outbound HTTP to loopback."""

from __future__ import annotations

import pytest

from apps.dispatch.tests.conftest import (  # noqa: F401 - fixtures
    _progress_counters_exact,
    make_contacts,
    make_service,
    pool,
    set_config,
)


@pytest.fixture
def private_ok(settings):
    """Outbound HTTP may reach loopback (EDM_WEBHOOKS_ALLOW_PRIVATE=1), over http."""
    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = True
    settings.EDM_OUTBOUND_HTTPS_ONLY = False
