"""Deliverability: the suppression list, feedback (unsubscribes, bounces, complaints),
open/click tracking, inbound mail kept for review, and DKIM keys.

* :class:`Suppression` is the durable "never mail this" record: per owner, or global
  (``owner`` empty, kept by operators), for one address or a whole domain. It outlives the
  contact: deleting a contact keeps it, and every import or upsert reads it. A contact's
  ``status`` is the fast flag the dispatcher reads; the suppression is why it holds.
* :class:`FeedbackEvent` is one unsubscribe, bounce or complaint, counted per task.
  ``event_key`` is unique: the same provider event or DSN delivered twice is one row.
* :class:`TrackingEvent` is one open or click. ``task_id`` and ``contact_id`` carry no
  foreign-key constraint: a link keeps working, and its event is kept, after the task or
  the contact is deleted.
* :class:`InboundMessage` keeps every message ``process_inbound`` read (DSN, ARF, mailto
  unsubscribe, or anything else), with what was made of it: nothing unmatched or
  unparsable is ever dropped.
* :class:`DkimKey` is a signing key for a domain (optionally for one service only); the
  private key is encrypted at rest like SMTP passwords.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from apps.services import crypto


class Suppression(models.Model):
    class Reason(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        BOUNCED = "bounced", "Hard bounce"
        COMPLAINED = "complained", "Complaint"
        MANUAL = "manual", "Added by hand"
        IMPORTED = "imported", "Imported"

    # Empty: a global entry (operators), honoured for every owner.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    email = models.CharField(max_length=254, blank=True, help_text="Lower-cased address.")
    domain = models.CharField(max_length=253, blank=True, help_text="Lower-cased domain.")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    source = models.CharField(max_length=64, blank=True, help_text="What added it.")
    note = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(email="") & ~Q(domain="")) | (~Q(email="") & Q(domain="")),
                name="suppression_email_xor_domain",
            ),
            models.UniqueConstraint(
                fields=["owner", "email"],
                condition=~Q(email=""),
                nulls_distinct=False,
                name="suppression_owner_email_uniq",
            ),
            models.UniqueConstraint(
                fields=["owner", "domain"],
                condition=~Q(domain=""),
                nulls_distinct=False,
                name="suppression_owner_domain_uniq",
            ),
        ]
        indexes = [
            # Lookups by address or domain whatever the owner (global entries included).
            models.Index(fields=["email"], name="suppression_email_idx", condition=~Q(email="")),
            models.Index(fields=["domain"], name="suppression_domain_idx", condition=~Q(domain="")),
        ]

    def __str__(self) -> str:
        return self.email or f"@{self.domain}"

    @property
    def target(self) -> str:
        return self.email or f"@{self.domain}"


class SuppressionLift(models.Model):
    """The audit record of a suppression an operator lifted (the entry itself is gone)."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    email = models.CharField(max_length=254, blank=True)
    domain = models.CharField(max_length=253, blank=True)
    original_reason = models.CharField(max_length=16)
    suppressed_at = models.DateTimeField()
    reason = models.TextField(help_text="Why the operator lifted it.")
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    lifted_at = models.DateTimeField(db_default=Now())
    contacts_reactivated = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"lifted {self.email or '@' + self.domain}"


class FeedbackEvent(models.Model):
    class Kind(models.TextChoices):
        UNSUBSCRIBE = "unsubscribe", "Unsubscribe"
        HARD_BOUNCE = "hard_bounce", "Hard bounce"
        SOFT_BOUNCE = "soft_bounce", "Soft bounce"
        COMPLAINT = "complaint", "Complaint"

    # Empty when the event matched no message of ours (kept for review).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    email = models.CharField(max_length=254)
    contact_id = models.BigIntegerField(null=True, blank=True)
    task_id = models.BigIntegerField(null=True, blank=True)
    subtask_id = models.BigIntegerField(null=True, blank=True)
    source = models.CharField(max_length=64, help_text="one-click, preferences, dsn, arf, …")
    event_key = models.CharField(max_length=255, unique=True)
    detail = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            models.Index(fields=["task_id", "kind"], name="feedback_task_kind_idx"),
            models.Index(fields=["owner", "-created_at"], name="feedback_owner_created_idx"),
            models.Index(fields=["email", "kind"], name="feedback_email_kind_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.email}"


class TrackingEvent(models.Model):
    class Kind(models.TextChoices):
        OPEN = "open", "Open"
        CLICK = "click", "Click"

    id = models.BigAutoField(primary_key=True)
    task_id = models.BigIntegerField()
    contact_id = models.BigIntegerField()
    kind = models.CharField(max_length=8, choices=Kind.choices)
    url = models.TextField(blank=True)
    # A proxy prefetch (Apple Mail Privacy Protection and the like), not a person.
    is_machine = models.BooleanField(default=False)
    user_agent = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["task_id", "kind"], name="tracking_task_kind_idx")]

    def __str__(self) -> str:
        return f"{self.kind} of task {self.task_id}"


class InboundMessage(models.Model):
    class Status(models.TextChoices):
        PROCESSED = "processed", "Processed"
        UNMATCHED = "unmatched", "Unmatched (for review)"
        UNPARSABLE = "unparsable", "Unparsable (for review)"
        IGNORED = "ignored", "Not feedback (for review)"

    class Kind(models.TextChoices):
        DSN = "dsn", "Delivery status notification"
        ARF = "arf", "Complaint (ARF)"
        UNSUBSCRIBE = "unsubscribe", "Unsubscribe by mail"
        OTHER = "other", "Other"

    sha256 = models.CharField(max_length=64, unique=True)
    source = models.CharField(max_length=255, help_text="folder, mbox or IMAP mailbox it came from")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.OTHER)
    status = models.CharField(max_length=16, choices=Status.choices)
    detail = models.TextField(blank=True)
    subject = models.CharField(max_length=255, blank=True)
    raw = models.BinaryField()
    received_at = models.DateTimeField(db_default=Now())
    reviewed = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["status", "-received_at"], name="inbound_status_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.status}: {self.subject[:60]}"


class DkimKey(models.Model):
    """A DKIM key. A key of a service signs that service's mail; a key without a service
    signs every message whose From address is in ``domain``."""

    domain = models.CharField(max_length=253, help_text="The d= domain (lower-case).")
    selector = models.CharField(max_length=63, help_text="The s= selector.")
    service = models.ForeignKey(
        "services.EmailService",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only this service's mail; empty: every message from the domain.",
    )
    private_key_encrypted = models.TextField(editable=False)
    public_key = models.TextField(editable=False, help_text="Base64 DER (the p= value).")
    is_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "DKIM key"
        constraints = [
            models.UniqueConstraint(
                fields=["domain", "service"], nulls_distinct=False, name="dkimkey_domain_service"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    # The PEM private key. Never log it.
    private_key = crypto.secret("private_key_encrypted")

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_value(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_key}"
