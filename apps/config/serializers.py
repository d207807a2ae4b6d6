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
