"""Admin for the system configuration: grouped by category, validated, audited.

Keys come from the code registry, so rows cannot be added or deleted here. A change
goes through :func:`apps.config.services.config_set` (validation errors show inline,
the reason is required and kept in the history). The history page shows old → new for
every change and a "roll back" link, which is itself an audited change.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from apps.config import services
from apps.config.models import SystemConfig
from apps.config.registry import KEYS, ConfigValueError
from apps.core.errors import ApplicationError
from apps.events.admin import AuditTrailMixin


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class SystemConfigForm(forms.ModelForm):
    value = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="JSON (5, 0.5, true, [60, 300]) or plain text for strings, enums and "
        "durations ('30m').",
    )
    reason = forms.CharField(max_length=1000, help_text="Why — kept in the history.")

    class Meta:
        model = SystemConfig
        fields = ["value"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["value"] = _as_text(self.instance.value)
        definition = KEYS.get(self.instance.key)
        if definition is not None:
            self.fields["value"].help_text = _rules(definition.key)

    def clean_value(self) -> Any:
        text = self.cleaned_data["value"]
        definition = KEYS.get(self.instance.key)
        if definition is None:
            raise ValidationError("this key is no longer registered in the code")
        try:
            parsed: Any = json.loads(text)
        except json.JSONDecodeError:
            if definition.type == "json":
                raise ValidationError("must be valid JSON") from None
            parsed = text.strip()
        try:
            return definition.clean(parsed)
        except ConfigValueError as exc:
            raise ValidationError(str(exc)) from None


def _rules(key: str) -> str:
    definition = KEYS[key]
    parts = [f"Type {definition.type}; default {_as_text(definition.default)}"]
    if definition.min is not None:
        parts.append(f"min {definition.min:g}")
    if definition.max is not None:
        parts.append(f"max {definition.max:g}")
    if definition.choices:
        parts.append(f"one of {', '.join(definition.choices)}")
    if definition.schema:
        parts.append(f"schema {json.dumps(definition.schema)}")
    return "; ".join(parts) + "."


class RollbackForm(forms.Form):
    reason = forms.CharField(
        max_length=1000, required=False, help_text="Why — kept in the history."
    )


@admin.register(SystemConfig)
class SystemConfigAdmin(AuditTrailMixin, SimpleHistoryAdmin):
    form = SystemConfigForm
    list_display = [
        "key",
        "category",
        "shown_value",
        "default",
        "value_type",
        "updated_at",
        "updated_by",
    ]
    list_display_links = ["key"]
    list_filter = ["category"]
    search_fields = ["key", "description"]
    ordering = ["category", "key"]
    list_select_related = ["updated_by"]
    list_per_page = 200
    readonly_fields = ["key", "category", "description", "rules", "updated_at", "updated_by"]
    fields = [
        "key",
        "category",
        "description",
        "rules",
        "value",
        "reason",
        "updated_at",
        "updated_by",
    ]
    history_list_display = ["rollback"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="value")
    def shown_value(self, obj: SystemConfig) -> str:
        return _as_text(obj.value)

    @admin.display(description="default")
    def default(self, obj: SystemConfig) -> str:
        definition = KEYS.get(obj.key)
        return _as_text(definition.default) if definition else "(unregistered)"

    @admin.display(description="type")
    def value_type(self, obj: SystemConfig) -> str:
        definition = KEYS.get(obj.key)
        return definition.type if definition else "-"

    @admin.display(description="rules")
    def rules(self, obj: SystemConfig) -> str:
        return _rules(obj.key) if obj.key in KEYS else "(unregistered)"

    @admin.display(description="roll back")
    def rollback(self, record) -> str:
        url = reverse("admin:config_systemconfig_rollback", args=[record.id, record.history_id])
        return format_html('<a class="button" href="{}">roll back to this</a>', url)

    def save_model(self, request: HttpRequest, obj: SystemConfig, form, change: bool) -> None:
        # Through the service (not obj.save()): validation, history user and reason,
        # and the version bump every process's cache watches.
        services.config_set(
            key=obj.key,
            value=form.cleaned_data["value"],
            reason=form.cleaned_data["reason"],
            actor=request.user,
        )

    def get_urls(self):
        urls = [
            path(
                "<int:object_id>/rollback/<int:history_id>/",
                self.admin_site.admin_view(self.rollback_view),
                name="config_systemconfig_rollback",
            ),
        ]
        return urls + super().get_urls()

    def rollback_view(self, request: HttpRequest, object_id: int, history_id: int) -> HttpResponse:
        obj = get_object_or_404(SystemConfig, pk=object_id)
        if not self.has_change_permission(request, obj):
            raise Http404
        record = get_object_or_404(SystemConfig.history, id=object_id, history_id=history_id)
        form = RollbackForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                change = services.config_rollback(
                    key=obj.key,
                    history_id=history_id,
                    reason=form.cleaned_data["reason"],
                    actor=request.user,
                )
            except (ValidationError, ApplicationError) as exc:
                text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"Rollback refused: {text}", messages.ERROR)
            else:
                if change is None:
                    self.message_user(request, f"{obj.key} already has that value.")
                else:
                    self.message_user(
                        request,
                        f"{obj.key} rolled back: {_as_text(change.old)} → {_as_text(change.new)}",
                        messages.SUCCESS,
                    )
                return HttpResponseRedirect(
                    reverse("admin:config_systemconfig_history", args=[obj.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Roll back {obj.key}",
            "opts": self.model._meta,
            "object": obj,
            "record": record,
            "current": _as_text(obj.value),
            "target": _as_text(record.value),
            "form": form,
        }
        return TemplateResponse(request, "admin/config/systemconfig/rollback.html", context)
