"""Admin plumbing shared by every app: tenant scoping, the site's links, user accounts.

:class:`TenantScopedAdmin` is the one place where the admin applies the operator rule
(:func:`apps.core.tenancy.is_operator`) to a model with an owner: a tenant sees only its
own rows in the list, the change and delete pages, the history, the actions, the
autocomplete answers (which read the related model's admin queryset), every foreign-key
and many-to-many choice and every related-object filter; the owner is never offered to
it and is filled from the logged-in user. Another tenant's object answers 404.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.contrib.auth.models import Group
from django.core.exceptions import FieldDoesNotExist
from django.core.paginator import Page, Paginator
from django.http import Http404
from django.utils.functional import cached_property

from apps.core.services import tenant_grant
from apps.core.tenancy import OPERATORS_GROUP, is_operator, owned_by


def _has_owner(model) -> bool:
    try:
        field = model._meta.get_field("owner")
    except FieldDoesNotExist:
        return False
    return field.is_relation and field.related_model is get_user_model()


class NotFoundAdminMixin:
    """An object outside the admin's queryset (another tenant's, or none) answers 404 on
    its change, delete and history pages. Django's admin would redirect to the index
    with "does not exist", which is not what every other URL of an unknown object
    answers. For admins that scope their queryset themselves."""

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404(f"no {self.opts.verbose_name} with id {object_id!r}")
        return obj


class TenantScopedAdmin(NotFoundAdminMixin, admin.ModelAdmin):
    """Rows of other owners do not exist for a tenant (see the module docstring)."""

    owner_field = "owner"

    # --- rows -------------------------------------------------------------------------

    def get_queryset(self, request):
        return owned_by(super().get_queryset(request), request.user, field=self.owner_field)

    def save_model(self, request, obj, form, change) -> None:
        if not change and not is_operator(request.user):
            setattr(obj, self.owner_field, request.user)
        elif not change and getattr(obj, f"{self.owner_field}_id", None) is None:
            setattr(obj, self.owner_field, request.user)
        super().save_model(request, obj, form, change)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        if not self._for_tenant(request):
            return form
        owner_field, user = self.owner_field, request.user

        class TenantForm(form):
            """The owner is the tenant, set before validation, so that uniqueness per
            owner is checked on the form instead of failing in the database."""

            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                if getattr(self.instance, f"{owner_field}_id", None) is None:
                    setattr(self.instance, owner_field, user)

            def _get_validation_exclusions(self):
                exclusions = super()._get_validation_exclusions()
                exclusions.discard(owner_field)
                return exclusions

        TenantForm.__name__ = form.__name__
        return TenantForm

    # --- what a tenant is shown --------------------------------------------------------

    def _for_tenant(self, request) -> bool:
        return not is_operator(request.user)

    def _without_owner(self, names):
        owner = self.owner_field
        return [
            n
            for n in names
            if not (isinstance(n, str) and (n == owner or n.startswith(f"{owner}__")))
        ]

    def get_list_display(self, request):
        names = super().get_list_display(request)
        return self._without_owner(names) if self._for_tenant(request) else names

    def get_list_filter(self, request):
        names = super().get_list_filter(request)
        return self._without_owner(names) if self._for_tenant(request) else names

    def get_search_fields(self, request):
        names = super().get_search_fields(request)
        return self._without_owner(names) if self._for_tenant(request) else names

    def get_fields(self, request, obj=None):
        names = super().get_fields(request, obj)
        return self._without_owner(names) if self._for_tenant(request) else names

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if not self._for_tenant(request):
            return fieldsets
        return [
            (name, {**options, "fields": self._without_owner(options.get("fields", ()))})
            for name, options in fieldsets
        ]

    def get_readonly_fields(self, request, obj=None):
        names = super().get_readonly_fields(request, obj)
        return self._without_owner(names) if self._for_tenant(request) else names

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if self._for_tenant(request):
            exclude.append(self.owner_field)
        return exclude or None

    # --- choices ------------------------------------------------------------------------

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        return _scoped_choices(field, db_field, request)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        field = super().formfield_for_manytomany(db_field, request, **kwargs)
        return _scoped_choices(field, db_field, request)


class IdListFilter(admin.SimpleListFilter):
    """A list filter on one id in the query string (``?<parameter_name>=<id>``): the
    rows whose ``lookup`` is that id, none for a value that is not an id. Subclasses give
    the choices (scoped to the caller: see ``owned_by``)."""

    lookup = ""

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        return queryset.filter(**{self.lookup: int(value)})


def report_outcome(model_admin, request, done: int, what: str, refused: list[str]) -> None:
    """The message of an action: how many rows ``what`` (a success, or a warning when
    nothing was done but something refused), then each refusal and its reason."""
    level = messages.SUCCESS if done or not refused else messages.WARNING
    model_admin.message_user(request, f"{done} {what}.", level)
    if refused:
        model_admin.message_user(
            request, f"{len(refused)} refused — " + "; ".join(refused), messages.WARNING
        )


class CountFreePaginator(Paginator):
    """Pages a huge table without ``COUNT(*)``: it reads the requested page plus one row.

    ``count`` is only "rows up to this page, plus one if there is a next page", which is
    all the admin needs to draw previous/next links. Build it with the page the request
    asks for (:meth:`CountFreeAdminMixin.get_paginator`); the dispatch records and the
    events outbox use it.
    """

    def __init__(self, object_list, per_page, *, page_number: int = 1, **kwargs) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.page_number = max(page_number, 1)

    @cached_property
    def _window(self) -> list:
        offset = (self.page_number - 1) * self.per_page
        return list(self.object_list[offset : offset + self.per_page + 1])

    @cached_property
    def count(self) -> int:
        return (self.page_number - 1) * self.per_page + len(self._window)

    def page(self, number) -> Page:
        number = self.validate_number(number)
        if number != self.page_number:
            return super().page(number)
        return self._get_page(self._window[: self.per_page], number, self)


class CountFreeAdminMixin:
    """Admin options for million-row tables: no counts, no "show all", newest first."""

    show_full_result_count = False
    list_max_show_all = 0
    list_per_page = 100

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        try:
            number = int(request.GET.get("p", 1))
        except ValueError:
            number = 1
        return CountFreePaginator(
            queryset,
            per_page,
            page_number=number,
            orphans=0,
            allow_empty_first_page=allow_empty_first_page,
        )


class ReadOnlyAdminMixin:
    """Rows change only through services (actions), never through a form."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def _scoped_choices(field, db_field, request):
    if field is not None and _has_owner(db_field.related_model) and hasattr(field, "queryset"):
        field.queryset = owned_by(field.queryset, request.user)
    return field


# --- the site ---------------------------------------------------------------------------

# "View site" leads to the API documentation: the admin is the site's only other page.
admin.site.site_header = "EDM administration"
admin.site.site_title = "EDM"
admin.site.site_url = "/api/docs/"


# --- user accounts ------------------------------------------------------------------------


class AccountCreationForm(AdminUserCreationForm):
    """The admin's "add user" form with the kind of account to make."""

    TENANT, OPERATOR, PLAIN = "tenant", "operator", "plain"

    account = forms.ChoiceField(
        choices=[
            (TENANT, "Tenant — works in the admin and the API with its own data only"),
            (OPERATOR, "Operator — sees every tenant and the operator's pages"),
            (PLAIN, "API only — no admin access, no group"),
        ],
        initial=TENANT,
        widget=forms.RadioSelect,
    )


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class AccountAdmin(UserAdmin):
    """Django's user admin, where the add form makes tenants (the default) or operators."""

    add_form = AccountCreationForm
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "account", "password1", "password2")}),
    )
    list_display = ("username", "email", "is_staff", "is_superuser", "groups_list", "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active", "groups")

    @admin.display(description="groups")
    def groups_list(self, user) -> str:
        return ", ".join(group.name for group in user.groups.all()) or "—"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        account = form.cleaned_data.get("account") if not change else None
        if account == AccountCreationForm.TENANT:
            tenant_grant(user=obj)
        elif account == AccountCreationForm.OPERATOR:
            obj.is_staff = True
            obj.save(update_fields=["is_staff"])
            obj.groups.add(Group.objects.get_or_create(name=OPERATORS_GROUP)[0])
        if account:
            self.message_user(request, f"{obj.username}: {account} account", messages.INFO)
