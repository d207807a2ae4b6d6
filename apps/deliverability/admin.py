"""Admin: the suppression list (add, lift with a reason, CSV import/export), feedback
events, inbound messages kept for review, delivery statistics of a task, DKIM keys and
the DNS check of a domain.

Tenants see their own suppressions and events (and the global list, read-only);
operators see and change everything.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from apps.core.admin import NotFoundAdminMixin
from apps.core.errors import ApplicationError
from apps.deliverability import dkim, dns, selectors, services
from apps.deliverability.models import (
    DkimKey,
    FeedbackEvent,
    InboundMessage,
    Suppression,
    SuppressionLift,
)
from apps.events.admin import AuditTrailMixin
from apps.monitoring.access import is_operator


class ReadOnly:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # records of what happened


class SuppressionForm(forms.ModelForm):
    is_global = forms.BooleanField(
        required=False, label="Global", help_text="For every owner (operators only)."
    )

    class Meta:
        model = Suppression
        fields = ["email", "domain", "reason", "note"]

    def clean(self) -> dict:
        data = super().clean()
        try:
            services.clean_target(data.get("email", ""), data.get("domain", ""))
        except ApplicationError as exc:
            raise forms.ValidationError({exc.field or "email": exc.message}) from None
        return data


class LiftForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label="Why lift it")


class ImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with an email or domain column; reason, note optional.")


@admin.register(Suppression)
class SuppressionAdmin(AuditTrailMixin, NotFoundAdminMixin, admin.ModelAdmin):
    form = SuppressionForm
    list_display = ("target", "scope", "reason", "source", "created_at", "lift_link")
    list_filter = ("reason",)
    search_fields = ("email", "domain")
    ordering = ("-id",)
    change_list_template = "admin/deliverability/suppression/change_list.html"

    def get_queryset(self, request):
        return selectors.suppressions_visible_to(request.user).select_related("owner")

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # lifting, with its reason, is the way to remove an entry

    @admin.display(description="scope")
    def scope(self, row: Suppression) -> str:
        return "global" if row.owner_id is None else str(row.owner)

    @admin.display(description="")
    def lift_link(self, row: Suppression) -> str:
        url = reverse("admin:deliverability_suppression_lift", args=[row.pk])
        return format_html('<a href="{}">lift…</a>', url)

    def save_model(self, request, obj, form, change) -> None:
        global_entry = form.cleaned_data.get("is_global") and is_operator(request.user)
        row, _ = services.suppression_add(
            owner=None if global_entry else request.user,
            email=obj.email,
            domain=obj.domain,
            reason=obj.reason,
            note=obj.note,
            source="admin",
            actor=request.user,
        )
        obj.pk = row.pk

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/lift/", wrap(self.lift_view), name="deliverability_suppression_lift"),
            path("import/", wrap(self.import_view), name="deliverability_suppression_import"),
            path("export/", wrap(self.export_view), name="deliverability_suppression_export"),
            *super().get_urls(),
        ]

    def lift_view(self, request, pk: int):
        row = get_object_or_404(self.get_queryset(request), pk=pk)
        form = LiftForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                lift = services.suppression_lift(
                    suppression=row, actor=request.user, reason=form.cleaned_data["reason"]
                )
            except ApplicationError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(
                    request,
                    f"Lifted {row.target}; {lift.contacts_reactivated} contact(s) active again.",
                )
                return HttpResponseRedirect(reverse("admin:deliverability_suppression_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Lift the suppression of {row.target}",
            "row": row,
            "form": form,
            "operator": is_operator(request.user),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/deliverability/suppression/lift.html", context)

    def import_view(self, request):
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = services.suppressions_import_csv(
                    owner=request.user, data=form.cleaned_data["file"].read(), actor=request.user
                )
            except ApplicationError as exc:
                form.add_error("file", exc.message)
            else:
                messages.success(
                    request, f"{result['created']} added, {result['existing']} already there."
                )
                return HttpResponseRedirect(reverse("admin:deliverability_suppression_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import suppressions",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/deliverability/suppression/import.html", context)

    def export_view(self, request):
        text = services.suppressions_export_csv(self.get_queryset(request))
        response = HttpResponse(text, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="suppressions.csv"'
        return response


@admin.register(SuppressionLift)
class SuppressionLiftAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("email", "domain", "original_reason", "reason", "lifted_by", "lifted_at")
    search_fields = ("email", "domain")

    def has_module_permission(self, request) -> bool:
        return is_operator(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_operator(request.user)


@admin.register(FeedbackEvent)
class FeedbackEventAdmin(NotFoundAdminMixin, ReadOnly, admin.ModelAdmin):
    list_display = ("created_at", "kind", "email", "task_link", "source", "detail_short")
    list_filter = ("kind", "source")
    search_fields = ("email", "event_key")
    ordering = ("-id",)

    def get_queryset(self, request):
        rows = super().get_queryset(request)
        return rows if is_operator(request.user) else rows.filter(owner=request.user)

    @admin.display(description="task")
    def task_link(self, row: FeedbackEvent) -> str:
        if not row.task_id:
            return "—"
        url = reverse("admin:deliverability_feedbackevent_stats", args=[row.task_id])
        return format_html('<a href="{}">task {}</a>', url, row.task_id)

    @admin.display(description="detail")
    def detail_short(self, row: FeedbackEvent) -> str:
        return row.detail[:80]

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "task/<int:task_id>/",
                wrap(self.stats_view),
                name="deliverability_feedbackevent_stats",
            ),
            *super().get_urls(),
        ]

    def stats_view(self, request, task_id: int):
        """A task's delivery statistics: opens, clicks per link, unsubscribes, bounces."""
        from apps.dispatch.models import Task
        from apps.dispatch.selectors import task_progress

        tasks = (
            Task.objects.all()
            if is_operator(request.user)
            else Task.objects.filter(owner=request.user)
        )
        task = get_object_or_404(tasks, pk=task_id)
        stats = selectors.task_stats(task_id=task.pk, sent=task_progress(task.pk)["sent"])
        context = {
            **self.admin_site.each_context(request),
            "title": f"Delivery statistics: {task.name}",
            "task": task,
            "stats": stats,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/deliverability/stats.html", context)


@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ("received_at", "kind", "status", "subject", "detail_short", "source")
    list_filter = ("status", "kind", "reviewed")
    search_fields = ("subject", "detail", "source")
    ordering = ("-id",)
    fields = ("received_at", "kind", "status", "detail", "subject", "source", "raw_text")
    readonly_fields = fields
    actions = ("mark_reviewed",)

    def has_module_permission(self, request) -> bool:
        return is_operator(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_operator(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return is_operator(request.user) and obj is None

    @admin.display(description="detail")
    def detail_short(self, row: InboundMessage) -> str:
        return row.detail[:80]

    @admin.display(description="message")
    def raw_text(self, row: InboundMessage) -> str:
        text = bytes(row.raw)[:20000].decode("utf-8", "replace")
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", text)

    @admin.action(description="Mark as reviewed")
    def mark_reviewed(self, request, queryset) -> None:
        count = queryset.update(reviewed=True)
        self.message_user(request, f"{count} message(s) marked as reviewed.")


class DkimKeyForm(forms.ModelForm):
    private_key_pem = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "autocomplete": "off"}),
        label="Private key (PEM)",
        help_text="Leave empty to generate a new 2048-bit RSA key. Stored encrypted.",
    )

    class Meta:
        model = DkimKey
        fields = ["domain", "selector", "service", "is_enabled"]

    def clean_domain(self) -> str:
        return self.cleaned_data["domain"].strip().lower().rstrip(".")

    def clean_private_key_pem(self) -> str:
        pem = self.cleaned_data.get("private_key_pem", "").strip()
        if not pem:
            return ""
        try:
            dkim.public_key_of(pem)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return pem


@admin.register(DkimKey)
class DkimKeyAdmin(admin.ModelAdmin):
    form = DkimKeyForm
    list_display = ("__str__", "domain", "service", "is_enabled", "dns_check")
    list_filter = ("is_enabled",)
    readonly_fields = ("dns_record",)

    def has_module_permission(self, request) -> bool:
        return is_operator(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return is_operator(request.user)

    has_add_permission = has_change_permission = has_delete_permission = has_view_permission

    @admin.display(description="publish in DNS")
    def dns_record(self, row: DkimKey) -> str:
        if not row.public_key:
            return "—"
        return format_html(
            "<code>{} TXT</code><br><textarea rows=4 cols=90 readonly>{}</textarea>",
            row.dns_name,
            row.dns_value,
        )

    @admin.display(description="DNS")
    def dns_check(self, row: DkimKey) -> str:
        url = reverse("admin:deliverability_dkimkey_dns", args=[row.pk])
        return format_html('<a href="{}">check SPF, DKIM, DMARC</a>', url)

    def save_model(self, request, obj, form, change) -> None:
        pem = form.cleaned_data.get("private_key_pem") or (
            None if obj.private_key_encrypted else dkim.generate_private_key()
        )
        if pem:
            obj.private_key = pem
            obj.public_key = dkim.public_key_of(pem)
        super().save_model(request, obj, form, change)
        dkim.cache_clear()

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/dns/", wrap(self.dns_view), name="deliverability_dkimkey_dns"),
            *super().get_urls(),
        ]

    def dns_view(self, request, pk: int):
        row = get_object_or_404(DkimKey, pk=pk)
        if not is_operator(request.user):
            return HttpResponse(status=403)
        records = dns.domain_check(
            domain=row.domain, selector=row.selector, public_key=row.public_key
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"DNS of {row.domain}",
            "row": row,
            "records": records,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/deliverability/dns.html", context)
