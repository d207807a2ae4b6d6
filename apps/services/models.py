"""Pools of email services (sender accounts) and their runtime state.

Runtime columns (``next_available_at``, ``used_quota``, counters, statistics) change on
every send: they carry no index, so those updates stay HOT, and they are written with
``QuerySet.update()`` so they are not history. Operator-facing fields are audited with
django-simple-history.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
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


class Pool(TimeStampedModel):
    """A named group of services. Shared with every user, or dedicated to some."""

    DEFAULT_NAME = "default"

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    is_shared = models.BooleanField(
        default=True, help_text="Open to every user. Otherwise only to the listed owners."
    )
    owners = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="dedicated_pools"
    )

    history = HistoricalRecords(m2m_fields=[owners])

    def __str__(self) -> str:
        return self.name


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
    port = models.PositiveIntegerField(default=25)
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
        default=1.0, help_text="Minimum seconds between two sends (fractions allowed)."
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

    history = HistoricalRecords(excluded_fields=[*RUNTIME_FIELDS, "password_encrypted"])

    def __str__(self) -> str:
        return self.name

    @property
    def password(self) -> str:
        """The decrypted password. Never log it or send it back through the API."""
        return crypto.decrypt(self.password_encrypted)

    @password.setter
    def password(self, value: str) -> None:
        self.password_encrypted = crypto.encrypt(value)
