"""Admin of pools and email services (staff).

The list shows each service's live state (ready in N s, quota used/left today, success
rate, failure streak, why it is disabled); actions enable, disable and test the
connection. Saves go through :mod:`apps.services.services`, so only operator fields are
written (never the counters the dispatcher moves) and the history records the author.
The history excludes runtime counters and the encrypted password.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from apps.events.admin import AuditTrailMixin
from apps.services import services
from apps.services.models import OPERATOR_FIELDS, EmailService, Pool


class EmailServiceForm(forms.ModelForm):
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown. Leave blank to keep the current one.",
    )
    clear_password = forms.BooleanField(required=False, help_text="Remove the stored password.")

    class Meta:
        model = EmailService
        fields = [
            "name",
            "pool",
            "kind",
            "host",
            "port",
            "security",
            "username",
            "password",
            "clear_password",
            "from_email",
            "from_name",
            "daily_quota",
            "sending_rate",
            "is_enabled",
            "disabled_reason",
        ]


@admin.register(EmailService)
class EmailServiceAdmin(AuditTrailMixin, SimpleHistoryAdmin):
    form = EmailServiceForm
    list_display = [
        "name",
        "pool",
        "kind",
        "is_enabled",
        "ready",
        "quota",
        "success",
        "avg_response",
        "consecutive_failures",
        "disabled_reason",
    ]
    list_filter = ["is_enabled", "kind", "pool"]
    list_select_related = ["pool"]
    search_fields = ["name", "host", "from_email", "username"]
    autocomplete_fields = ["pool"]
    readonly_fields = [
        "ready",
        "quota",
        "success",
        "avg_response",
        "total_sent",
        "total_failed",
        "consecutive_failures",
        "last_sent_at",
        "next_available_at",
        "has_password",
    ]
    fieldsets = [
        (None, {"fields": ["name", "pool", "kind", "is_enabled", "disabled_reason"]}),
        (
            "Connection",
            {
                "fields": [
                    "host",
                    "port",
                    "security",
                    "username",
                    "has_password",
                    "password",
                    "clear_password",
                ]
            },
        ),
        ("Sender", {"fields": ["from_email", "from_name"]}),
        ("Limits", {"fields": ["daily_quota", "sending_rate"]}),
        (
            "Live state",
            {
                "fields": [
                    "ready",
                    "quota",
                    "success",
                    "avg_response",
                    "total_sent",
                    "total_failed",
                    "consecutive_failures",
                    "last_sent_at",
                    "next_available_at",
                ]
            },
        ),
    ]
    actions = ["enable_services", "disable_services", "test_connection"]

    @admin.display(description="ready")
    def ready(self, obj: EmailService) -> str:
        if not obj.is_enabled:
            return "disabled"
        if obj.quota_left_today == 0:
            return "quota used up"
        seconds = obj.ready_in
        return "now" if seconds == 0 else f"in {seconds:.1f} s"

    @admin.display(description="quota used / left today")
    def quota(self, obj: EmailService) -> str:
        left = obj.quota_left_today
        return f"{obj.quota_used_today} / {'unlimited' if left is None else left}"

    @admin.display(description="success rate")
    def success(self, obj: EmailService) -> str:
        return f"{obj.success_rate:.1%}"

    @admin.display(description="avg response")
    def avg_response(self, obj: EmailService) -> str:
        return f"{obj.avg_response_time * 1000:.0f} ms"

    @admin.display(description="password set", boolean=True)
    def has_password(self, obj: EmailService) -> bool:
        return obj.has_password

    def save_model(self, request: HttpRequest, obj: EmailService, form, change: bool) -> None:
        data = {
            field: form.cleaned_data[field]
            for field in form.cleaned_data
            if field in OPERATOR_FIELDS
        }
        if form.cleaned_data.get("clear_password"):
            data["password"] = ""
        elif form.cleaned_data.get("password"):
            data["password"] = form.cleaned_data["password"]
        if change:
            changed = {
                field: value
                for field, value in data.items()
                if field in form.changed_data or field == "password"
            }
            services.service_update(service_id=obj.pk, actor=request.user, **changed)
        else:
            data.pop("disabled_reason", None)
            created = services.service_create(actor=request.user, **data)
            obj.pk = created.pk
            obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: EmailService) -> None:
        services.service_delete(service_id=obj.pk, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for pk in queryset.values_list("pk", flat=True):
            services.service_delete(service_id=pk, actor=request.user)

    @admin.action(description="Enable the selected services")
    def enable_services(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = sum(
            services.service_enable(
                service_id=pk, actor=request.user, reason="enabled in the admin"
            )
            for pk in queryset.values_list("pk", flat=True)
        )
        self.message_user(request, f"{count} service(s) enabled.", messages.SUCCESS)

    @admin.action(description="Disable the selected services")
    def disable_services(self, request: HttpRequest, queryset: QuerySet) -> None:
        reason = f"disabled in the admin by {request.user.get_username()}"
        count = sum(
            services.service_disable(service_id=pk, actor=request.user, reason=reason)
            for pk in queryset.values_list("pk", flat=True)
        )
        self.message_user(request, f"{count} service(s) disabled.", messages.SUCCESS)

    @admin.action(description="Test the connection (connect and log in, send nothing)")
    def test_connection(self, request: HttpRequest, queryset: QuerySet) -> None:
        for service in queryset:
            result = services.service_test_connection(service_id=service.pk)
            if result.ok:
                self.message_user(
                    request, f"{service.name}: OK in {result.latency_ms:.0f} ms", messages.SUCCESS
                )
            else:
                self.message_user(
                    request,
                    f"{service.name}: FAILED after {result.latency_ms:.0f} ms "
                    f"({result.error_kind}): {result.error}",
                    messages.ERROR,
                )


@admin.register(Pool)
class PoolAdmin(AuditTrailMixin, SimpleHistoryAdmin):
    list_display = ["name", "is_shared", "service_count", "owner_count", "description"]
    list_filter = ["is_shared"]
    search_fields = ["name"]
    filter_horizontal = ["owners"]
    fields = ["name", "description", "is_shared", "owners"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _services=Count("services", distinct=True), _owners=Count("owners", distinct=True)
            )
        )

    @admin.display(description="services", ordering="_services")
    def service_count(self, obj: Pool) -> int:
        return obj._services

    @admin.display(description="owners", ordering="_owners")
    def owner_count(self, obj: Pool) -> str:
        return format_html("{}", "everybody" if obj.is_shared else obj._owners)

    def has_delete_permission(self, request: HttpRequest, obj: Pool | None = None) -> bool:
        if obj is not None and obj.is_default:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Pool, form, change: bool) -> None:
        data = {key: form.cleaned_data[key] for key in ("name", "description", "is_shared")}
        owners = form.cleaned_data.get("owners", [])
        if change:
            services.pool_update(pool_id=obj.pk, actor=request.user, owners=owners, **data)
        else:
            created = services.pool_create(actor=request.user, owners=owners, **data)
            obj.pk = created.pk
            obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: Pool) -> None:
        services.pool_delete(pool_id=obj.pk, actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for pk in queryset.values_list("pk", flat=True):
            services.pool_delete(pool_id=pk, actor=request.user)
