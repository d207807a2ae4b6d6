"""Who is an operator, who is a tenant, and what each may see: the one rule.

* An **operator** is an active superuser or an active user holding the permission
  ``core.view_all_tenants`` (the ``operators`` group has it). Operators see and change
  every owner's rows and the operator's pages (services, pools, configuration, the
  django-q2 queue, users). :func:`is_operator` is the rule; the admin and the API both
  ask it, nothing else looks at ``is_staff`` or ``is_superuser``.
* A **tenant** is any other user: it owns contacts, tags, imports and send tasks, and
  sees only those (:func:`owned_by`). A tenant who works in the admin is a staff user in
  the ``tenants`` group, whose permissions are :data:`TENANT_PERMISSIONS`.

Both groups are created by a data migration and kept in step by :func:`groups_ensure`
after every ``migrate`` (permissions are only ever added to them, never removed, so an
operator's own changes to the groups stay). A new model that tenants work with is added
to :data:`TENANT_PERMISSIONS`; operators receive every permission that exists.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

OPERATOR_PERMISSION = "core.view_all_tenants"
OPERATORS_GROUP = "operators"
TENANTS_GROUP = "tenants"

# What a tenant may do in the admin, as ``app_label.codename``. Rows are always limited
# to the tenant's own (:func:`owned_by`); these only decide which pages it gets at all.
TENANT_PERMISSIONS: tuple[str, ...] = (
    "contacts.view_contact",
    "contacts.add_contact",
    "contacts.change_contact",
    "contacts.delete_contact",
    "contacts.view_tag",
    "contacts.add_tag",
    "contacts.change_tag",
    "contacts.delete_tag",
    "contacts.view_contactimport",
    "contacts.add_contactimport",
    "dispatch.view_task",
    "dispatch.add_task",
    "dispatch.change_task",
    "dispatch.delete_task",
    "dispatch.view_subtask",
    "dispatch.view_deadletter",
    "dispatch.view_testsend",
    "events.view_event",
    "events.view_webhookendpoint",
    "events.add_webhookendpoint",
    "events.change_webhookendpoint",
    "events.delete_webhookendpoint",
    "events.view_webhookdelivery",
    "events.view_webhookattempt",
)


def is_operator(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Whether ``user`` may see and change every tenant's data (the one operator rule).

    At most one query per user object (the answer is kept on it): a superuser needs
    none, anyone else one look-up of the permission, directly or through a group.
    """
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    cached = getattr(user, "_edm_is_operator", None)
    if cached is None:
        from django.contrib.auth.models import Permission

        app_label, codename = OPERATOR_PERMISSION.split(".")
        cached = (
            Permission.objects.filter(content_type__app_label=app_label, codename=codename)
            .filter(Q(user=user) | Q(group__user=user))
            .exists()
        )
        user._edm_is_operator = cached
    return cached


def owned_by(queryset: QuerySet, user, *, field: str = "owner") -> QuerySet:
    """``queryset`` as ``user`` may see it: everything for an operator, else the rows whose
    ``field`` is the user (none for an anonymous user)."""
    if is_operator(user):
        return queryset
    if user is None or not user.is_authenticated:
        return queryset.none()
    return queryset.filter(**{field: user})


def _permissions(permission_model, names: Iterable[str]):
    wanted = {tuple(name.split(".", 1)) for name in names}
    found = permission_model.objects.filter(
        content_type__app_label__in={app for app, _ in wanted},
        codename__in={codename for _, codename in wanted},
    ).select_related("content_type")
    return [p for p in found if (p.content_type.app_label, p.codename) in wanted]


def groups_ensure(*, group_model=None, permission_model=None) -> None:
    """Create the ``operators`` and ``tenants`` groups when missing and add the
    permissions they lack (never removing any). Idempotent.

    The models may be given (a migration passes its historical ones); by default the
    current ``Group`` and ``Permission``.
    """
    if group_model is None or permission_model is None:
        from django.contrib.auth.models import Group, Permission

        group_model, permission_model = Group, Permission
    operators, _ = group_model.objects.get_or_create(name=OPERATORS_GROUP)
    have = set(operators.permissions.values_list("pk", flat=True))
    missing = permission_model.objects.exclude(pk__in=have)
    operators.permissions.add(*missing)
    tenants, _ = group_model.objects.get_or_create(name=TENANTS_GROUP)
    tenants.permissions.add(*_permissions(permission_model, TENANT_PERMISSIONS))
