"""System configuration: typed, validated keys with an audited history.

The set of keys, their types, validation and defaults are declared in code
(:mod:`apps.config.registry`), so a fresh database works; a row exists once a key has
been changed (or seeded). Every change goes through the services with ``save()`` so
django-simple-history records who, when, old → new and why.
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
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )

    history = HistoricalRecords()

    class Meta:
        ordering = ["category", "key"]
        verbose_name = "system configuration"
        verbose_name_plural = "system configuration"

    def __str__(self) -> str:
        return self.key
