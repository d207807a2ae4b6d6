"""The outbox: one row per thing that happened, written in the transaction of the change.

An :class:`Event` is appended by the service function that makes the change
(``apps.events.services.event_append``), or set-based by the statement that makes many
changes at once (a dispatch chunk's outcome: ``INSERT INTO events_event … SELECT``), never by
a signal. A rolled-back change therefore never leaves its event behind. ``uid`` and
``occurred_at`` have database defaults, so a SQL insert may leave them out.

``published_at`` is set by the relay once the event has been handed to every endpoint that
subscribes to it; the partial index keeps the relay's claim of unpublished events cheap at any
size of the table.

``txid`` is the id of the transaction that appended the event (``pg_current_xact_id()``, a
database default). Ids of a bigserial are taken when a row is inserted but become visible when
its transaction commits, so a reader that keeps "every id up to N" can miss an event that
commits later with a lower id. A projection therefore reads in ``(txid, id)`` order, and only
events of transactions older than every transaction still running
(``pg_snapshot_xmin(pg_current_snapshot())``): no new event can appear behind its checkpoint
(``apps.events.projections``).

The other models: webhook endpoints, their deliveries and attempts
(:class:`WebhookEndpoint`, :class:`WebhookDelivery`, :class:`WebhookAttempt`), the
projections' checkpoints and read models (:class:`Projection`, :class:`ProcessedEvent`,
:class:`OwnerDailyCount`, :class:`TaskDailyCount`) and the relay loops' leases
(:class:`RelayLease`).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Cast, Now

from apps.services import crypto


def _current_txid():
    return Cast(
        Cast(models.Func(function="pg_current_xact_id"), models.TextField()),
        models.BigIntegerField(),
    )


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
    txid = models.BigIntegerField(
        db_default=_current_txid(),
        editable=False,
        help_text="the appending transaction (pg_current_xact_id)",
    )

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["txid", "id"], name="events_txid_idx"),
            models.Index(fields=["subject_type", "subject_id", "id"], name="events_subject_idx"),
            models.Index(fields=["owner", "id"], name="events_owner_idx"),
            models.Index(
                fields=["id"], name="events_unpublished_idx", condition=Q(published_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.id}"


# --- webhooks ------------------------------------------------------------------------------


class WebhookEndpoint(models.Model):
    """Where an owner's events are POSTed, signed per the Standard Webhooks specification.

    ``event_types`` lists the types it receives: exact names (``task.completed``), a
    subject's every type (``task.*``) or everything (``*``). ``include_system`` (operators
    only) adds the events that belong to no owner (``config.changed``, ``service.disabled``…).
    The signing secret (``whsec_…``) is stored encrypted; after a rotation the previous one
    still signs (a second signature) until ``previous_secret_expires_at``.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = ArrayField(models.CharField(max_length=64), default=list)
    include_system = models.BooleanField(
        default=False, help_text="also events of no owner (operators only)"
    )
    is_enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    secret_encrypted = models.TextField(editable=False)
    previous_secret_encrypted = models.TextField(blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_success_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_failure_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.description or self.url

    secret = crypto.secret("secret_encrypted")
    previous_secret = crypto.secret("previous_secret_encrypted")


class WebhookDelivery(models.Model):
    """One event for one endpoint: the exact body that is signed and sent on every attempt
    (so a retry or a replay carries the same ``webhook-id`` and bytes, and a pruned event
    can still be replayed)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        DEAD = "dead"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.BigIntegerField(help_text="the event's id (the event may be pruned)")
    event_uid = models.UUIDField(help_text="the webhook-id header")
    event_type = models.CharField(max_length=64)
    occurred_at = models.DateTimeField()
    body = models.TextField()
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_default="pending"
    )
    attempts = models.PositiveIntegerField(default=0, db_default=0)
    next_attempt_at = models.DateTimeField(db_default=Now())
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="", db_default="")
    created_at = models.DateTimeField(db_default=Now())
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            # An endpoint's queue, oldest event first (per-endpoint order).
            models.Index(
                fields=["endpoint", "occurred_at", "event_id"],
                name="events_delivery_queue_idx",
                condition=Q(status="pending"),
            ),
            models.Index(fields=["endpoint", "-id"], name="events_delivery_log_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} → endpoint {self.endpoint_id}"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery: when, the answer's status, how long, the error."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="+")
    attempted_at = models.DateTimeField(db_default=Now())
    ok = models.BooleanField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.FloatField()
    error = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["delivery", "id"], name="events_attempt_delivery_idx")]

    def __str__(self) -> str:
        return f"attempt of delivery {self.delivery_id}: {self.status_code or self.error}"


# --- projections --------------------------------------------------------------------------


class Projection(models.Model):
    """The checkpoint of one read model: it has consumed every event up to
    ``(position_txid, position_id)`` in ``(txid, id)`` order."""

    class Status(models.TextChoices):
        RUNNING = "running"
        PAUSED = "paused"

    name = models.CharField(max_length=64, primary_key=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    position_txid = models.BigIntegerField(default=0)
    position_id = models.BigIntegerField(default=0)
    consumed = models.BigIntegerField(default=0, help_text="events counted since the last reset")
    last_event_at = models.DateTimeField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    reset_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ProcessedEvent(models.Model):
    """An event a projection has counted: a second delivery of it counts nothing."""

    id = models.BigAutoField(primary_key=True)
    projection = models.CharField(max_length=64)
    event_id = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["projection", "event_id"], name="events_processed_once")
        ]

    def __str__(self) -> str:
        return f"{self.projection}: event {self.event_id}"


class DailyCounts(models.Model):
    """The counters of one day (UTC) of a read model."""

    day = models.DateField()
    queued = models.BigIntegerField(default=0)
    sent = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    bounced = models.BigIntegerField(default=0)
    unsubscribed = models.BigIntegerField(default=0)
    complained = models.BigIntegerField(default=0)
    opened = models.BigIntegerField(default=0)
    clicked = models.BigIntegerField(default=0)

    COUNTERS = (
        "queued",
        "sent",
        "failed",
        "bounced",
        "unsubscribed",
        "complained",
        "opened",
        "clicked",
    )

    class Meta:
        abstract = True


class OwnerDailyCount(DailyCounts):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "day"], name="events_owner_day_once")
        ]

    def __str__(self) -> str:
        return f"owner {self.owner_id} on {self.day}"


class TaskDailyCount(DailyCounts):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    task_id = models.BigIntegerField()

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(fields=["task_id", "day"], name="events_task_day_once")
        ]
        indexes = [models.Index(fields=["owner", "day"], name="events_task_owner_day_idx")]

    def __str__(self) -> str:
        return f"task {self.task_id} on {self.day}"


# --- relay loops ---------------------------------------------------------------------------


class RelayLease(models.Model):
    """A relay loop's slot (``relay-1`` … ``relay-N``, ``events.relays`` of them): held by
    one loop, renewed every second, taken over once expired."""

    name = models.CharField(max_length=32, primary_key=True)
    holder = models.CharField(max_length=64, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.IntegerField(null=True)
    started_at = models.DateTimeField(null=True)
    heartbeat_at = models.DateTimeField(null=True)
    expires_at = models.DateTimeField(null=True)
    last_prune_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
