"""System configuration: typed, validated keys with an audited history.

The set of keys, their types, validation and defaults are declared in code
(:mod:`apps.config.registry`), so a fresh database works; a row per registered key is
created after ``migrate`` (``post_migrate``) and on first change. Every change goes
through :mod:`apps.config.services` with ``save()`` so django-simple-history records
who, when, old → new and why; a database trigger bumps :class:`ConfigVersion` in the
same transaction so every process's cache notices it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords


class SystemConfig(models.Model):
    key = models.CharField(max_length=100, unique=True)
    category = models.CharField(max_length=32, db_index=True)
    value = models.JSONField()
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    history = HistoricalRecords(
        history_change_reason_field=models.TextField(null=True),
        # The author is history_user; the description is metadata from the code.
        excluded_fields=["updated_at", "updated_by", "description"],
    )

    class Meta:
        ordering = ["category", "key"]
        verbose_name = "system configuration"
        verbose_name_plural = "system configuration"

    def __str__(self) -> str:
        return self.key


class ConfigVersion(models.Model):
    """One row (``id=1``) whose ``version`` grows with every committed change.

    Readers compare it with the version their cache was loaded at: one primary-key
    lookup instead of reading every value. A statement-level trigger on
    ``config_systemconfig`` bumps it (``… + 1``) in the transaction of every write, by
    whatever path, which also serialises concurrent writers on this row.
    """

    version = models.BigIntegerField(default=0)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "configuration version"

    def __str__(self) -> str:
        return f"v{self.version}"
