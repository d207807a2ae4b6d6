"""Serializers of the events API: webhook endpoints, deliveries, reports, projections."""

from __future__ import annotations

from rest_framework import serializers

from apps.events.models import (
    OwnerDailyCount,
    TaskDailyCount,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)


class WebhookEndpointSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=64),
        help_text="Exact types (task.completed), a subject's every type (task.*) or * for all.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "include_system",
            "is_enabled",
            "disabled_reason",
            "consecutive_failures",
            "last_success_at",
            "last_failure_at",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "id",
            "disabled_reason",
            "consecutive_failures",
            "last_success_at",
            "last_failure_at",
            "previous_secret_expires_at",
            "created_at",
            "updated_at",
        ]
        extra_kwargs = {
            # Checked by the service (scheme, address) with the reason; any length ≤ 2000.
            "url": {"validators": []},
        }


class WebhookCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The signing secret (whsec_…), shown only now."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class WebhookUpdateSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    event_types = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
    include_system = serializers.BooleanField(required=False)
    is_enabled = serializers.BooleanField(required=False)


class SecretRotatedSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    secret = serializers.CharField(help_text="The new signing secret, shown only now.")
    previous_secret_expires_at = serializers.DateTimeField(
        allow_null=True, help_text="Until then the previous secret signs too."
    )


class RotateInputSerializer(serializers.Serializer):
    overlap_seconds = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=30 * 86400,
        help_text="How long the previous secret still signs; default "
        "events.webhook_rotation_overlap.",
    )


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["id", "attempted_at", "ok", "status_code", "duration_ms", "error"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    webhook_id = serializers.UUIDField(source="event_uid", read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "webhook_id",
            "event_type",
            "occurred_at",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "created_at",
            "delivered_at",
        ]


class WebhookDeliveryDetailSerializer(WebhookDeliverySerializer):
    attempt_log = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta(WebhookDeliverySerializer.Meta):
        fields = [*WebhookDeliverySerializer.Meta.fields, "body", "attempt_log"]


class ReplayedSerializer(serializers.Serializer):
    queued = serializers.IntegerField()


COUNTERS = list(OwnerDailyCount.COUNTERS)


class OwnerDailySerializer(serializers.ModelSerializer):
    class Meta:
        model = OwnerDailyCount
        fields = ["owner_id", "day", *COUNTERS]


class TaskDailySerializer(serializers.ModelSerializer):
    class Meta:
        model = TaskDailyCount
        fields = ["task_id", "owner_id", "day", *COUNTERS]


class ReportQuerySerializer(serializers.Serializer):
    start = serializers.DateField(required=False, help_text="First day (UTC), YYYY-MM-DD.")
    end = serializers.DateField(required=False, help_text="Last day (UTC), YYYY-MM-DD.")
    owner = serializers.IntegerField(
        required=False, min_value=1, help_text="Operators: one owner's rows only."
    )

    def validate(self, data):
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise serializers.ValidationError({"end": ["must not be before start"]})
        return data


class ProjectionSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    status = serializers.CharField()
    lag_seconds = serializers.FloatField()
    consumed = serializers.IntegerField()
    position = serializers.DictField(child=serializers.IntegerField())
    last_event_at = serializers.DateTimeField(allow_null=True)
    last_run_at = serializers.DateTimeField(allow_null=True)
    reset_at = serializers.DateTimeField(allow_null=True)
