"""Pools of email services (sender accounts) and their runtime state.

Runtime columns (``next_available_at``, ``used_quota``/``quota_day``, counters,
statistics) change on every send: they carry no index, so those updates stay HOT, and
the dispatcher writes them with ``QuerySet.update()`` so they are not history.
Operator-facing fields are audited with django-simple-history; operator changes are
saved with ``update_fields`` limited to those fields (see :mod:`apps.services.services`)
so they never overwrite a counter the dispatcher moved meanwhile.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone
from simple_history.models import HistoricalRecords

from apps.core.models import TimeStampedModel
from apps.services import crypto

RUNTIME_FIELDS = [
    "used_quota",
    "quota_day",
    "next_available_at",
    "last_sent_at",
    "total_sent",
    "total_failed",
    "success_rate",
    "avg_response_time",
    "consecutive_failures",
    "updated_at",
]

# What an operator edits; ``save(update_fields=...)`` is limited to these.
OPERATOR_FIELDS = [
    "pool",
    "name",
    "kind",
    "host",
    "port",
    "security",
    "username",
    "password_encrypted",
    "from_email",
    "from_name",
    "is_enabled",
    "disabled_reason",
    "daily_quota",
    "sending_rate",
]


def quota_today() -> dt.date:
    """The day quotas count for: the database's ``current_date`` (connections are UTC)."""
    return timezone.now().astimezone(dt.UTC).date()


class Pool(TimeStampedModel):
    """A named group of services. Shared with every user, or dedicated to some."""

    DEFAULT_NAME = "default"

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    is_shared = models.BooleanField(
        default=True, help_text="Open to every user. Otherwise only to the listed owners."
    )
    owners = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="dedicated_pools",
        help_text="Users a dedicated (not shared) pool is open to.",
    )

    history = HistoricalRecords(
        m2m_fields=[owners],
        history_change_reason_field=models.TextField(null=True),
        excluded_fields=["updated_at"],
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_default(self) -> bool:
        return self.name == self.DEFAULT_NAME


class EmailService(TimeStampedModel):
    class Kind(models.TextChoices):
        SMTP = "smtp", "SMTP"
        CONSOLE = "console", "Console (development)"
        FILE = "file", "File (development)"

    class Security(models.TextChoices):
        NONE = "none", "None"
        STARTTLS = "starttls", "STARTTLS"
        SSL = "ssl", "SSL/TLS"

    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="services")
    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SMTP)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(
        default=25, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    security = models.CharField(max_length=16, choices=Security.choices, default=Security.NONE)
    username = models.CharField(max_length=255, blank=True)
    password_encrypted = models.TextField(blank=True, editable=False)
    from_email = models.EmailField()
    from_name = models.CharField(max_length=150, blank=True)
    is_enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=255, blank=True)
    daily_quota = models.PositiveIntegerField(
        default=10000, help_text="Messages per day; 0 means no limit."
    )
    sending_rate = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0.0)],
        help_text="Minimum seconds between two sends (fractions allowed).",
    )

    # Runtime state, moved by the dispatcher with update(): no index, no history.
    used_quota = models.PositiveIntegerField(default=0, editable=False)
    quota_day = models.DateField(null=True, blank=True, editable=False)
    next_available_at = models.DateTimeField(db_default=Now(), editable=False)
    last_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    total_sent = models.PositiveBigIntegerField(default=0, editable=False)
    total_failed = models.PositiveBigIntegerField(default=0, editable=False)
    success_rate = models.FloatField(default=1.0, editable=False)
    avg_response_time = models.FloatField(default=0.0, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)

    history = HistoricalRecords(
        excluded_fields=[*RUNTIME_FIELDS, "password_encrypted"],
        history_change_reason_field=models.TextField(null=True),
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(sending_rate__gte=0), name="service_sending_rate_not_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(port__gte=1, port__lte=65535), name="service_port_in_range"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.kind == self.Kind.SMTP and not self.host:
            raise ValidationError({"host": "an SMTP service needs a host"})

    # The decrypted password: never log it or send it back through the API.
    password = crypto.secret("password_encrypted")

    @property
    def has_password(self) -> bool:
        return bool(self.password_encrypted)

    @property
    def quota_used_today(self) -> int:
        """Messages counted against today's quota.

        ``used_quota`` counts for ``quota_day``; a count left from an earlier day (a
        missed midnight reset) is not today's, so it reads as 0.
        """
        return self.used_quota if self.quota_day == quota_today() else 0

    @property
    def quota_left_today(self) -> int | None:
        """Messages still allowed today, or ``None`` when the quota is unlimited (0)."""
        if self.daily_quota == 0:
            return None
        return max(0, self.daily_quota - self.quota_used_today)

    @property
    def ready_in(self) -> float:
        """Seconds until the service may send again (0 when it may send now)."""
        if self.next_available_at is None:
            return 0.0
        return max(0.0, (self.next_available_at - timezone.now()).total_seconds())

    @property
    def is_ready(self) -> bool:
        return self.is_enabled and self.ready_in == 0 and self.quota_left_today != 0
