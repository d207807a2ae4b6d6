"""Models of the monitoring app: stored metrics, alert rules and their history, and the
notification channels alerts go out through.

* Metrics: :class:`TaskWaitMetric` (queue entry → first send, written by the dispatcher),
  :class:`TaskProcessingMetric` (per task: counts, duration, throughput, failure and
  bounce rate), :class:`SystemSample` (one row per sampling interval, cluster-wide) and
  :class:`OwnerSample` (the sends of one owner in one interval: a tenant's own charts).
  Samples older than ``monitoring.metrics_retention_days`` are pruned.
* Alerts: an :class:`AlertRule` compares a metric (``apps.monitoring.rules.METRICS``)
  with a threshold; :class:`AlertCondition` remembers since when a rule's condition holds
  for a subject (the ``for_seconds`` wait); an :class:`Alert` is one episode — fired,
  maybe escalated and acknowledged, resolved. At most one alert is open per (metric,
  subject): a constraint, not a convention.
* Notifications: a :class:`NotificationChannel` (e-mail, generic webhook, Slack), one
  :class:`Notification` per alert event and channel, delivered by the monitor loop with
  retries, and one :class:`NotificationAttempt` row per try.
* :class:`MonitorLease`: the single monitor loop of the cluster (evaluation, sampling,
  delivery) holds this row's lease.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from apps.core.models import TimeStampedModel
from apps.services import crypto


class TaskWaitMetric(models.Model):
    """How long a task waited from entering the queue to its first send.

    Written once per task by the dispatcher (``INSERT … ON CONFLICT DO NOTHING``) when the
    first message of the task is accepted by a service. A task's wait *status* is read
    with it: ``waiting`` (live, no row yet), ``processing`` (a row, the task not
    finished), ``done`` (finished) — see ``selectors.wait_status``.
    """

    task = models.OneToOneField(
        "dispatch.Task", on_delete=models.CASCADE, primary_key=True, related_name="wait_metric"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
    )
    queued_at = models.DateTimeField()
    first_sent_at = models.DateTimeField()
    wait_seconds = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["-first_sent_at"], name="taskwait_first_sent_idx")]

    def __str__(self) -> str:
        return f"task {self.task_id}: {self.wait_seconds:.3f}s"


class TaskProcessingMetric(models.Model):
    """A task's outcome counts and rates, refreshed at every sample while it is live and
    a last time once it finished. The counts are also what the next sample compares
    with to know how many messages each outcome gained in the interval."""

    task = models.OneToOneField(
        "dispatch.Task",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="processing_metric",
    )
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    total = models.BigIntegerField(default=0)
    sent = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    dead = models.BigIntegerField(default=0)
    skipped = models.BigIntegerField(default=0)
    cancelled = models.BigIntegerField(default=0)
    unknown = models.BigIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(default=0.0)
    throughput_per_minute = models.FloatField(
        default=0.0, help_text="Messages with an outcome per minute since the first send."
    )
    failure_rate = models.FloatField(
        default=0.0, help_text="(failed + dead) / (sent + failed + dead)."
    )
    bounce_rate = models.FloatField(
        default=0.0,
        help_text="failed (refused by the recipient's server) / (sent + failed + dead).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"task {self.task_id}: {self.sent} sent"


class SystemSample(models.Model):
    """The whole system at one moment (every ``monitoring.sample_interval``): queue depth
    by status, the messages each outcome gained since the previous sample, service
    states, the oldest ready message, dead letters, dispatcher loops, the database."""

    taken_at = models.DateTimeField(db_default=Now(), unique=True)
    interval_seconds = models.FloatField(default=0.0)
    # Queue depth over the live tasks.
    pending = models.BigIntegerField(default=0, help_text="Ready now or later.")
    allocated = models.BigIntegerField(default=0)
    sending = models.BigIntegerField(default=0)
    waiting = models.BigIntegerField(default=0, help_text="Pending for a later moment.")
    unknown = models.BigIntegerField(default=0)
    tasks_live = models.IntegerField(default=0)
    # Outcomes gained in the interval.
    sent = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    dead = models.BigIntegerField(default=0)
    skipped = models.BigIntegerField(default=0)
    cancelled = models.BigIntegerField(default=0)
    # Services.
    services_ready = models.IntegerField(default=0)
    services_cooling = models.IntegerField(default=0)
    services_held = models.IntegerField(default=0)
    services_exhausted = models.IntegerField(default=0)
    services_disabled = models.IntegerField(default=0)
    oldest_pending_seconds = models.FloatField(null=True, blank=True)
    dlq_pending = models.IntegerField(default=0)
    dispatchers_live = models.IntegerField(default=0)
    db_connections = models.IntegerField(default=0)
    db_size_bytes = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-taken_at"]

    def __str__(self) -> str:
        return f"sample at {self.taken_at:%Y-%m-%d %H:%M:%S}"

    @property
    def backlog(self) -> int:
        """Messages not yet sent: pending (ready or waiting), claimed, on the wire."""
        return self.pending + self.allocated + self.sending


class OwnerSample(models.Model):
    """What one owner's tasks gained per outcome in one sampling interval (rows only for
    owners whose tasks moved): the sends-per-minute chart of a tenant's dashboard."""

    taken_at = models.DateTimeField()
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    sent = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)
    dead = models.BigIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["owner", "taken_at"], name="ownersample_owner_time_idx")]

    def __str__(self) -> str:
        return f"owner {self.owner_id} at {self.taken_at:%H:%M}: {self.sent} sent"


class ServiceRate(models.Model):
    """Each email service's send counters at the last sample and the rate since the
    sample before (the dashboard's per-service throughput): one row per service,
    overwritten at every sample."""

    service = models.OneToOneField(
        "services.EmailService", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    taken_at = models.DateTimeField()
    total_sent = models.BigIntegerField(default=0)
    total_failed = models.BigIntegerField(default=0)
    sent_per_minute = models.FloatField(default=0.0)
    failed_per_minute = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"service {self.service_id}: {self.sent_per_minute:.1f}/min"


class Level(models.TextChoices):
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"
    EMERGENCY = "emergency", "Emergency"


# Escalation order: a higher rank replaces a lower one on the open alert.
LEVEL_RANK = {Level.WARNING: 1, Level.CRITICAL: 2, Level.EMERGENCY: 3}


class NotificationChannel(TimeStampedModel):
    """Where alerts are sent: e-mail addresses (sent through an EDM email service), a
    generic webhook (Standard Webhooks signature) or a Slack-compatible incoming webhook.

    A webhook's signing secret (``whsec_…``) is stored encrypted and shown once, when
    the channel is created. ``consecutive_failures`` counts the deliveries that failed in
    a row: a channel with any is shown as failing until one succeeds.
    """

    class Kind(models.TextChoices):
        EMAIL = "email", "E-mail"
        WEBHOOK = "webhook", "Webhook"
        SLACK = "slack", "Slack"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    target = models.TextField(
        help_text="E-mail: addresses separated by commas. Webhook and Slack: the URL."
    )
    secret_encrypted = models.TextField(blank=True, editable=False)
    is_enabled = models.BooleanField(default=True)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    last_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_success_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    # The decrypted signing secret (webhooks). Never log it.
    secret = crypto.secret("secret_encrypted")

    @property
    def is_failing(self) -> bool:
        return self.consecutive_failures > 0

    @property
    def addresses(self) -> list[str]:
        return [part.strip() for part in self.target.split(",") if part.strip()]


class AlertRule(TimeStampedModel):
    """``metric comparison threshold`` held for ``for_seconds`` raises an alert of
    ``level``, notified through ``channels``. Rules on the same metric are the steps of
    one ladder: the open alert of a subject escalates to the highest level whose rule
    holds. ``seed`` names the rules EDM creates itself (migration
    ``0003_seed_alert_rules``)."""

    class Comparison(models.TextChoices):
        GT = "gt", ">"
        GTE = "gte", "≥"
        LT = "lt", "<"
        LTE = "lte", "≤"
        EQ = "eq", "="
        NE = "ne", "≠"

    name = models.CharField(max_length=100, unique=True)
    metric = models.CharField(max_length=64)
    comparison = models.CharField(max_length=3, choices=Comparison.choices, default="gt")
    threshold = models.FloatField()
    for_seconds = models.FloatField(
        default=0.0, help_text="How long the condition must hold before the alert fires."
    )
    level = models.CharField(max_length=16, choices=Level.choices, default=Level.WARNING)
    channels = models.ManyToManyField(NotificationChannel, blank=True, related_name="rules")
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    seed = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        ordering = ["metric", "threshold", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(for_seconds__gte=0), name="alertrule_for_not_negative"
            ),
            models.UniqueConstraint(
                fields=["seed"], condition=~Q(seed=""), name="alertrule_seed_uniq"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets this rule's condition."""
        threshold = self.threshold
        return {
            "gt": value > threshold,
            "gte": value >= threshold,
            "lt": value < threshold,
            "lte": value <= threshold,
            "eq": value == threshold,
            "ne": value != threshold,
        }[self.comparison]

    @property
    def condition(self) -> str:
        return f"{self.metric} {self.get_comparison_display()} {self.threshold:g}"


class AlertCondition(models.Model):
    """Since when a rule's condition holds for a subject (deleted when it stops): how
    ``for_seconds`` is waited out across rounds and restarts of the monitor loop."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="+", db_index=False)
    subject = models.CharField(max_length=100)
    since = models.DateTimeField()
    value = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rule", "subject"], name="alertcondition_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.rule_id}/{self.subject} since {self.since}"


class Alert(models.Model):
    """One alert episode of a (metric, subject): fired, maybe escalated, acknowledged,
    resolved (automatically when no rule of its metric holds any more, or by an
    operator). The alert history is this table."""

    class Status(models.TextChoices):
        FIRING = "firing", "Firing"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    rule = models.ForeignKey(
        AlertRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    rule_name = models.CharField(max_length=100)
    metric = models.CharField(max_length=64)
    subject = models.CharField(max_length=100, help_text="What it is about: 'task:12', 'system'…")
    subject_label = models.CharField(max_length=255, blank=True)
    # The tenant a task's alert concerns (a tenant sees these); empty for system alerts.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
    )
    level = models.CharField(max_length=16, choices=Level.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.FIRING)
    value = models.FloatField()
    threshold = models.FloatField()
    message = models.TextField(blank=True)
    fired_at = models.DateTimeField()
    escalated_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    last_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            # No second firing while one is open.
            models.UniqueConstraint(
                fields=["metric", "subject"],
                condition=~Q(status="resolved"),
                name="alert_one_open_per_subject",
            ),
        ]
        indexes = [
            models.Index(fields=["-fired_at"], name="alert_fired_idx"),
            models.Index(fields=["status"], name="alert_open_idx", condition=~Q(status="resolved")),
            models.Index(fields=["owner", "-fired_at"], name="alert_owner_fired_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.level}: {self.rule_name} ({self.subject_label or self.subject})"

    @property
    def is_open(self) -> bool:
        return self.status != self.Status.RESOLVED


class Notification(models.Model):
    """One message to one channel about one alert event (or a test), delivered by the
    monitor loop: ``pending`` until it is due, ``sending`` while a delivery holds it
    (``lease_expires_at``), then ``sent`` or — after a permanent error or the last
    attempt — ``failed``. Transient errors retry with back-off."""

    class Event(models.TextChoices):
        FIRED = "fired", "Fired"
        ESCALATED = "escalated", "Escalated"
        REMINDER = "reminder", "Reminder"
        RESOLVED = "resolved", "Resolved"
        TEST = "test", "Test"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    channel = models.ForeignKey(
        NotificationChannel, on_delete=models.CASCADE, related_name="notifications"
    )
    alert = models.ForeignKey(
        Alert, null=True, blank=True, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.CharField(max_length=16, choices=Event.choices)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_default=Now())
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="notification_due_idx",
                condition=Q(status__in=["pending", "sending"]),
            ),
            models.Index(fields=["channel", "-id"], name="notification_channel_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.channel_id} ({self.status})"


class NotificationAttempt(models.Model):
    """One try at delivering a notification, and how it went."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="attempt_log"
    )
    attempted_at = models.DateTimeField(db_default=Now())
    ok = models.BooleanField()
    permanent = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"attempt on {self.notification_id}: {'ok' if self.ok else self.error[:40]}"


class MonitorLease(models.Model):
    """The lease of the cluster's single monitor loop, and what it last saw.

    ``last_dispatcher_heartbeat_at`` keeps the newest dispatcher heartbeat the loop
    observed: a loop that ends gracefully deletes its slot row, so without it the time
    of the last heartbeat would be gone with the row."""

    name = models.CharField(max_length=32, primary_key=True)
    holder = models.CharField(max_length=64, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_round_at = models.DateTimeField(null=True, blank=True)
    last_round_ms = models.FloatField(default=0.0)
    last_sample_at = models.DateTimeField(null=True, blank=True)
    last_prune_at = models.DateTimeField(null=True, blank=True)
    last_dispatcher_heartbeat_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"monitor lease {self.name} ({self.hostname}:{self.pid})"
