"""Shapes of the contacts API. Input serializers check types only; rules live in services."""

from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from apps.contacts.models import Contact, ContactImport, Tag
from apps.contacts.services import MAX_BULK_ROWS
from apps.core.schema import EmailAddressField


class ContactListSerializer(serializers.ModelSerializer):
    """A contact in a list page (its tags are in the detail: a page costs one query)."""

    class Meta:
        model = Contact
        fields = [
            "id",
            "email",
            "first_name",
            "last_name",
            "attributes",
            "status",
            "source",
            "created_at",
            "updated_at",
        ]


class ContactSerializer(serializers.ModelSerializer):
    tags = serializers.SerializerMethodField()

    class Meta:
        model = Contact
        fields = [
            "id",
            "email",
            "first_name",
            "last_name",
            "attributes",
            "status",
            "source",
            "tags",
            "created_at",
            "updated_at",
        ]

    def get_tags(self, contact: Contact) -> list[int]:
        # Filled by prefetch_related("memberships") in the views: one query per page.
        return sorted(m.tag_id for m in contact.memberships.all())


class ContactInputSerializer(serializers.Serializer):
    email = EmailAddressField(max_length=320)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    attributes = serializers.JSONField(required=False)
    status = serializers.ChoiceField(choices=Contact.Status.choices, required=False)
    tags = serializers.ListField(child=serializers.IntegerField(), required=False)


class BulkUpsertSerializer(serializers.Serializer):
    contacts = serializers.ListField(
        child=serializers.JSONField(), allow_empty=False, max_length=MAX_BULK_ROWS
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list
    )


class TagSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tag
        fields = ["id", "name", "parent", "contact_count", "created_at", "updated_at"]
        read_only_fields = ["contact_count", "created_at", "updated_at"]


class TagInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    parent = serializers.IntegerField(required=False, allow_null=True)


class TagMergeSerializer(serializers.Serializer):
    into = serializers.IntegerField()


class FilterSerializer(serializers.Serializer):
    tags = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    exclude_tags = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list
    )
    status = serializers.ChoiceField(choices=Contact.Status.choices, required=False)
    search = serializers.CharField(required=False, allow_blank=False)

    def validate(self, attrs):
        if not attrs.get("tags") and not attrs.get("status") and not attrs.get("search"):
            # An empty filter would mean "every contact": say so explicitly instead.
            raise serializers.ValidationError("give at least one of tags, status or search")
        return attrs


class MembershipInputSerializer(serializers.Serializer):
    """Exactly one of ``contact_ids``, ``emails`` or ``filter``."""

    contact_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        allow_empty=False,
        max_length=1_000_000,
    )
    emails = serializers.ListField(
        child=EmailAddressField(max_length=320),
        required=False,
        allow_empty=False,
        max_length=100_000,
    )
    filter = FilterSerializer(required=False)

    def validate(self, attrs):
        given = [k for k in ("contact_ids", "emails", "filter") if k in attrs]
        if len(given) != 1:
            raise serializers.ValidationError("give exactly one of contact_ids, emails or filter")
        return attrs


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    tags = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list
    )


class ContactImportSerializer(serializers.ModelSerializer):
    tags = serializers.ListField(source="tag_names", read_only=True)
    percent = serializers.FloatField(read_only=True)
    rows_imported = serializers.IntegerField(read_only=True)
    report_url = serializers.SerializerMethodField()

    class Meta:
        model = ContactImport
        fields = [
            "id",
            "status",
            "original_name",
            "tags",
            "percent",
            "bytes_total",
            "bytes_read",
            "rows_read",
            "rows_imported",
            "rows_created",
            "rows_updated",
            "rows_unchanged",
            "rows_rejected",
            "rows_skipped",
            "error",
            "report_url",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_report_url(self, job: ContactImport) -> str | None:
        if not (job.rows_rejected or job.rows_skipped):
            return None
        path = reverse("contacts:import-report", args=[job.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path
