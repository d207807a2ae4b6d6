from __future__ import annotations

import pytest
from django.db import transaction

from apps.config.services import config_set
from apps.events.services import event_append
from apps.events.webhooks import webhook_create


@pytest.fixture
def local_http(settings):
    """Webhooks may reach the loopback receiver over plain http (as in development)."""
    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = True
    settings.EDM_OUTBOUND_HTTPS_ONLY = False


@pytest.fixture
def endpoint_for(user, local_http):
    def make(url: str, types=("*",), owner=None):
        return webhook_create(
            owner=owner or user, actor=owner or user, url=url, event_types=list(types)
        )

    return make


@pytest.fixture
def config(db):
    def set_(key, value):
        config_set(key=key, value=value, reason="test")

    return set_


def append(event_type: str, owner, **payload):
    with transaction.atomic():
        return event_append(event_type, owner=owner, actor=owner, payload=payload)
