"""Send tasks, their subtasks (one per recipient), the queues the dispatcher reads, and
the dead-letter queue.

Hot tables stay small to read:

* :class:`SubTask` rows that are ready to send are reached through the partial index
  ``subtask_ready_idx`` ``(task, next_attempt_at, id) WHERE status = 'pending'`` only; a
  pending row whose ``next_attempt_at`` lies in the future is the *waiting queue*
  (scheduled sends and retry back-off).
* Fairness reads two small tables instead of ranking the pending set:
  :class:`OwnerQueue` (one row per owner and pool with work; ``served`` is a round number
  stamped when the owner is served) and :class:`TaskQueue` (one row per queued task).
  ``ready_at`` is the earliest moment the row may have ready work (``NULL``: none).
* Runtime columns are written with ``QuerySet.update()`` / SQL by the dispatcher.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from apps.core.models import TimeStampedModel

# Statuses of a subtask that still need the dispatcher.
ACTIVE_STATUSES = ("pending", "allocated", "sending")


def sql_list(values) -> str:
    """Status values as the text of a SQL list (``'queued', 'sending'``): for the raw SQL
    that filters on the groups below. The values are constants of this module, never input."""
    return ", ".join(f"'{value}'" for value in values)


class Task(TimeStampedModel):
    """A bulk send: templates, recipients, a pool, a priority and an optional schedule.

    The status groups, defined once here and used everywhere (services, recovery, the
    admin, monitoring, raw SQL through :func:`sql_list`):

    * ``LIVE_STATUSES`` — the dispatcher serves the task (scheduled, queued, sending);
    * ``OPEN_STATUSES`` — live or paused: not finished, may still send;
    * ``FINISHED_STATUSES`` — completed, cancelled or failed: nothing more is sent;
    * ``STOPPED_STATUSES`` — cancelled or failed: what is left of it is never sent
      (dead letters and ``unknown`` subtasks of such a task are not resent).
    """

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    LIVE_STATUSES = (Status.SCHEDULED, Status.QUEUED, Status.SENDING)
    OPEN_STATUSES = (*LIVE_STATUSES, Status.PAUSED)
    FINISHED_STATUSES = (Status.COMPLETED, Status.CANCELLED, Status.FAILED)
    STOPPED_STATUSES = (Status.CANCELLED, Status.FAILED)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dispatch_tasks"
    )
    name = models.CharField(max_length=200)
    subject = models.TextField(help_text="Django template, e.g. 'Hello {{ contact.first_name }}'.")
    body_text = models.TextField(blank=True)
    body_html = models.TextField(blank=True)
    from_name = models.CharField(max_length=150, blank=True)
    pool = models.ForeignKey("services.Pool", on_delete=models.PROTECT, related_name="tasks")
    include_tags = models.ManyToManyField("contacts.Tag", blank=True, related_name="+")
    exclude_tags = models.ManyToManyField("contacts.Tag", blank=True, related_name="+")
    contacts = models.ManyToManyField("contacts.Contact", blank=True, related_name="+")
    priority = models.SmallIntegerField(default=0, help_text="Higher goes first.")
    tracking = models.BooleanField(
        default=True, help_text="Count opens (a pixel) and clicks (signed redirects)."
    )
    scheduled_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    total = models.PositiveIntegerField(default=0, editable=False)
    queued_at = models.DateTimeField(null=True, blank=True, editable=False)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    completed_at = models.DateTimeField(null=True, blank=True, editable=False)
    message_id_domain = models.CharField(max_length=253, blank=True, editable=False)
    subtask_id_floor = models.BigIntegerField(
        null=True,
        blank=True,
        editable=False,
        help_text="Below every id of the task's subtasks (drawn from the id sequence just "
        "before they were inserted): a page of them walks the primary key from here, not "
        "through the rows of every earlier task.",
    )

    class Meta:
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="task_owner_created_idx"),
            models.Index(
                fields=["status"],
                name="task_live_status_idx",
                condition=Q(status__in=["scheduled", "queued", "sending", "paused"]),  # OPEN
            ),
            # Monitoring: the tasks that finished lately (a task's failure-rate alert).
            models.Index(
                fields=["completed_at"],
                name="task_finished_idx",
                condition=Q(status__in=["completed", "cancelled", "failed"]),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED_STATUSES

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES


class SubTask(models.Model):
    """One recipient of a task. ``message_id`` is fixed at creation, reused on retries.

    A claimed row stays ``allocated`` until its chunk ends, the moment it is on the wire
    included: which one is on the wire is the chunk's position (:class:`SendChunk`), and
    progress reports it as ``sending`` (``selectors.tasks_progress``). ``Status.SENDING``
    names that counter; no row is stored with it.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ALLOCATED = "allocated", "Allocated"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        DEAD = "dead", "Dead"
        SKIPPED = "skipped", "Skipped"
        CANCELLED = "cancelled", "Cancelled"
        UNKNOWN = "unknown", "Unknown"

    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="subtasks", db_index=False
    )
    # Denormalized from the task for fair selection and owner-scoped reads.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    # No constraint: deleting a contact must not rewrite or block a task's history.
    contact = models.ForeignKey(
        "contacts.Contact",
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    to_email = models.CharField(max_length=254)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Bumped on every claim; outcomes are recorded only with the current token.
    attempt_token = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_default=Now())
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    service = models.ForeignKey(
        "services.EmailService",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    message_id = models.CharField(max_length=255)
    last_error = models.TextField(blank=True, default="")
    error_class = models.CharField(max_length=64, blank=True, default="")
    history = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The ready / waiting queue of a task; nothing else reads pending rows.
            models.Index(
                fields=["task", "next_attempt_at", "id"],
                name="subtask_ready_idx",
                condition=Q(status="pending"),
            ),
            # Progress counts, status filters, the "anything left?" check, and recovery
            # (rows in flight of the live tasks). Every status change inserts into each
            # index, so there is deliberately no other one.
            models.Index(fields=["task", "status"], name="subtask_task_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.to_email} ({self.status})"


class OwnerQueue(models.Model):
    """One lane per (pool, owner) with queued work: the central round-robin queue.

    ``served`` is a round number stamped from a sequence each time the owner is served:
    "least recently served first" is ``ORDER BY served``, never a ranking of the pending
    set. ``ready_at`` is the earliest moment this owner may have ready work in the pool
    (``NULL`` when it has none). Neither column is indexed, so the stamps a tick writes
    are HOT updates (no index entry per stamp; the table is small: one row per owner).
    """

    pool = models.ForeignKey(
        "services.Pool", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    served = models.BigIntegerField(default=0)
    ready_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pool", "owner"], name="ownerqueue_pool_owner_uniq"),
        ]

    def __str__(self) -> str:
        return f"lane of owner {self.owner_id} in pool {self.pool_id}"


class TaskQueue(models.Model):
    """One row per task the dispatcher may serve (queued, scheduled or sending).

    Indexed by (owner, pool) only, so stamping ``served`` / ``ready_at`` is a HOT update.
    """

    task = models.OneToOneField(Task, on_delete=models.CASCADE, primary_key=True, related_name="+")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    pool = models.ForeignKey(
        "services.Pool", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    priority = models.SmallIntegerField(default=0)
    served = models.BigIntegerField(default=0)
    served_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["owner", "pool"], name="taskqueue_owner_pool_idx"),
        ]

    def __str__(self) -> str:
        return f"lane of task {self.task_id}"


class DispatcherSlot(models.Model):
    """A leased dispatcher slot: at most ``queue.dispatchers`` loops hold one at a time."""

    number = models.PositiveSmallIntegerField(primary_key=True)
    holder = models.CharField(max_length=64)
    hostname = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(db_default=Now())
    heartbeat_at = models.DateTimeField(db_default=Now())
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"slot {self.number} ({self.hostname}:{self.pid})"


class DeadLetter(models.Model):
    """A subtask that ran out of attempts (or hit an error sent straight to the DLQ)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        REPROCESSING = "reprocessing", "Reprocessing"
        RESOLVED = "resolved", "Resolved"
        EXPIRED = "expired", "Expired"

    subtask = models.ForeignKey(
        SubTask, on_delete=models.CASCADE, related_name="dead_letters", db_index=False
    )
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="dead_letters")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    error_type = models.CharField(max_length=64)
    error_message = models.TextField(blank=True)
    history = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    reprocess_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subtask"], name="deadletter_subtask_uniq"),
        ]
        indexes = [
            models.Index(fields=["status", "error_type"], name="deadletter_status_type_idx"),
            models.Index(fields=["owner", "status"], name="deadletter_owner_status_idx"),
            # Monitoring: "a dead letter entered" counts the recent pending entries.
            models.Index(
                fields=["updated_at"],
                name="deadletter_pending_updated_idx",
                condition=Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"dead letter {self.pk} ({self.error_type})"


class SendChunk(models.Model):
    """The messages one dispatcher sends in a row through one held service, in order,
    and how far it got: the only row written per message.

    Before a message goes on the wire its dispatcher moves ``position`` to it (a HOT
    update of this small row, fenced by ``epoch`` and ``lease_expires_at``); the subtask
    rows themselves stay ``allocated`` and are written once, in bulk, when the chunk
    ends. So at any moment, for a live or a dead dispatcher alike: the entries before
    ``position`` that are still ``allocated`` were accepted (failures and skips are
    recorded on their subtask at once), the entry at ``position`` may be on the wire,
    the ones after it were never attempted. Recovery resolves a chunk whose lease expired
    from exactly that; pausing or cancelling a task bumps ``epoch`` of the chunks that
    hold its subtasks, so their dispatchers stop before the next message.

    ``subtask_ids``, ``tokens`` (attempt tokens of the claim) and ``task_ids`` are
    written once when the chunk starts. The row is deleted when the chunk ends.
    """

    id = models.BigAutoField(primary_key=True)
    service_id = models.IntegerField()
    holder = models.CharField(max_length=64, blank=True)
    subtask_ids = ArrayField(models.BigIntegerField())
    tokens = ArrayField(models.IntegerField())
    task_ids = ArrayField(models.BigIntegerField())
    position = models.IntegerField(default=-1)
    epoch = models.IntegerField(default=0)
    lease_expires_at = models.DateTimeField()
    started_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"chunk {self.pk} of service {self.service_id}"


class ProgressDelta(models.Model):
    """How many subtasks of a task entered (> 0) or left (< 0) each status in one
    statement: the progress counters, kept by the database itself.

    Statement-level triggers on ``dispatch_subtask`` (migration ``0005``) append one row
    per task that a statement changed, computed from its transition tables, in the
    statement's own transaction: a task's progress is the sum of its rows, exact in every
    snapshot, whoever wrote the subtasks (the dispatcher, recovery, the API, the admin, a
    migration, SQL by hand). Rows are only ever appended, never updated, so concurrent
    writers never wait for each other on them (counter rows updated in place would
    serialize every chunk of a task, and lock several tasks in varying orders). One row
    per task with a column per status, rather than a row per status, halves what a tick
    claiming from 200 tasks writes. ``progress.compact`` folds a task's rows into one now
    and then.

    ``task_id`` has no foreign key: deleting a task's subtasks appends the row that
    cancels its counts, and compaction drops what sums to zero.
    """

    id = models.BigAutoField(primary_key=True)
    task_id = models.BigIntegerField(db_index=True)
    pending = models.BigIntegerField(db_default=0)
    allocated = models.BigIntegerField(db_default=0)
    sending = models.BigIntegerField(db_default=0)
    sent = models.BigIntegerField(db_default=0)
    failed = models.BigIntegerField(db_default=0)
    dead = models.BigIntegerField(db_default=0)
    skipped = models.BigIntegerField(db_default=0)
    cancelled = models.BigIntegerField(db_default=0)
    unknown = models.BigIntegerField(db_default=0)

    def __str__(self) -> str:
        return f"progress delta of task {self.task_id}"


class TestSend(models.Model):
    """One test message of a task: rendered for a contact (or a sample one) and sent to
    one address through one service, from the task page. It is a record of what was
    tried, never a recipient of the task: no subtask, no progress, no statistics of the
    service (the service's rate and daily quota are real limits and are charged)."""

    __test__ = False  # not a test case, whatever pytest makes of the name

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="test_sends")
    # Denormalized from the task so that every list of them is owner-scoped on its own.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    service = models.ForeignKey(
        "services.EmailService", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    to_email = models.EmailField(max_length=254)
    contact_id = models.BigIntegerField(null=True, blank=True)
    subject = models.TextField(blank=True)
    message_id = models.CharField(max_length=255, blank=True)
    ok = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["task", "-id"], name="testsend_task_idx")]

    def __str__(self) -> str:
        return f"test of task {self.task_id} to {self.to_email}"
