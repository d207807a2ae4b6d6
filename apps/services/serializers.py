"""Shapes of the ``/api/services/`` and ``/api/pools/`` endpoints."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.services.models import EmailService, Pool
from apps.services.selectors import pool_resolve, service_stats


@extend_schema_field(
    {"oneOf": [{"type": "integer"}, {"type": "string"}], "description": "Pool id or name"}
)
class PoolRefField(serializers.Field):
    """A pool given by id (``3``) or by name (``"transactional"``); answered as its id."""

    default_error_messages = {
        "unknown": "no pool {ref!r} (give its id or name)",
        "type": "give the pool's id (a number) or its name (a string)",
    }

    def to_internal_value(self, data) -> Pool:
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("type")
        try:
            return pool_resolve(data)
        except Pool.DoesNotExist:
            self.fail("unknown", ref=data)

    def to_representation(self, value: Pool) -> int:
        return value.pk


class EmailServiceSerializer(serializers.ModelSerializer):
    pool = PoolRefField(required=False, help_text="Pool id or name; the default pool if omitted.")
    pool_name = serializers.CharField(source="pool.name", read_only=True)
    password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Stored encrypted; never returned. Omit to keep the current one.",
    )
    has_password = serializers.BooleanField(read_only=True)
    daily_quota = serializers.IntegerField(required=False, min_value=0)
    sending_rate = serializers.FloatField(required=False, min_value=0)
    state = serializers.SerializerMethodField()

    class Meta:
        model = EmailService
        fields = [
            "id",
            "name",
            "pool",
            "pool_name",
            "kind",
            "host",
            "port",
            "security",
            "username",
            "password",
            "has_password",
            "from_email",
            "from_name",
            "daily_quota",
            "sending_rate",
            "is_enabled",
            "disabled_reason",
            "state",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["disabled_reason", "created_at", "updated_at"]

    @extend_schema_field(serializers.DictField())
    def get_state(self, service: EmailService) -> dict:
        stats = service_stats(service)
        for key in (
            "id",
            "name",
            "pool",
            "is_enabled",
            "disabled_reason",
            "daily_quota",
            "sending_rate",
        ):
            stats.pop(key)
        return stats


class PoolSerializer(serializers.ModelSerializer):
    owners = serializers.PrimaryKeyRelatedField(
        many=True,
        required=False,
        queryset=get_user_model().objects.all(),
        help_text="User ids a dedicated (is_shared=false) pool is open to.",
    )
    is_default = serializers.BooleanField(read_only=True)
    service_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Pool
        fields = [
            "id",
            "name",
            "description",
            "is_shared",
            "owners",
            "is_default",
            "service_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]


class ServiceDisableSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=255)


class ServiceEnableSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=255)


class ServiceStatsSerializer(serializers.Serializer):
    """Documentation of ``/api/services/<id>/stats`` (built by ``service_stats``)."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    pool = serializers.IntegerField()
    is_enabled = serializers.BooleanField()
    disabled_reason = serializers.CharField()
    is_ready = serializers.BooleanField()
    ready_in_seconds = serializers.FloatField()
    next_available_at = serializers.DateTimeField()
    daily_quota = serializers.IntegerField()
    quota_used_today = serializers.IntegerField()
    quota_left_today = serializers.IntegerField(allow_null=True)
    sending_rate = serializers.FloatField()
    last_sent_at = serializers.DateTimeField(allow_null=True)
    total_sent = serializers.IntegerField()
    total_failed = serializers.IntegerField()
    success_rate = serializers.FloatField()
    avg_response_time = serializers.FloatField()
    consecutive_failures = serializers.IntegerField()


class ServiceActionResultSerializer(ServiceStatsSerializer):
    changed = serializers.BooleanField()


class ConnectionTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    latency_ms = serializers.FloatField()
    error = serializers.CharField()
    error_kind = serializers.CharField()
    code = serializers.IntegerField(allow_null=True)
