"""Every configuration key is bounded, so no accepted value can break the system."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.config import services
from apps.config.models import SystemConfig
from apps.config.registry import KEYS
from apps.config.selectors import config_cache_clear, config_get

NUMBER_TYPES = ("int", "float", "duration")


def _schema_is_bounded(schema: dict) -> bool:
    if schema.get("type") == "array":
        return "maxItems" in schema and _schema_is_bounded(schema.get("items", {}))
    if schema.get("type") == "number":
        return "maximum" in schema
    if schema.get("type") == "string":
        return "maxLength" in schema
    return False


def test_every_number_key_declares_a_maximum():
    unbounded = [k.key for k in KEYS.values() if k.type in NUMBER_TYPES and k.max is None]
    assert unbounded == []


def test_every_json_key_has_a_schema_that_bounds_its_size_and_numbers():
    unbounded = [
        k.key
        for k in KEYS.values()
        if k.type == "json" and (k.schema is None or not _schema_is_bounded(k.schema))
    ]
    assert unbounded == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("queue.lease_seconds", "99999999w"),
        ("dlq.retention_days", 1_000_000),
        ("queue.default_daily_quota", 10**12),
        ("backoff.custom_delays", [1e300]),
        ("backoff.multiplier", 1e300),
    ],
)
@pytest.mark.django_db
def test_a_value_past_the_maximum_is_refused_and_nothing_is_stored(key, value):
    before = config_get(key)
    with pytest.raises(ValidationError, match=r"at most|maximum"):
        services.config_set(key=key, value=value, reason="too big")
    config_cache_clear()
    assert config_get(key) == before


@pytest.mark.django_db
def test_a_stored_value_the_key_no_longer_accepts_is_served_as_its_default(caplog):
    # As if written before the maximum existed (or by hand in SQL).
    SystemConfig.objects.filter(key="queue.lease_seconds").update(value=6 * 10**13)
    config_cache_clear()
    assert config_get("queue.lease_seconds") == KEYS["queue.lease_seconds"].default
    assert "queue.lease_seconds" in caplog.text
    assert "refused" in caplog.text
