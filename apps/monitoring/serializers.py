"""Shapes of the monitoring API."""

from __future__ import annotations

from rest_framework import serializers

from apps.monitoring.models import Alert, AlertRule, Level, NotificationChannel
from apps.monitoring.rules import METRICS


class AlertSerializer(serializers.ModelSerializer):
    rule = serializers.CharField(source="rule_name")
    acknowledged_by = serializers.CharField(source="acknowledged_by.username", default=None)

    class Meta:
        model = Alert
        fields = [
            "id",
            "rule",
            "rule_id",
            "metric",
            "subject",
            "subject_label",
            "level",
            "status",
            "value",
            "threshold",
            "message",
            "fired_at",
            "escalated_at",
            "acknowledged_at",
            "acknowledged_by",
            "resolved_at",
            "last_notified_at",
        ]
        read_only_fields = fields


class AlertRuleSerializer(serializers.ModelSerializer):
    metric = serializers.ChoiceField(choices=sorted(METRICS))
    level = serializers.ChoiceField(choices=Level.choices, default=Level.WARNING)
    channels = serializers.PrimaryKeyRelatedField(
        many=True, queryset=NotificationChannel.objects.all(), required=False
    )
    seeded = serializers.SerializerMethodField()

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "name",
            "metric",
            "comparison",
            "threshold",
            "for_seconds",
            "level",
            "channels",
            "enabled",
            "description",
            "seeded",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "seeded", "created_at", "updated_at"]
        # Uniqueness is the service's to report (one message shape for API and admin).
        extra_kwargs = {"name": {"validators": []}}

    def get_seeded(self, rule: AlertRule) -> bool:
        return bool(rule.seed)


class ChannelSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField()

    class Meta:
        model = NotificationChannel
        fields = [
            "id",
            "name",
            "kind",
            "target",
            "is_enabled",
            "status",
            "consecutive_failures",
            "last_error",
            "last_attempt_at",
            "last_success_at",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "status",
            "consecutive_failures",
            "last_error",
            "last_attempt_at",
            "last_success_at",
            "created_at",
        ]
        extra_kwargs = {"name": {"validators": []}}

    def get_status(self, channel: NotificationChannel) -> str:
        if not channel.is_enabled:
            return "disabled"
        return "failing" if channel.is_failing else "ok"


class ChannelCreatedSerializer(ChannelSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The webhook signing secret (whsec_…), shown only now."
    )

    class Meta(ChannelSerializer.Meta):
        fields = [*ChannelSerializer.Meta.fields, "secret"]


class ChannelUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    target = serializers.CharField(required=False)
    is_enabled = serializers.BooleanField(required=False)


class NotificationResultSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    last_error = serializers.CharField()


class SeriesQuerySerializer(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="ISO 8601; default: 1 hour ago.")
    end = serializers.DateTimeField(required=False, help_text="ISO 8601; default: now.")
    step = serializers.FloatField(
        required=False, min_value=1, help_text="Seconds per point; default: 60."
    )


class AlertQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[*Alert.Status.values, "open"], required=False)
    level = serializers.ChoiceField(choices=Level.values, required=False)
