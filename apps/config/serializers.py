"""Request shapes of the configuration API (responses are plain data from selectors)."""

from __future__ import annotations

from rest_framework import serializers


class ConfigUpdateSerializer(serializers.Serializer):
    value = serializers.JSONField()
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)


class ConfigRollbackSerializer(serializers.Serializer):
    history_id = serializers.IntegerField(min_value=1)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)


class ConfigBatchSerializer(serializers.Serializer):
    values = serializers.DictField(child=serializers.JSONField(), allow_empty=False)
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)


# --- response shapes (documentation for the OpenAPI schema) --------------------------


class ConfigItemSerializer(serializers.Serializer):
    key = serializers.CharField()
    category = serializers.CharField()
    value = serializers.JSONField()
    description = serializers.CharField()
    type = serializers.ChoiceField(
        choices=["int", "float", "bool", "string", "duration", "enum", "json"]
    )
    default = serializers.JSONField()
    min = serializers.FloatField(allow_null=True)
    max = serializers.FloatField(allow_null=True)
    choices = serializers.ListField(child=serializers.CharField(), allow_null=True)
    schema = serializers.JSONField(allow_null=True)
    is_default = serializers.BooleanField()
    updated_at = serializers.DateTimeField(allow_null=True)
    updated_by = serializers.CharField(allow_null=True)


class ConfigItemChangedSerializer(ConfigItemSerializer):
    changed = serializers.BooleanField()


class ConfigListSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = ConfigItemSerializer(many=True)


class ConfigHistoryEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    changed_at = serializers.DateTimeField()
    changed_by = serializers.CharField(allow_null=True)
    type = serializers.CharField(help_text="created, changed or deleted")
    old_value = serializers.JSONField(allow_null=True)
    value = serializers.JSONField()
    reason = serializers.CharField()


class ConfigHistorySerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = ConfigHistoryEntrySerializer(many=True)


class ConfigChangeSerializer(serializers.Serializer):
    key = serializers.CharField()
    old = serializers.JSONField()
    new = serializers.JSONField()


class ConfigBatchResultSerializer(serializers.Serializer):
    changed = ConfigChangeSerializer(many=True)
    unchanged = serializers.ListField(child=serializers.CharField())
