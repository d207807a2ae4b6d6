"""Admin for contacts, tags and CSV imports.

Scope: an operator sees every owner's rows; a tenant only its own (the one rule of
``apps.core.tenancy``, applied by ``apps.core.admin.TenantScopedAdmin``, the same as the
API's). Every write that touches memberships or counts goes through the services,
including deletions, so ``contact_count`` stays exact.
"""

from __future__ import annotations

from collections import defaultdict

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db import OperationalError, connection, transaction
from django.http import HttpResponseRedirect, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property

from apps.contacts import services
from apps.contacts.csv_import import rejections_csv
from apps.contacts.emails import normalize_email
from apps.contacts.models import Contact, ContactImport, Tag
from apps.core.admin import IdListFilter, TenantScopedAdmin
from apps.core.errors import ApplicationError
from apps.core.tenancy import is_operator, owned_by
from apps.events.admin import AuditTrailMixin


class CountFreePaginator(Paginator):
    """A paginator that never waits on ``COUNT(*)`` over a million rows.

    It tries the exact count with a 100 ms statement timeout and, when that is not
    enough, shows PostgreSQL's planner estimate of the table size instead (pages are
    still read with LIMIT/OFFSET, so the first pages stay instant).
    """

    timeout_ms = 100

    @cached_property
    def count(self) -> int:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {int(self.timeout_ms)}")
                return super().count
        except OperationalError:
            table = self.object_list.model._meta.db_table
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
                    [table],
                )
                return int(cursor.fetchone()[0])


def _scoped_tags(request):
    return owned_by(Tag.objects.select_related("owner").order_by("name"), request.user)


class TagFilter(IdListFilter):
    title = "tag"
    parameter_name = "tag"
    lookup = "memberships__tag_id"

    def lookups(self, request, model_admin):
        tags = _scoped_tags(request)[:500]
        if not is_operator(request.user):
            return [(t.pk, t.name) for t in tags]
        return [(t.pk, f"{t.name} ({t.owner})") for t in tags]


class TagChoiceForm(forms.Form):
    tag = forms.ModelChoiceField(queryset=Tag.objects.none())

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tag"].queryset = _scoped_tags(request)


class ContactAdminForm(forms.ModelForm):
    class Meta:
        model = Contact
        fields = ["owner", "email", "first_name", "last_name", "attributes", "status", "source"]

    def clean_email(self) -> str:
        email = normalize_email(self.cleaned_data.get("email"))
        if email is None:
            raise forms.ValidationError("Enter a valid e-mail address.")
        return email

    def clean(self):
        cleaned = super().clean()
        # The service refuses it too; here it is a form error instead of a failed save.
        if (
            self.instance.pk
            and cleaned.get("status") == Contact.Status.ACTIVE
            and self.instance.status != Contact.Status.ACTIVE
        ):
            why = services.contact_suppressed_status(
                owner_id=self.instance.owner_id, email=cleaned.get("email") or ""
            )
            if why:
                self.add_error("status", f"This address is suppressed ({why}).")
        return cleaned


# What the contact form may change through ``contact_update``.
CONTACT_FIELDS = ("email", "first_name", "last_name", "attributes", "status")


@admin.register(Contact)
class ContactAdmin(AuditTrailMixin, TenantScopedAdmin):
    form = ContactAdminForm
    list_display = ["email", "first_name", "last_name", "status", "owner", "created_at"]
    list_filter = ["status", TagFilter]
    search_fields = ["email", "first_name", "last_name"]
    search_help_text = "E-mail or name contains (slow on very large lists: filter by tag first)"
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    readonly_fields = ["created_at", "updated_at"]
    paginator = CountFreePaginator
    show_full_result_count = False
    list_per_page = 50
    ordering = ["-id"]
    actions = ["add_to_tag", "remove_from_tag", "unsubscribe", "delete_selected_contacts"]

    def get_actions(self, request):
        actions = super().get_actions(request)
        # The stock bulk delete bypasses the services (and so the tag counts).
        actions.pop("delete_selected", None)
        return actions

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        # A contact stays with its owner (its memberships are the owner's tags).
        return [*fields, "owner", "source"] if obj is not None else fields

    def save_model(self, request, obj, form, change) -> None:
        """Through the services, so the change is validated and recorded with its actor."""
        if change:
            current = Contact.objects.get(pk=obj.pk)
            data = {f: form.cleaned_data[f] for f in form.changed_data if f in CONTACT_FIELDS}
            services.contact_update(contact=current, data=data, actor=request.user)
        else:
            owner = obj.owner if is_operator(request.user) and obj.owner_id else request.user
            data = {f: form.cleaned_data.get(f) for f in CONTACT_FIELDS}
            created = services.contact_create(
                owner=owner,
                data=data,
                source=form.cleaned_data.get("source") or "admin",
                actor=request.user,
            )
            obj.pk = created.pk
            obj._state.adding = False
        obj.refresh_from_db()

    def _by_owner(self, queryset) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = defaultdict(list)
        for pk, owner_id in queryset.values_list("pk", "owner_id"):
            groups[owner_id].append(pk)
        return groups

    def _tag_action(self, request, queryset, *, add: bool):
        verb = "add to" if add else "remove from"
        if "apply" in request.POST:
            form = TagChoiceForm(request.POST, request=request)
            if form.is_valid():
                tag = form.cleaned_data["tag"]
                ids = list(queryset.filter(owner=tag.owner).values_list("pk", flat=True))
                selection = services.ContactSelection(ids=ids)
                change = (services.tag_add_contacts if add else services.tag_remove_contacts)(
                    tag=tag, selection=selection, actor=request.user
                )
                skipped = queryset.count() - len(ids)
                message = f"{verb.capitalize()} tag {tag.name!r}: {change.changed} changed"
                if skipped:
                    message += f"; {skipped} contact(s) of another owner skipped"
                self.message_user(request, message, messages.SUCCESS)
                return None
        else:
            form = TagChoiceForm(request=request)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb.capitalize()} tag",
            "form": form,
            "queryset": queryset[:20],
            "count": queryset.count(),
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "action": request.POST["action"],
            "opts": self.model._meta,
            "verb": verb,
        }
        return TemplateResponse(request, "admin/contacts/contact/tag_action.html", context)

    @admin.action(description="Add selected contacts to a tag")
    def add_to_tag(self, request, queryset):
        return self._tag_action(request, queryset, add=True)

    @admin.action(description="Remove selected contacts from a tag")
    def remove_from_tag(self, request, queryset):
        return self._tag_action(request, queryset, add=False)

    @admin.action(description="Unsubscribe selected contacts")
    def unsubscribe(self, request, queryset):
        changed = 0
        for owner_id, ids in self._by_owner(queryset).items():
            owner = get_user_model()(pk=owner_id)
            changed += services.contacts_set_status(
                owner=owner,
                selection=services.ContactSelection(ids=ids),
                status=Contact.Status.UNSUBSCRIBED,
                actor=request.user,
            )
        self.message_user(request, f"{changed} contact(s) unsubscribed", messages.SUCCESS)

    @admin.action(description="Delete selected contacts", permissions=["delete"])
    def delete_selected_contacts(self, request, queryset):
        self.delete_queryset(request, queryset)
        self.message_user(request, "Selected contacts deleted", messages.SUCCESS)

    def delete_model(self, request, obj):
        services.contact_delete(contact=obj, actor=request.user)

    def delete_queryset(self, request, queryset):
        for owner_id, ids in self._by_owner(queryset).items():
            services.contacts_delete(
                owner=get_user_model()(pk=owner_id), contact_ids=ids, actor=request.user
            )


@admin.register(Tag)
class TagAdmin(AuditTrailMixin, TenantScopedAdmin):
    list_display = ["name", "owner", "parent", "contact_count", "updated_at"]
    search_fields = ["name"]
    list_select_related = ["owner", "parent"]
    raw_id_fields = ["owner"]
    autocomplete_fields = ["parent"]
    readonly_fields = ["contact_count", "created_at", "updated_at"]
    actions = ["delete_selected_tags"]

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Delete selected tags (not their contacts)", permissions=["delete"])
    def delete_selected_tags(self, request, queryset):
        count = 0
        for tag in queryset:
            services.tag_delete(tag=tag, actor=request.user)
            count += 1
        self.message_user(request, f"{count} tag(s) deleted", messages.SUCCESS)

    def delete_model(self, request, obj):
        services.tag_delete(tag=obj, actor=request.user)

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "owner"] if obj is not None else fields

    def save_model(self, request, obj, form, change) -> None:
        """Through the services, so the change is validated and recorded with its actor."""
        if change:
            current = Tag.objects.get(pk=obj.pk)
            services.tag_update(tag=current, name=obj.name, parent=obj.parent, actor=request.user)
        else:
            owner = obj.owner if is_operator(request.user) and obj.owner_id else request.user
            created = services.tag_create(
                owner=owner, name=obj.name, parent=obj.parent, actor=request.user
            )
            obj.pk = created.pk
            obj._state.adding = False
        obj.refresh_from_db()


class ImportUploadForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header line; an 'email' column is required.")
    owner = forms.ModelChoiceField(queryset=get_user_model().objects.none(), required=False)
    tags = forms.CharField(
        required=False, help_text="Comma-separated tag names to add every contact to."
    )

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        if request is not None and is_operator(request.user):
            self.fields["owner"].queryset = get_user_model().objects.order_by("username")
            self.fields["owner"].help_text = "Whose contacts (default: you)."
        else:
            del self.fields["owner"]


@admin.register(ContactImport)
class ContactImportAdmin(AuditTrailMixin, TenantScopedAdmin):
    list_display = [
        "id",
        "original_name",
        "owner",
        "status",
        "percent_done",
        "rows_read",
        "rows_created",
        "rows_updated",
        "rows_rejected",
        "rows_skipped",
        "created_at",
    ]
    list_filter = ["status"]
    list_select_related = ["owner"]
    change_form_template = "admin/contacts/contactimport/change_form.html"
    fields = [
        "owner",
        "original_name",
        "tag_names",
        "status",
        "error",
        "bytes_total",
        "bytes_read",
        "rows_read",
        "rows_created",
        "rows_updated",
        "rows_unchanged",
        "rows_rejected",
        "rows_skipped",
        "created_at",
        "started_at",
        "finished_at",
    ]

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def percent_done(self, obj: ContactImport) -> str:
        return f"{obj.percent:.0f}%"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("upload/", wrap(self.upload_view), name="contacts_contactimport_upload"),
            path(
                "<int:pk>/progress/",
                wrap(self.progress_view),
                name="contacts_contactimport_progress",
            ),
            path("<int:pk>/report/", wrap(self.report_view), name="contacts_contactimport_report"),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:contacts_contactimport_upload"))

    def upload_view(self, request):
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = ImportUploadForm(request.POST or None, request.FILES or None, request=request)
        if request.method == "POST" and form.is_valid():
            owner = form.cleaned_data.get("owner") or request.user
            names = [n.strip() for n in form.cleaned_data["tags"].split(",") if n.strip()]
            try:
                job = services.contact_import_create(
                    owner=owner,
                    uploaded_file=form.cleaned_data["file"],
                    tag_names=names,
                    actor=request.user,
                )
            except ApplicationError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                self.message_user(request, f"Import #{job.pk} queued", messages.SUCCESS)
                return HttpResponseRedirect(
                    reverse("admin:contacts_contactimport_change", args=[job.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Import contacts from CSV",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/contacts/contactimport/upload.html", context)

    def progress_view(self, request, pk: int):
        """The job's state, polled by its page (``static/contacts/import.js``): every
        counter the page shows, so that none of them stays behind."""
        job = get_object_or_404(self.get_queryset(request), pk=pk)

        def shown(moment):  # as the read-only field shows it: local time, DATETIME_FORMAT
            return formats.date_format(timezone.localtime(moment), "DATETIME_FORMAT")

        return JsonResponse(
            {
                "status": job.status,
                "status_display": job.get_status_display(),
                "percent": job.percent,
                "bytes_read": job.bytes_read,
                "rows_read": job.rows_read,
                "rows_created": job.rows_created,
                "rows_updated": job.rows_updated,
                "rows_unchanged": job.rows_unchanged,
                "rows_rejected": job.rows_rejected,
                "rows_skipped": job.rows_skipped,
                "error": job.error,
                "started_at": shown(job.started_at) if job.started_at else None,
                "finished_at": shown(job.finished_at) if job.finished_at else None,
                "finished": job.is_finished,
            }
        )

    def report_view(self, request, pk: int):
        job = get_object_or_404(self.get_queryset(request), pk=pk)
        response = StreamingHttpResponse(rejections_csv(job), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="import-{job.pk}-rejected.csv"'
        return response
