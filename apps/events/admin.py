"""Admin of the outbox and the webhooks, and the audit trail any admin can offer.

**The audit trail of an object.** :class:`AuditTrailMixin` adds an "Audit trail" link
next to "History" on an object's change page, leading to ``<object id>/audit-trail/``:
the events whose subject is that object (time, type, actor, payload), newest first — who
paused this task, when. Another app's admin applies it by putting it first among the
bases; the object is read through the admin's own ``get_object`` (so a tenant reaches
only its own objects, and another's answers 404), and a tenant sees only the events of
its own data::

    from apps.events.admin import AuditTrailMixin

    @admin.register(Task)
    class TaskAdmin(AuditTrailMixin, TenantScopedAdmin):
        ...

The events are those appended with ``subject=<the object>`` (``event_append``) or with
its ``subject_type``/``subject_id`` (``"dispatch.task"``, ``"42"``) by a set-based
statement. The link is drawn by ``templates/admin/change_form_object_tools.html``; an
admin whose change form template replaces the ``object-tools-items`` block keeps it by
calling ``{{ block.super }}``.

**Pages.** Events (read-only; a tenant sees its own), webhook endpoints (a tenant
registers its own; the secret is shown once, after creating or rotating), deliveries
with their attempts (replay as an action), and the reporting projections (operators:
lag, pause, resume, rebuild).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.html import format_html

from apps.core.admin import (
    CountFreeAdminMixin,
    ReadOnlyAdminMixin,
    TenantScopedAdmin,
    report_outcome,
)
from apps.core.errors import ApplicationError
from apps.core.tenancy import is_operator
from apps.events import projections, selectors, webhooks
from apps.events.models import (
    Event,
    Projection,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from apps.events.services import subject_of
from apps.events.types import EVENT_TYPES

AUDIT_TRAIL_LIMIT = 200


class AuditTrailMixin:
    """An "Audit trail" page per object (see the module docstring)."""

    audit_trail_template = "admin/events/audit_trail.html"
    audit_trail_limit = AUDIT_TRAIL_LIMIT

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        own = [
            path(
                "<path:object_id>/audit-trail/",
                self.admin_site.admin_view(self.audit_trail_view),
                name="{}_{}_audit_trail".format(*info),
            )
        ]
        return own + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        info = self.opts.app_label, self.opts.model_name
        extra_context["audit_trail_url"] = reverse(
            "admin:{}_{}_audit_trail".format(*info),
            args=[object_id],
            current_app=self.admin_site.name,
        )
        return super().change_view(request, object_id, form_url, extra_context)

    def audit_trail_view(self, request, object_id):
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_view_or_change_permission(request, obj):
            from django.http import Http404

            raise Http404(f"no {self.opts.verbose_name} with id {object_id!r}")
        rows = list(selectors.events_for(obj, user=request.user, limit=self.audit_trail_limit + 1))
        more = len(rows) > self.audit_trail_limit
        rows = rows[: self.audit_trail_limit]
        for event in rows:
            event.summary = selectors.event_summary(event)
        subject_type, subject_id = subject_of(obj)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Audit trail: {obj}",
            "subtitle": None,
            "object": obj,
            "opts": self.opts,
            "events": rows,
            "more": more,
            "all_events_url": reverse("admin:events_event_changelist")
            + "?"
            + urlencode({"subject_type": subject_type, "subject_id": subject_id}),
        }
        request.current_app = self.admin_site.name
        return render(request, self.audit_trail_template, context)


# --- list helpers -------------------------------------------------------------------------


class EventTypeFilter(admin.SimpleListFilter):
    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        return [(name, name) for name in EVENT_TYPES]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


class PublishedFilter(admin.SimpleListFilter):
    title = "published"
    parameter_name = "published"

    def lookups(self, request, model_admin):
        return [("yes", "published"), ("no", "not yet")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(published_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(published_at__isnull=True)
        return queryset


# --- events -------------------------------------------------------------------------------


@admin.register(Event)
class EventAdmin(CountFreeAdminMixin, ReadOnlyAdminMixin, TenantScopedAdmin):
    """The outbox, newest first. Read-only: events are written only by services."""

    list_display = ("id", "occurred_at", "type", "owner", "actor", "subject", "summary")
    list_filter = (EventTypeFilter, PublishedFilter)
    list_select_related = ("owner", "actor")
    search_fields = ("=subject_id", "type")
    ordering = ("-id",)
    fields = (
        "id",
        "uid",
        "type",
        "owner",
        "actor",
        "subject_type",
        "subject_id",
        "payload",
        "occurred_at",
        "published_at",
        "txid",
    )
    readonly_fields = fields

    @admin.display(description="subject")
    def subject(self, event: Event) -> str:
        return f"{event.subject_type} #{event.subject_id}" if event.subject_type else "—"

    @admin.display(description="details")
    def summary(self, event: Event) -> str:
        return selectors.event_summary(event, length=80)


# --- webhooks -----------------------------------------------------------------------------


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(
        max_length=2000, assume_scheme="https", widget=forms.URLInput(attrs={"size": 80})
    )
    event_types = forms.CharField(
        help_text="Comma-separated: exact types (task.completed), a subject's every type "
        "(task.*) or * for all.",
        widget=forms.TextInput(attrs={"size": 80}),
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("url", "description", "event_types", "include_system", "is_enabled")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["event_types"] = ", ".join(self.instance.event_types)

    def clean_event_types(self) -> list[str]:
        names = [n.strip() for n in self.cleaned_data["event_types"].split(",") if n.strip()]
        try:
            return webhooks.event_types_clean(names)
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from None

    def clean_url(self) -> str:
        from apps.core import outbound

        url = self.cleaned_data["url"]
        try:
            outbound.check_url(url)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return url


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("attempted_at", "ok", "status_code", "duration_ms", "error")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("-id",)
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(AuditTrailMixin, TenantScopedAdmin):
    form = WebhookEndpointForm
    list_display = (
        "url",
        "owner",
        "types",
        "is_enabled",
        "consecutive_failures",
        "last_success_at",
        "deliveries_link",
    )
    list_filter = ("is_enabled",)
    list_select_related = ("owner",)
    search_fields = ("url", "description", "owner__username")
    actions = ("rotate_secret", "enable")
    readonly_fields = (
        "disabled_reason",
        "consecutive_failures",
        "last_success_at",
        "last_failure_at",
        "previous_secret_expires_at",
        "created_at",
        "updated_at",
    )

    def get_fields(self, request, obj=None):
        fields = ["url", "description", "event_types", "is_enabled"]
        if is_operator(request.user):
            fields.insert(3, "include_system")
            if obj is None:
                fields.insert(0, "owner")
        if obj is not None:
            fields += list(self.readonly_fields)
        return fields

    @admin.display(description="event types")
    def types(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.event_types)

    @admin.display(description="deliveries")
    def deliveries_link(self, endpoint: WebhookEndpoint) -> str:
        url = reverse("admin:events_webhookdelivery_changelist") + f"?endpoint={endpoint.pk}"
        return format_html('<a href="{}">log</a>', url)

    def save_model(self, request, obj, form, change) -> None:
        # Through the services: validation, the secret, the webhook.changed event.
        data = form.cleaned_data
        if not change:
            owner = data.get("owner") if is_operator(request.user) else None
            endpoint, secret = webhooks.webhook_create(
                owner=owner or request.user,
                actor=request.user,
                url=data["url"],
                event_types=data["event_types"],
                description=data.get("description", ""),
                include_system=data.get("include_system", False),
            )
            obj.pk = endpoint.pk
            self.message_user(
                request,
                f"The endpoint's signing secret, shown only now: {secret}",
                messages.WARNING,
            )
            return
        changes = {name: data[name] for name in form.changed_data if name in webhooks.UPDATABLE}
        webhooks.webhook_update(endpoint=obj, actor=request.user, **changes)

    def delete_model(self, request, obj) -> None:
        webhooks.webhook_delete(endpoint=obj, actor=request.user)

    def delete_queryset(self, request, queryset) -> None:
        for endpoint in queryset:
            webhooks.webhook_delete(endpoint=endpoint, actor=request.user)

    def save_related(self, request, form, formsets, change) -> None:
        pass

    @admin.action(description="Rotate the signing secret of the selected endpoints")
    def rotate_secret(self, request, queryset) -> None:
        for endpoint in queryset:
            _, secret = webhooks.webhook_rotate_secret(endpoint=endpoint, actor=request.user)
            self.message_user(
                request,
                f"{endpoint.url}: new secret, shown only now: {secret} (the previous one "
                "still signs during the overlap)",
                messages.WARNING,
            )

    @admin.action(description="Enable the selected endpoints (clears their failures)")
    def enable(self, request, queryset) -> None:
        count = 0
        for endpoint in queryset.filter(is_enabled=False):
            webhooks.webhook_update(endpoint=endpoint, actor=request.user, is_enabled=True)
            count += 1
        report_outcome(self, request, count, "endpoint(s) enabled", [])


class EndpointFilter(admin.SimpleListFilter):
    title = "endpoint"
    parameter_name = "endpoint"

    def lookups(self, request, model_admin):
        endpoints = WebhookEndpoint.objects.all()
        if not is_operator(request.user):
            endpoints = endpoints.filter(owner=request.user)
        return [(e.pk, str(e)[:60]) for e in endpoints[:200]]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not str(value).isdigit():
            return queryset.none()
        return queryset.filter(endpoint_id=int(value))


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(CountFreeAdminMixin, ReadOnlyAdminMixin, TenantScopedAdmin):
    """The delivery log of every endpoint; a delivery's page lists its attempts."""

    owner_field = "endpoint__owner"
    list_display = (
        "id",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", EndpointFilter)
    list_select_related = ("endpoint",)
    ordering = ("-id",)
    actions = ("replay",)
    inlines = (AttemptInline,)
    fields = (
        "endpoint",
        "event_id",
        "event_uid",
        "event_type",
        "occurred_at",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
        "body",
    )
    readonly_fields = fields

    def _without_owner(self, names):
        return list(names)

    def get_exclude(self, request, obj=None):
        return None

    @admin.action(description="Replay the selected deliveries", permissions=["view"])
    def replay(self, request, queryset) -> None:
        count = webhooks.deliveries_replay(deliveries=queryset, actor=request.user)
        report_outcome(self, request, count, "delivery(ies) queued again", [])


# --- projections --------------------------------------------------------------------------


@admin.register(Projection)
class ProjectionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The reporting projections (operators): lag, pause, resume, reset and rebuild."""

    list_display = ("name", "status", "lag", "consumed", "last_event_at", "last_run_at", "reset_at")
    actions = ("pause", "resume", "rebuild")
    fields = (
        "name",
        "status",
        "lag",
        "consumed",
        "position_txid",
        "position_id",
        "last_event_at",
        "last_run_at",
        "reset_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        projections.projections_ensure()
        return super().get_queryset(request)

    @admin.display(description="lag (s)")
    def lag(self, projection: Projection) -> str:
        return f"{projections.projection_lag_seconds(projection):.1f}"

    def _run(self, request, queryset, operation, what: str) -> None:
        names = list(queryset.values_list("name", flat=True))
        for name in names:
            operation(name=name, actor=request.user)
        report_outcome(self, request, len(names), what, [])

    @admin.action(description="Pause the selected projections", permissions=["view"])
    def pause(self, request, queryset) -> None:
        self._run(request, queryset, projections.projection_pause, "projection(s) paused")

    @admin.action(description="Resume the selected projections", permissions=["view"])
    def resume(self, request, queryset) -> None:
        self._run(request, queryset, projections.projection_resume, "projection(s) resumed")

    @admin.action(
        description="Reset and rebuild the selected projections from the retained events",
        permissions=["view"],
    )
    def rebuild(self, request, queryset) -> None:
        self._run(request, queryset, projections.projection_reset, "projection(s) reset to rebuild")

    def has_view_permission(self, request, obj=None) -> bool:
        return is_operator(request.user) and super().has_view_permission(request, obj)
