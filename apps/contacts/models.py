"""Contacts, tags, the ONE relation between them, and CSV import jobs.

* ``Contact.email`` is stored lower-cased (normalised by the services), so the plain
  unique constraint ``(owner, email)`` makes addresses unique per owner case-insensitively
  and serves ``INSERT … ON CONFLICT (owner_id, email)`` directly.
* Membership lives only in :class:`ContactTag`, whose primary key is the pair
  ``(tag, contact)`` (no surrogate id: one index fewer to write on every membership
  change) with a second index ``(contact, tag)`` for the other direction.
  ``Tag.contact_count`` is changed in the same transaction as every membership change by
  the services in ``services/``; never write ``ContactTag`` rows elsewhere.
* :class:`ContactImport` is one CSV import: its counters are committed together with
  each merged chunk, so what they say is what is stored. Rejected rows are kept in
  :class:`ContactImportRejection` with their line number and reason.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from apps.core.models import TimeStampedModel

MAX_NAME_LENGTH = 150
# A contact's attributes, as UTF-8 JSON, are at most this long (a page of 50 contacts
# stays a few megabytes at worst; personalization needs a few fields, not documents).
MAX_ATTRIBUTES_BYTES = 64 * 1024


class ContactQuerySet(models.QuerySet):
    def owned_by(self, owner) -> ContactQuerySet:
        return self.filter(owner=owner)

    def sendable(self) -> ContactQuerySet:
        return self.filter(status=Contact.Status.ACTIVE)


class Contact(TimeStampedModel):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Complained"

    # (owner, email) unique and (owner, id) cover every lookup by owner; no FK index.
    # No foreign-key constraint in PostgreSQL either: its per-row check (a deferred
    # trigger) took a third of a million-row import. The owner is always set by the
    # services from an authenticated user, and deleting a user still cascades to its
    # contacts through Django's deletion collector.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="contacts",
        db_index=False,
        db_constraint=False,
    )
    email = models.EmailField(max_length=254)
    first_name = models.CharField(max_length=MAX_NAME_LENGTH, blank=True)
    last_name = models.CharField(max_length=MAX_NAME_LENGTH, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    source = models.CharField(max_length=32, blank=True, default="")
    tags = models.ManyToManyField("Tag", through="ContactTag", related_name="contacts")

    objects = ContactQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "email"], name="contact_owner_email_uniq"),
        ]
        indexes = [
            # Keyset pages of one owner's contacts (newest first) read this index only.
            models.Index(fields=["owner", "id"], name="contact_owner_id_idx"),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def is_sendable(self) -> bool:
        return self.status == self.Status.ACTIVE


class Tag(TimeStampedModel):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tags", db_index=False
    )
    name = models.CharField(max_length=100)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    contact_count = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="tag_owner_name_uniq"),
        ]

    def __str__(self) -> str:
        return self.name


class ContactTag(models.Model):
    """Membership of a contact in a tag: the single source of truth."""

    pk = models.CompositePrimaryKey("tag", "contact")
    # The primary key (tag, contact) and the index (contact, tag) cover both directions.
    # No foreign-key constraints in PostgreSQL: their per-row triggers would double the
    # cost of tagging 100,000 contacts. Memberships are written and deleted only by the
    # services (which delete them with their contact or tag), Django's deletion collector
    # still cascades, and ``manage.py check_tag_consistency`` proves there are no orphans.
    tag = models.ForeignKey(
        Tag,
        on_delete=models.CASCADE,
        related_name="memberships",
        db_index=False,
        db_constraint=False,
    )
    contact = models.ForeignKey(
        Contact,
        on_delete=models.CASCADE,
        related_name="memberships",
        db_index=False,
        db_constraint=False,
    )
    # A database default, so the set-based INSERT … SELECT of the services need not name it.
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            models.Index(fields=["contact", "tag"], name="contacttag_contact_tag_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.tag_id}:{self.contact_id}"


class ContactImport(models.Model):
    """One CSV import: the uploaded file, its options, live counters and outcome."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="contact_imports"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="who started the import (the actor of its import.completed event)",
    )
    file = models.FileField(upload_to="imports/%Y/%m/", blank=True)
    original_name = models.CharField(max_length=255, blank=True)
    tag_names = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    bytes_total = models.BigIntegerField(default=0)
    bytes_read = models.BigIntegerField(default=0)
    rows_read = models.BigIntegerField(default=0)
    rows_created = models.BigIntegerField(default=0)
    rows_updated = models.BigIntegerField(default=0)
    rows_unchanged = models.BigIntegerField(default=0)
    rows_rejected = models.BigIntegerField(default=0)
    rows_skipped = models.BigIntegerField(
        default=0,
        help_text="Lines read but not imported as themselves, each named in the report: "
        "empty lines, and earlier lines of an address repeated nearby (the later line's "
        "values are the ones stored).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Import #{self.pk} ({self.original_name or 'file'})"

    @property
    def rows_imported(self) -> int:
        """Rows that are now stored as contacts (created, updated or already identical)."""
        return self.rows_created + self.rows_updated + self.rows_unchanged

    @property
    def percent(self) -> float:
        if self.status == self.Status.COMPLETED:
            return 100.0
        if not self.bytes_total:
            return 0.0
        return round(min(100.0, 100.0 * self.bytes_read / self.bytes_total), 1)

    @property
    def is_finished(self) -> bool:
        return self.status in {self.Status.COMPLETED, self.Status.FAILED}


class ContactImportRejection(models.Model):
    """A CSV record that was not imported: its first line number and the reason."""

    pk = models.CompositePrimaryKey("contact_import", "line")
    contact_import = models.ForeignKey(
        ContactImport, on_delete=models.CASCADE, related_name="rejections", db_index=False
    )
    line = models.PositiveIntegerField()
    reason = models.CharField(max_length=200)
    raw = models.TextField(blank=True)

    class Meta:
        ordering = ["contact_import", "line"]

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"
