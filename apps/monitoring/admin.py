"""Monitoring in the admin: the dashboard page, alert rules, alerts, notification
channels (with "send test notification") and the notification log.

The dashboard is added to the admin site's URLs (``/admin/dashboard/``, name
``admin:dashboard``) through ``get_urls()`` and ``admin_view()``; every staff user may
open it (a tenant sees its own tasks). Rules, channels, alerts and notifications are an
operator's pages (``access.is_operator``).
"""

from __future__ import annotations

from functools import partial

from django.contrib import admin, messages
from django.db.models import Count
from django.urls import path

from apps.core.errors import ApplicationError
from apps.events.admin import AuditTrailMixin
from apps.monitoring import services
from apps.monitoring.access import is_operator
from apps.monitoring.dashboard import dashboard_alert_action, dashboard_view
from apps.monitoring.models import (
    Alert,
    AlertRule,
    Notification,
    NotificationAttempt,
    NotificationChannel,
)
from apps.monitoring.services import RULE_FIELDS


def _with_dashboard(get_urls):
    def urls():
        site = admin.site
        return [
            path(
                "dashboard/",
                site.admin_view(partial(dashboard_view, admin_site=site)),
                name="dashboard",
            ),
            path(
                "dashboard/alerts/<int:pk>/<str:action>/",
                site.admin_view(dashboard_alert_action),
                name="dashboard-alert",
            ),
            *get_urls(),
        ]

    return urls


admin.site.get_urls = _with_dashboard(admin.site.get_urls)


class OperatorOnly:
    """Pages only operators see."""

    def has_module_permission(self, request) -> bool:
        return is_operator(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_operator(request.user)

    def has_add_permission(self, request) -> bool:
        return is_operator(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return is_operator(request.user)

    def has_delete_permission(self, request, obj=None) -> bool:
        return is_operator(request.user)


@admin.register(AlertRule)
class AlertRuleAdmin(AuditTrailMixin, OperatorOnly, admin.ModelAdmin):
    list_display = ["name", "condition", "for_seconds", "level", "enabled", "channel_count"]
    list_filter = ["level", "enabled", "metric"]
    search_fields = ["name", "metric"]
    filter_horizontal = ["channels"]
    readonly_fields = ["seed", "created_at", "updated_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(channel_count=Count("channels"))

    @admin.display(description="channels", ordering="channel_count")
    def channel_count(self, rule: AlertRule) -> int:
        return rule.channel_count

    def save_model(self, request, obj, form, change) -> None:
        """Through the services: validated, and recorded with its actor."""
        fields = {f: form.cleaned_data[f] for f in RULE_FIELDS if f in form.cleaned_data}
        channels = [c.pk for c in form.cleaned_data.get("channels", [])]
        if change:
            services.rule_update(rule_id=obj.pk, channels=channels, actor=request.user, **fields)
        else:
            rule = services.rule_create(channels=channels, actor=request.user, **fields)
            obj.pk = rule.pk
            obj._state.adding = False
        obj.refresh_from_db()

    def delete_model(self, request, obj) -> None:
        services.rule_delete(rule_id=obj.pk, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for pk in queryset.values_list("pk", flat=True):
            services.rule_delete(rule_id=pk, actor=request.user)


@admin.register(Alert)
class AlertAdmin(AuditTrailMixin, OperatorOnly, admin.ModelAdmin):
    list_display = ["fired_at", "level", "status", "rule_name", "subject_label", "value"]
    list_filter = ["status", "level", "metric"]
    search_fields = ["rule_name", "subject", "subject_label"]
    date_hierarchy = "fired_at"
    actions = ["acknowledge", "resolve"]
    list_select_related = ["rule"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # the alert history is a record: acknowledge or resolve instead

    def _act(self, request, queryset, action, verb: str) -> None:
        done = 0
        for alert in queryset.exclude(status=Alert.Status.RESOLVED):
            try:
                action(alert_id=alert.pk, actor=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"alert {alert.pk}: {exc.message}", messages.ERROR)
            else:
                done += 1
        self.message_user(request, f"{done} alert(s) {verb}.", messages.SUCCESS)

    @admin.action(description="Acknowledge selected alerts")
    def acknowledge(self, request, queryset) -> None:
        self._act(request, queryset, services.alert_acknowledge, "acknowledged")

    @admin.action(description="Resolve selected alerts")
    def resolve(self, request, queryset) -> None:
        self._act(request, queryset, services.alert_resolve, "resolved")


@admin.register(NotificationChannel)
class NotificationChannelAdmin(AuditTrailMixin, OperatorOnly, admin.ModelAdmin):
    list_display = ["name", "kind", "target", "is_enabled", "status", "last_success_at"]
    list_filter = ["kind", "is_enabled"]
    search_fields = ["name", "target"]
    readonly_fields = [
        "consecutive_failures",
        "last_error",
        "last_attempt_at",
        "last_success_at",
    ]
    actions = ["send_test"]

    @admin.display(description="status")
    def status(self, channel: NotificationChannel) -> str:
        if not channel.is_enabled:
            return "disabled"
        return f"failing ({channel.consecutive_failures})" if channel.is_failing else "ok"

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "kind"] if obj is not None else fields

    def save_model(self, request, obj, form, change) -> None:
        try:
            if change:
                services.channel_update(
                    channel_id=obj.pk,
                    name=obj.name,
                    target=obj.target,
                    is_enabled=obj.is_enabled,
                    actor=request.user,
                )
                return
            channel, secret = services.channel_create(
                name=obj.name,
                kind=obj.kind,
                target=obj.target,
                is_enabled=obj.is_enabled,
                actor=request.user,
            )
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        obj.pk = channel.pk
        if secret:
            self.message_user(
                request,
                f"Signing secret of {channel.name} (shown only now; store it with the "
                f"receiver): {secret}",
                messages.WARNING,
            )

    def delete_model(self, request, obj) -> None:
        services.channel_delete(channel_id=obj.pk, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for pk in queryset.values_list("pk", flat=True):
            services.channel_delete(channel_id=pk, actor=request.user)

    @admin.action(description="Send a test notification")
    def send_test(self, request, queryset) -> None:
        for channel in queryset:
            notification = services.channel_send_test(channel_id=channel.pk)
            if notification.status == Notification.Status.SENT:
                self.message_user(request, f"{channel.name}: test notification delivered.")
            else:
                self.message_user(
                    request,
                    f"{channel.name}: {notification.status} — {notification.last_error}",
                    messages.ERROR,
                )


class NotificationAttemptInline(admin.TabularInline):
    model = NotificationAttempt
    extra = 0
    can_delete = False
    fields = ["attempted_at", "ok", "permanent", "status_code", "duration_ms", "error"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(OperatorOnly, admin.ModelAdmin):
    list_display = ["id", "created_at", "channel", "event", "status", "attempts", "last_error"]
    list_filter = ["status", "event", "channel"]
    list_select_related = ["channel"]
    raw_id_fields = ["alert"]
    inlines = [NotificationAttemptInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a delivery log
