"""Contacts, tags and the ONE relation between them.

* ``Contact.email`` is stored lower-cased (normalised by the services), so the plain
  unique constraint ``(owner, email)`` makes addresses unique per owner case-insensitively
  and serves ``INSERT … ON CONFLICT (owner_id, email)`` directly.
* Membership lives only in :class:`ContactTag` (unique ``(tag, contact)``, indexed both
  ways). ``Tag.contact_count`` is changed in the same transaction as every membership
  change by the services in ``services.py``; never write ``ContactTag`` rows elsewhere.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.core.models import TimeStampedModel


class Contact(TimeStampedModel):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
        BOUNCED = "bounced", "Bounced"
        COMPLAINED = "complained", "Complained"

    # (owner, email) unique and (owner, status) cover lookups by owner.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="contacts",
        db_index=False,
    )
    email = models.EmailField(max_length=254)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    source = models.CharField(max_length=32, blank=True, default="")
    tags = models.ManyToManyField("Tag", through="ContactTag", related_name="contacts")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "email"], name="contact_owner_email_uniq"),
        ]
        indexes = [
            models.Index(fields=["owner", "status"], name="contact_owner_status_idx"),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def is_sendable(self) -> bool:
        return self.status == self.Status.ACTIVE


class Tag(TimeStampedModel):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tags"
    )
    name = models.CharField(max_length=100)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    contact_count = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="tag_owner_name_uniq"),
        ]

    def __str__(self) -> str:
        return self.name


class ContactTag(models.Model):
    """Membership of a contact in a tag: the single source of truth."""

    # The composite indexes below cover both directions; no separate FK indexes.
    tag = models.ForeignKey(
        Tag, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tag", "contact"], name="contacttag_tag_contact_uniq"),
        ]
        indexes = [
            models.Index(fields=["contact", "tag"], name="contacttag_contact_tag_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.tag_id}"
