from __future__ import annotations

import pytest

from apps.config.registry import KEYS, ConfigValueError, Key, parse_duration


def test_every_registered_default_passes_its_own_validation():
    for definition in KEYS.values():
        assert definition.clean(definition.default) == definition.default


def test_keys_the_other_apps_read_are_registered():
    for name in [
        "queue.default_sending_rate",
        "queue.batch_size",
        "queue.dispatchers",
        "backoff.strategy",
        "backoff.initial",
        "backoff.multiplier",
        "backoff.max_delay",
        "backoff.jitter",
        "backoff.max_retries",
        "recovery.stuck_threshold",
        "recovery.subtask_timeout",
        "monitoring.sample_interval",
        "monitoring.metrics_retention_days",
        "alerts.evaluation_interval",
        "alerts.repeat_interval",
        "recovery.service_failure_limit",
    ]:
        assert name in KEYS
    assert KEYS["recovery.stuck_threshold"].default == 1800
    assert KEYS["recovery.subtask_timeout"].default == 600
    assert KEYS["backoff.strategy"].choices == (
        "fixed",
        "linear",
        "exponential",
        "fibonacci",
        "custom",
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("queue.batch_size", "500", 500),
        ("queue.batch_size", 500.0, 500),
        ("backoff.jitter", "0.25", 0.25),
        ("recovery.resend_ambiguous", "yes", True),
        ("recovery.resend_ambiguous", 0, False),
        ("recovery.stuck_threshold", "45m", 2700),
        ("recovery.stuck_threshold", "1h30m", 5400),
        ("backoff.initial", "1.5s", 1.5),
        ("backoff.strategy", "fibonacci", "fibonacci"),
        ("backoff.custom_delays", [1, 2.5, 10], [1, 2.5, 10]),
    ],
)
def test_values_are_converted_to_the_type_of_their_key(key, value, expected):
    cleaned = KEYS[key].clean(value)
    assert cleaned == expected
    assert type(cleaned) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("queue.batch_size", 0, "at least 1"),
        ("queue.batch_size", 10001, "at most 10000"),
        ("queue.batch_size", "many", "must be an integer"),
        ("queue.batch_size", True, "got a boolean"),
        ("queue.batch_size", 2.5, "must be an integer"),
        ("backoff.jitter", 1.5, "at most 1"),
        ("backoff.jitter", "nan", "finite"),
        ("recovery.resend_ambiguous", "maybe", "true or false"),
        ("recovery.stuck_threshold", "10 parsecs", "duration"),
        ("recovery.stuck_threshold", 59, "at least 60"),
        ("backoff.strategy", "random", "one of fixed, linear"),
        ("backoff.custom_delays", [60, -1], "schema at 1"),
        ("backoff.custom_delays", "60,300", "schema"),
        ("dlq.immediate_error_types", [""], "schema"),
    ],
)
def test_bad_values_are_refused_with_the_reason(key, value, reason):
    with pytest.raises(ConfigValueError, match=reason):
        KEYS[key].clean(value)


def test_a_key_whose_default_breaks_its_own_rules_cannot_be_declared():
    with pytest.raises(ConfigValueError, match="at least 10"):
        Key("queue.broken", "int", 1, "broken", min=10)


def test_durations_accept_units():
    assert parse_duration("2d") == 172800
    assert parse_duration("1w") == 604800
    assert parse_duration(" 90 ") == 90
    with pytest.raises(ConfigValueError):
        parse_duration("5x")
