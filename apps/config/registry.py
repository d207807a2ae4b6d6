"""Every configuration key EDM knows: type, validation, default, description.

A key is ``<category>.<name>``; categories are ``queue``, ``backoff``, ``dlq``,
``recovery``, ``monitoring``, ``alerts``, ``deliverability``, ``events``. Code reads values with
:func:`apps.config.selectors.config_get`; writes go through :mod:`apps.config.services`,
which validate every value with :meth:`Key.clean` first.

Types and what :meth:`Key.clean` accepts (the stored value is the cleaned one):

* ``int`` - an integer (``5``, ``5.0``, ``"5"``); ``min``/``max`` apply.
* ``float`` - a number (``0.5``, ``"0.5"``); ``min``/``max`` apply.
* ``bool`` - ``true``/``false`` (also ``"yes"``, ``"off"``, ``1``, ``0``).
* ``string`` - text; ``choices`` apply when given.
* ``duration`` - seconds, stored as a number: ``90``, ``"90s"``, ``"30m"``, ``"1h30m"``,
  ``"2d"``; ``min``/``max`` apply (in seconds).
* ``enum`` - one of ``choices``.
* ``json`` - any JSON value, checked against ``schema`` (JSON Schema) when given.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = (
    "queue",
    "backoff",
    "dlq",
    "recovery",
    "monitoring",
    "alerts",
    "deliverability",
    "events",
)
TYPES = ("int", "float", "bool", "string", "duration", "enum", "json")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ConfigValueError(ValueError):
    """A value that does not fit its key; the message says why (no key name in it)."""


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90"``, ``"90s"``, ``"30m"``, ``"1h30m"``, ``"2d"``."""
    if isinstance(value, bool):
        raise ConfigValueError("must be a duration in seconds or like '30s', '5m', '1h30m'")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            return float(text) if "." in text else int(text)
        except ValueError:
            pass
        parts = _DURATION_PART.findall(text)
        if parts and "".join(f"{n}{u}" for n, u in parts).lower() == text.lower():
            total = sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in parts)
            return int(total) if total == int(total) else total
    raise ConfigValueError("must be a duration in seconds or like '30s', '5m', '1h30m'")


@dataclass(frozen=True)
class Key:
    """The declaration of one configuration key."""

    key: str
    type: str  # one of TYPES
    default: Any
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = field(default_factory=tuple)
    schema: dict | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"{self.key}: unknown type {self.type!r}")
        if self.type == "enum" and not self.choices:
            raise ValueError(f"{self.key}: an enum needs choices")
        # A default that fails its own validation would make a fresh database unusable.
        self.clean(self.default)

    @property
    def category(self) -> str:
        return self.key.split(".", 1)[0]

    def clean(self, value: Any) -> Any:
        """The value converted to this key's type; raises ConfigValueError saying why not."""
        cleaned = _CLEANERS[self.type](self, value)
        if self.type in ("int", "float", "duration"):
            if self.min is not None and cleaned < self.min:
                raise ConfigValueError(f"must be at least {_number(self.min)} (got {cleaned})")
            if self.max is not None and cleaned > self.max:
                raise ConfigValueError(f"must be at most {_number(self.max)} (got {cleaned})")
        if self.choices and cleaned not in self.choices:
            raise ConfigValueError(f"must be one of {', '.join(self.choices)} (got {cleaned!r})")
        if self.schema is not None:
            _check_schema(self.schema, cleaned)
        return cleaned

    def describe(self) -> dict:
        """The declaration as JSON-able data (for the API and the export)."""
        return {
            "type": self.type,
            "default": self.default,
            "min": self.min,
            "max": self.max,
            "choices": list(self.choices) or None,
            "schema": self.schema,
        }


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _clean_int(key: Key, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigValueError("must be an integer (got a boolean)")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigValueError(f"must be an integer (got {value!r})")


def _clean_float(key: Key, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigValueError("must be a number (got a boolean)")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ConfigValueError(f"must be a number (got {value!r})") from None
    else:
        raise ConfigValueError(f"must be a number (got {value!r})")
    if not math.isfinite(number):
        raise ConfigValueError("must be a finite number")
    return number


def _clean_bool(key: Key, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ConfigValueError(f"must be true or false (got {value!r})")


def _clean_string(key: Key, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigValueError(f"must be a string (got {value!r})")
    return value


def _clean_duration(key: Key, value: Any) -> float:
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigValueError(f"must be a non-negative duration (got {value!r})")
    return seconds


def _clean_enum(key: Key, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigValueError(f"must be one of {', '.join(key.choices)} (got {value!r})")
    return value.strip()


def _clean_json(key: Key, value: Any) -> Any:
    return value


def _check_schema(schema: dict, value: Any) -> None:
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        raise ConfigValueError(
            f"does not match its schema{f' at {where}' if where else ''}: {exc.message}"
        ) from None


_CLEANERS = {
    "int": _clean_int,
    "float": _clean_float,
    "bool": _clean_bool,
    "string": _clean_string,
    "duration": _clean_duration,
    "enum": _clean_enum,
    "json": _clean_json,
}

KEYS: dict[str, Key] = {}


def register(*keys: Key) -> None:
    for key in keys:
        if key.category not in CATEGORIES:
            raise ValueError(f"{key.key}: unknown category {key.category!r}")
        KEYS[key.key] = key


def get_key(name: str) -> Key:
    """The declaration of ``name``; raises ConfigValueError for an unknown key."""
    try:
        return KEYS[name]
    except KeyError:
        raise ConfigValueError(f"unknown configuration key {name!r}") from None


# Every number has a maximum that keeps the system working: the dispatcher adds these
# durations to now() (a timestamp lasts until the year 294276, but a lease of "99999999w"
# is past it), Python's datetime subtracts them (years 1-9999), and quotas are stored in
# PostgreSQL integers. The maxima below are generous for operations and far inside those
# limits; a test sets every key to its maximum and runs a tick, recovery and maintenance.
HOUR = 3600
DAY = 24 * HOUR
# The largest value of a PostgreSQL ``integer`` (a service's daily quota is one).
PG_INT_MAX = 2_147_483_647
MAX_DELAY = 30 * DAY

_DELAYS_SCHEMA = {
    "type": "array",
    "items": {"type": "number", "minimum": 0, "maximum": MAX_DELAY},
    "minItems": 1,
    "maxItems": 100,
}
_STRINGS_SCHEMA = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": 200},
    "maxItems": 100,
}

register(
    Key(
        "queue.default_sending_rate",
        "float",
        1.0,
        "Default minimum seconds between two sends of a new service.",
        min=0,
        max=DAY,
    ),
    Key(
        "queue.default_daily_quota",
        "int",
        10000,
        "Default daily quota of a new service (0: no limit).",
        min=0,
        max=PG_INT_MAX,
    ),
    Key(
        "queue.batch_size",
        "int",
        1000,
        "Most subtasks one dispatcher tick claims (each service it serves gets its whole "
        "chunk, what it sends in the next few seconds, within this; the rest wait for the "
        "next tick, which comes at once while there is more).",
        min=1,
        max=10000,
    ),
    Key(
        "queue.dispatchers",
        "int",
        2,
        "Dispatcher loops allowed at once across the whole cluster.",
        min=0,
        max=64,
    ),
    Key(
        "queue.concurrency",
        "int",
        0,
        "Concurrent SMTP connections per dispatcher loop (0: one per ready service, "
        "within queue.max_connections).",
        min=0,
        max=10000,
    ),
    Key(
        "queue.max_connections",
        "int",
        1000,
        "Most SMTP connections open at once across the cluster when queue.concurrency "
        "is 0 (each dispatcher loop takes an equal share).",
        min=1,
        max=100000,
    ),
    Key(
        "queue.sender",
        "enum",
        "auto",
        "How a dispatcher loop carries its SMTP connections: threads (one each), events "
        "(all on one event loop: far less CPU per message with hundreds of connections), "
        "or auto (threads up to 8 connections, events beyond). Read when a dispatcher "
        "loop starts.",
        choices=("auto", "threads", "events"),
    ),
    Key(
        "queue.lease_seconds",
        "duration",
        120,
        "How long an allocated subtask stays reserved by its dispatcher.",
        min=5,
        max=DAY,
    ),
    Key(
        "backoff.strategy",
        "enum",
        "exponential",
        "Delay between retries.",
        choices=("fixed", "linear", "exponential", "fibonacci", "custom"),
    ),
    Key("backoff.initial", "duration", 60, "First retry delay (seconds).", min=0, max=MAX_DELAY),
    Key("backoff.multiplier", "float", 2.0, "Growth factor (exponential/linear).", min=1, max=10),
    Key(
        "backoff.max_delay",
        "duration",
        3600,
        "Longest retry delay (seconds).",
        min=0,
        max=MAX_DELAY,
    ),
    Key(
        "backoff.jitter",
        "float",
        0.1,
        "Random spread applied to each delay, as a fraction.",
        min=0,
        max=1,
    ),
    Key(
        "backoff.max_retries",
        "int",
        5,
        "Attempts after the first before a message is dead-lettered.",
        min=0,
        max=100,
    ),
    Key(
        "backoff.custom_delays",
        "json",
        [60, 300, 900, 3600],
        "Delays (seconds) used by the custom strategy.",
        schema=_DELAYS_SCHEMA,
    ),
    Key(
        "backoff.throttle_delay",
        "duration",
        60,
        "How far a provider's 421/429 pushes the service's next_available_at.",
        min=0,
        max=DAY,
    ),
    Key(
        "dlq.max_age",
        "duration",
        3 * 86400,
        "A message older than this is dead-lettered instead of retried.",
        min=60,
        max=365 * DAY,
    ),
    Key(
        "dlq.immediate_error_types",
        "json",
        [],
        "Error classes that go straight to the dead-letter queue.",
        schema=_STRINGS_SCHEMA,
    ),
    Key(
        "dlq.auto_reprocess_after",
        "duration",
        0,
        "Reprocess dead letters automatically after this delay (0: never).",
        min=0,
        max=365 * DAY,
    ),
    Key(
        "dlq.retention_days",
        "int",
        30,
        "Resolved dead letters are deleted after this many days.",
        min=1,
        max=3650,
    ),
    Key(
        "recovery.stuck_threshold",
        "duration",
        1800,
        "A sending task with no progress for this long is re-queued.",
        min=60,
        max=7 * DAY,
    ),
    Key(
        "recovery.subtask_timeout",
        "duration",
        600,
        "Longest time a subtask may stay in flight.",
        min=30,
        max=DAY,
    ),
    Key(
        "recovery.resend_ambiguous",
        "bool",
        False,
        "Resend messages whose outcome is unknown after a crash.",
    ),
    Key(
        "recovery.service_failure_limit",
        "int",
        5,
        "Consecutive service faults before a service is disabled.",
        min=1,
        max=10000,
    ),
    Key(
        "recovery.service_cooldown",
        "duration",
        60,
        "How far a service fault pushes next_available_at.",
        min=0,
        max=DAY,
    ),
    Key(
        "monitoring.sample_interval",
        "duration",
        60,
        "How often the monitor loop stores a system sample (queue depth, sends by "
        "outcome, services, dead letters, dispatchers, database).",
        min=5,
        max=3600,
    ),
    Key(
        "monitoring.metrics_retention_days",
        "int",
        30,
        "Samples, processing metrics of finished tasks, resolved alerts and delivered "
        "notifications older than this are deleted.",
        min=1,
        max=3650,
    ),
    Key(
        "monitoring.heartbeat_timeout",
        "duration",
        60,
        "With no dispatcher heartbeat for this long, system-health answers 503.",
        min=5,
        max=DAY,
    ),
    Key("alerts.enabled", "bool", True, "Evaluate alert rules."),
    Key(
        "alerts.evaluation_interval",
        "duration",
        10,
        "Seconds between two rounds of rule evaluation.",
        min=1,
        max=30,
    ),
    Key(
        "alerts.repeat_interval",
        "duration",
        4 * 3600,
        "A firing alert nobody acknowledged is notified again this often (0: never).",
        min=0,
        max=7 * DAY,
    ),
    Key("alerts.notify_resolved", "bool", True, "Notify when an alert resolves."),
    Key(
        "alerts.event_window",
        "duration",
        900,
        "How long an event stays in view of the rules: a dead letter that entered, "
        "the failure rate of a task that finished.",
        min=60,
        max=7 * DAY,
    ),
    Key(
        "alerts.email_service",
        "string",
        "",
        "Name of the email service alert e-mails go through (empty: the first enabled "
        "service by name). Best a service of a pool no task uses.",
    ),
    Key(
        "alerts.delivery_attempts",
        "int",
        8,
        "Attempts at delivering one notification before it is given up.",
        min=1,
        max=50,
    ),
    Key(
        "deliverability.soft_bounce_limit",
        "int",
        3,
        "Soft bounces of an address within the window before it counts as bounced.",
        min=1,
        max=100,
    ),
    Key(
        "deliverability.soft_bounce_window",
        "duration",
        30 * 86400,
        "How far back soft bounces are counted (seconds).",
        min=3600,
        max=365 * 86400,
    ),
)

# The outbox's relay, webhooks and retention (apps.events).
register(
    Key(
        "events.relays",
        "int",
        1,
        "Relay loops in the cluster: each publishes events to webhook endpoints, delivers "
        "them and advances the reporting projections.",
        min=0,
        max=16,
    ),
    Key(
        "events.retention",
        "duration",
        7 * DAY,
        "Published events older than this are deleted (a projection can be rebuilt from "
        "the events retained).",
        min=HOUR,
        max=3650 * DAY,
    ),
    Key(
        "events.webhook_timeout",
        "duration",
        5,
        "Seconds a webhook endpoint has to connect and to answer.",
        min=1,
        max=30,
    ),
    Key(
        "events.webhook_retry_delays",
        "json",
        [5, 300, 1800, 7200, 18000, 36000, 36000],
        "Seconds before each retry of a webhook delivery; after the last one the delivery "
        "is dead (attempts: one more than the delays).",
        schema=_DELAYS_SCHEMA,
    ),
    Key(
        "events.webhook_disable_after",
        "int",
        50,
        "Consecutive failed attempts after which an endpoint is disabled (with an alert).",
        min=1,
        max=100000,
    ),
    Key(
        "events.webhook_rotation_overlap",
        "duration",
        DAY,
        "After a secret rotation, how long the previous secret still signs (a second signature).",
        min=0,
        max=30 * DAY,
    ),
)
