"""Admin of what sending leaves behind: subtasks, dead letters, test sends.

Read-only pages; the actions requeue ``unknown`` subtasks and reprocess dead letters
through their services, reporting how many rows moved and which were refused. Subtasks
and dead letters are million-row tables: their lists never count rows. A tenant sees its
own rows only (``TenantScopedAdmin``).
"""

from __future__ import annotations

from django.contrib import admin

from apps.core.admin import TenantScopedAdmin, report_outcome
from apps.core.errors import ApplicationError
from apps.core.tenancy import is_operator
from apps.dispatch import services
from apps.dispatch.admin.common import (
    CountFreeAdminMixin,
    ReadOnlyAdminMixin,
    TaskListFilter,
    pretty_history,
)
from apps.dispatch.models import DeadLetter, SubTask, TestSend
from apps.events.admin import AuditTrailMixin


@admin.register(SubTask)
class SubTaskAdmin(AuditTrailMixin, CountFreeAdminMixin, ReadOnlyAdminMixin, TenantScopedAdmin):
    list_display = (
        "id",
        "to_email",
        "task",
        "owner",
        "status",
        "attempts",
        "service",
        "next_attempt_at",
        "sent_at",
    )
    list_filter = ("status", TaskListFilter)
    list_select_related = ("task", "owner", "service")
    ordering = ("-id",)
    actions = ("requeue_unknown",)
    fields = (
        "task",
        "owner",
        "contact_id",
        "to_email",
        "status",
        "attempts",
        "attempt_token",
        "message_id",
        "service",
        "next_attempt_at",
        "lease_expires_at",
        "last_error",
        "error_class",
        "history_pretty",
        "created_at",
        "sent_at",
    )
    readonly_fields = fields

    @admin.display(description="history")
    def history_pretty(self, subtask: SubTask) -> str:
        return pretty_history(subtask.history)

    @admin.action(description="Resend selected unknown subtasks (same Message-ID)")
    def requeue_unknown(self, request, queryset) -> None:
        ids = list(queryset.filter(status=SubTask.Status.UNKNOWN).values_list("pk", flat=True))
        skipped = queryset.count() - len(ids)
        refused = [f"{skipped} selected subtask(s) are not unknown"] if skipped else []
        count = 0
        if ids:
            owner = None if is_operator(request.user) else request.user
            try:
                count = services.subtask_requeue_unknown(
                    owner=owner, subtask_ids=ids, actor=request.user
                )
            except ApplicationError as exc:
                refused.append(exc.message)
        report_outcome(self, request, count, "unknown subtask(s) requeued", refused)


@admin.register(DeadLetter)
class DeadLetterAdmin(AuditTrailMixin, CountFreeAdminMixin, ReadOnlyAdminMixin, TenantScopedAdmin):
    list_display = (
        "id",
        "to_email",
        "task",
        "owner",
        "error_type",
        "status",
        "reprocess_count",
        "created_at",
    )
    list_filter = ("status", "error_type", TaskListFilter)
    list_select_related = ("task", "owner", "subtask")
    ordering = ("-id",)
    actions = ("reprocess",)
    fields = (
        "task",
        "subtask",
        "owner",
        "to_email",
        "error_type",
        "error_message",
        "history_pretty",
        "status",
        "reprocess_count",
        "created_at",
        "updated_at",
        "resolved_at",
    )
    readonly_fields = fields

    @admin.display(description="to", ordering="subtask__to_email")
    def to_email(self, entry: DeadLetter) -> str:
        return entry.subtask.to_email

    @admin.display(description="history")
    def history_pretty(self, entry: DeadLetter) -> str:
        return pretty_history(entry.history)

    @admin.action(description="Reprocess selected dead letters")
    def reprocess(self, request, queryset) -> None:
        owner = None if is_operator(request.user) else request.user
        done, refused = 0, []
        for pk in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                services.dead_letter_reprocess(dead_letter_id=pk, owner=owner, actor=request.user)
            except ApplicationError as exc:
                refused.append(f"#{pk}: {exc.message}")
            else:
                done += 1
        report_outcome(self, request, done, "dead letter(s) reprocessed", refused)


@admin.register(TestSend)
class TestSendAdmin(ReadOnlyAdminMixin, TenantScopedAdmin):
    """Every test message sent from a task page: to whom, through which service, how it
    went. Never part of a task's progress."""

    list_display = ("id", "task", "to_email", "service", "ok", "error", "sent_by", "created_at")
    list_filter = ("ok", TaskListFilter)
    list_select_related = ("task", "service", "sent_by")
    search_fields = ("to_email",)
    ordering = ("-id",)
    fields = (
        "task",
        "owner",
        "to_email",
        "contact_id",
        "service",
        "subject",
        "message_id",
        "ok",
        "error",
        "sent_by",
        "created_at",
    )
    readonly_fields = fields
