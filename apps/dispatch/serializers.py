"""Serializers of the dispatch API: input shapes are checked here (types, ranges); the
rules (ownership of tags/contacts, the pool being open to the owner, templates) are the
services' (:mod:`apps.dispatch.services`), which raise errors naming the field."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject

from apps.dispatch.history import history_times
from apps.dispatch.models import DeadLetter, SubTask, Task
from apps.dispatch.selectors import task_progress
from apps.services.models import Pool


@extend_schema_field(
    {
        "oneOf": [{"type": "integer"}, {"type": "string"}],
        "nullable": True,
        "description": "Pool id or name; the default pool when omitted.",
    }
)
class PoolField(serializers.Field):
    """A pool given by id (``3``, ``"3"``) or by name (``"bulk"``); returns the id.

    Whether the pool is open to the owner is the service's check.
    """

    default_error_messages = {
        "unknown": "unknown pool {value!r}",
        "invalid": "give a pool id or name",
    }

    def to_internal_value(self, data) -> int:
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("invalid")
        if isinstance(data, int) or data.strip().isdigit():
            return int(data)
        pk = Pool.objects.filter(name=data.strip()).values_list("pk", flat=True).first()
        if pk is None:
            self.fail("unknown", value=data)
        return pk

    def to_representation(self, value) -> int:
        return getattr(value, "pk", value)


class TaskCreateSerializer(serializers.Serializer):
    """Body of ``POST /api/tasks/``."""

    name = serializers.CharField(max_length=200)
    subject = serializers.CharField(trim_whitespace=False)
    body_text = serializers.CharField(
        required=False, allow_blank=True, default="", trim_whitespace=False
    )
    body_html = serializers.CharField(
        required=False, allow_blank=True, default="", trim_whitespace=False
    )
    from_name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")
    include_tags = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, default=list
    )
    exclude_tags = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, default=list
    )
    contacts = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, default=list
    )
    pool = PoolField(required=False, allow_null=True, default=None)
    priority = serializers.IntegerField(min_value=-100, max_value=100, required=False, default=0)
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    tracking = serializers.BooleanField(required=False, default=True)


class ProgressSerializer(serializers.Serializer):
    """Subtask counts by status; the parts add up to ``total`` (one snapshot)."""

    total = serializers.IntegerField()
    pending = serializers.IntegerField()
    allocated = serializers.IntegerField()
    sending = serializers.IntegerField()
    sent = serializers.IntegerField()
    failed = serializers.IntegerField()
    dead = serializers.IntegerField()
    skipped = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    unknown = serializers.IntegerField()


class RelatedIdsField(serializers.ListField):
    """The ids of one of a task's many-to-many relations, in ascending order: read from
    ``<field>_ids`` when the queryset annotated them (``api.tasks_with_related_ids``: the
    task and its three relations in one query), else from the relation itself."""

    def __init__(self, **kwargs) -> None:
        super().__init__(child=serializers.IntegerField(), read_only=True, **kwargs)

    def get_attribute(self, instance: Task) -> list[int]:
        ids = getattr(instance, f"{self.field_name}_ids", None)
        if ids is None:
            ids = [related.pk for related in getattr(instance, self.field_name).all()]
        return sorted(ids)


class _BuiltOnceFields:
    """A read-only ModelSerializer whose fields are built once per process: DRF builds a
    ModelSerializer's fields from the model on every instance, which cost more than the
    rest of a polled task detail. The fields of one instance made without context are
    kept and used by every instance; they read nothing from the context (no request,
    no hyperlinks), so the answer is DRF's own, field by field."""

    def to_representation(self, instance) -> dict:
        fields = type(self).__dict__.get("_built_fields")
        if fields is None:
            fields = [field for field in type(self)().fields.values() if not field.write_only]
            type(self)._built_fields = fields
        out = {}
        for field in fields:
            try:
                attribute = field.get_attribute(instance)
            except SkipField:
                continue
            pk = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            out[field.field_name] = None if pk is None else field.to_representation(attribute)
        return out


class TaskSerializer(_BuiltOnceFields, serializers.ModelSerializer):
    """A task, without its progress."""

    pool = serializers.PrimaryKeyRelatedField(read_only=True)
    include_tags = RelatedIdsField()
    exclude_tags = RelatedIdsField()
    contacts = RelatedIdsField()

    class Meta:
        model = Task
        fields = [
            "id",
            "name",
            "status",
            "subject",
            "body_text",
            "body_html",
            "from_name",
            "include_tags",
            "exclude_tags",
            "contacts",
            "pool",
            "priority",
            "scheduled_at",
            "tracking",
            "total",
            "queued_at",
            "started_at",
            "completed_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class TaskDetailSerializer(TaskSerializer):
    """A task with its ``progress`` (read from the task's counters when serialized, or
    set beforehand as ``progress_counts``)."""

    progress = serializers.SerializerMethodField()

    class Meta(TaskSerializer.Meta):
        fields = [*TaskSerializer.Meta.fields, "progress"]
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, task: Task) -> dict[str, int]:
        # A list page reads every row's progress in one statement beforehand.
        counts = getattr(task, "progress_counts", None)
        return counts if counts is not None else task_progress(task)


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "attempt": {"type": "integer"},
                "at": {"type": "string", "format": "date-time"},
                "service": {"type": "integer", "nullable": True},
                "kind": {"type": "string"},
                "error_class": {"type": "string"},
                "error": {"type": "string"},
            },
        },
        "description": "One entry per failed attempt; `at` is ISO 8601 (UTC).",
    }
)
class HistoryField(serializers.JSONField):
    """An attempt history, its times as ISO 8601 (``apps.dispatch.history``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value):
        return history_times(value)


class SubTaskSerializer(serializers.ModelSerializer):
    """One recipient of a task and where its delivery stands."""

    history = HistoryField()

    class Meta:
        model = SubTask
        fields = [
            "id",
            "task",
            "contact",
            "to_email",
            "status",
            "attempts",
            "next_attempt_at",
            "service",
            "message_id",
            "last_error",
            "error_class",
            "history",
            "created_at",
            "sent_at",
        ]
        read_only_fields = fields


class RequeueUnknownSerializer(serializers.Serializer):
    """Body of ``POST /api/tasks/<id>/requeue-unknown`` (optional)."""

    subtask_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        allow_null=True,
        default=None,
        help_text="Only these subtasks (others of the task are left alone).",
    )


class RequeuedSerializer(serializers.Serializer):
    requeued = serializers.IntegerField(help_text="How many unknown subtasks are pending again.")


class DeadLetterSerializer(serializers.ModelSerializer):
    """A dead-lettered message: why it died, its attempts, what became of it."""

    # Annotated by the view's queryset (no join of whole subtask rows).
    to_email = serializers.CharField(read_only=True)
    message_id = serializers.CharField(read_only=True)
    history = HistoryField()

    class Meta:
        model = DeadLetter
        fields = [
            "id",
            "task",
            "subtask",
            "owner",
            "to_email",
            "message_id",
            "error_type",
            "error_message",
            "history",
            "status",
            "reprocess_count",
            "created_at",
            "updated_at",
            "resolved_at",
        ]
        read_only_fields = fields


class DlqStatsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    by_status = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Entries by status: pending, reprocessing, resolved, expired.",
    )
    by_error_type = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="Open (pending or reprocessing) entries by error type, largest first.",
    )


class ReprocessAllQuerySerializer(serializers.Serializer):
    """Query string of ``POST /api/dlq/reprocess-all``."""

    task = serializers.IntegerField(min_value=1, required=False, help_text="Task id.")
    error_type = serializers.CharField(required=False, max_length=64)


class ReprocessedSerializer(serializers.Serializer):
    reprocessed = serializers.IntegerField(help_text="How many entries were sent again.")
