"""Every configuration key EDM knows: type, validation, default, description.

A key is ``<category>.<name>``; categories are ``queue``, ``backoff``, ``dlq``,
``recovery``, ``monitoring``, ``alerts``. Code reads values with
:func:`apps.config.selectors.config_get`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ("queue", "backoff", "dlq", "recovery", "monitoring", "alerts")


@dataclass(frozen=True)
class Key:
    key: str
    type: str  # int | float | bool | string | duration | enum | json
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = field(default_factory=tuple)

    @property
    def category(self) -> str:
        return self.key.split(".", 1)[0]


KEYS: dict[str, Key] = {}


def register(*keys: Key) -> None:
    for key in keys:
        if key.category not in CATEGORIES:
            raise ValueError(f"{key.key}: unknown category {key.category!r}")
        KEYS[key.key] = key


register(
    Key("queue.default_sending_rate", "float", 1.0,
        "Default minimum seconds between two sends of a new service.", min=0),
    Key("queue.batch_size", "int", 200,
        "Most subtasks one dispatcher tick claims.", min=1, max=10000),
    Key("queue.dispatchers", "int", 2,
        "Dispatcher loops allowed at once across the whole cluster.", min=0, max=64),
    Key("queue.concurrency", "int", 8,
        "Concurrent SMTP connections per dispatcher loop.", min=1, max=256),
    Key("queue.lease_seconds", "duration", 120,
        "How long an allocated subtask stays reserved by its dispatcher.", min=5),
    Key("queue.throttle_delay", "duration", 30,
        "How far a provider's 421/429 (slow down) pushes the service's next send.", min=0),
    Key("backoff.strategy", "enum", "exponential",
        "Delay between retries.",
        choices=("fixed", "linear", "exponential", "fibonacci", "custom")),
    Key("backoff.initial", "duration", 60, "First retry delay (seconds).", min=0),
    Key("backoff.multiplier", "float", 2.0, "Growth factor (exponential/linear).", min=1),
    Key("backoff.max_delay", "duration", 3600, "Longest retry delay (seconds).", min=0),
    Key("backoff.jitter", "float", 0.1,
        "Random spread applied to each delay, as a fraction.", min=0, max=1),
    Key("backoff.max_retries", "int", 5,
        "Attempts after the first before a message is dead-lettered.", min=0, max=100),
    Key("backoff.custom_delays", "json", [60, 300, 900, 3600],
        "Delays (seconds) used by the custom strategy."),
    Key("dlq.max_age", "duration", 3 * 86400,
        "A message older than this is dead-lettered instead of retried.", min=60),
    Key("dlq.immediate_error_types", "json", [],
        "Error classes that go straight to the dead-letter queue."),
    Key("dlq.auto_reprocess_after", "duration", 0,
        "Reprocess dead letters automatically after this delay (0: never).", min=0),
    Key("dlq.retention_days", "int", 30,
        "Resolved dead letters are deleted after this many days.", min=1),
    Key("recovery.stuck_threshold", "duration", 1800,
        "A sending task with no progress for this long is re-queued.", min=60),
    Key("recovery.subtask_timeout", "duration", 600,
        "Longest time a subtask may stay in flight.", min=30),
    Key("recovery.resend_ambiguous", "bool", False,
        "Resend messages whose outcome is unknown after a crash."),
    Key("recovery.service_failure_limit", "int", 5,
        "Consecutive service faults before a service is disabled.", min=1),
    Key("recovery.service_cooldown", "duration", 60,
        "How far a service fault pushes next_available_at.", min=0),
    Key("monitoring.wait_warning", "duration", 300, "Wait time for a warning.", min=0),
    Key("monitoring.wait_critical", "duration", 600, "Wait time for a critical alert.", min=0),
    Key("monitoring.wait_emergency", "duration", 1800, "Wait time for an emergency.", min=0),
    Key("alerts.enabled", "bool", True, "Evaluate alert rules."),
)
