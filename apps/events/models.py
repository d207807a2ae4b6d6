"""The outbox: one row per thing that happened, written in the transaction of the change.

An :class:`Event` is appended by the service function that makes the change
(``apps.events.services.event_append``), or set-based by the statement that makes many
changes at once (a dispatch chunk's outcome: ``INSERT INTO events_event … SELECT``), never by
a signal. A rolled-back change therefore never leaves its event behind. ``uid`` and
``occurred_at`` have database defaults, so a SQL insert may leave them out.

``published_at`` is set by the relay once the event has been handed to every endpoint that
subscribes to it; the partial index keeps the relay's claim of unpublished events cheap at any
size of the table.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Event(models.Model):
    id = models.BigAutoField(primary_key=True)
    uid = models.UUIDField(
        unique=True, editable=False, db_default=models.Func(function="gen_random_uuid")
    )
    type = models.CharField(max_length=64, help_text="one of apps.events.types.EVENT_TYPES")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        help_text="whose data the event is about (None: the system's)",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
        help_text="who made the change (None: the system)",
    )
    subject_type = models.CharField(max_length=64, blank=True, default="", db_default="")
    subject_id = models.CharField(max_length=64, blank=True, default="", db_default="")
    payload = models.JSONField(default=dict, db_default=models.Value({}, models.JSONField()))
    occurred_at = models.DateTimeField(db_default=Now(), db_index=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["subject_type", "subject_id", "id"], name="events_subject_idx"),
            models.Index(fields=["owner", "id"], name="events_owner_idx"),
            models.Index(
                fields=["id"], name="events_unpublished_idx", condition=Q(published_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.id}"
