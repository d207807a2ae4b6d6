"""Operators and tenants: the one rule, the groups, making tenant accounts."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import AnonymousUser, Group, Permission
from django.core.management import CommandError, call_command
from django.urls import reverse

from apps.core.services import tenant_create
from apps.core.tenancy import (
    OPERATORS_GROUP,
    TENANT_PERMISSIONS,
    TENANTS_GROUP,
    groups_ensure,
    is_operator,
    owned_by,
)

pytestmark = pytest.mark.django_db


def test_migrate_creates_the_groups_with_their_permissions():
    operators = Group.objects.get(name=OPERATORS_GROUP)
    tenants = Group.objects.get(name=TENANTS_GROUP)
    assert operators.permissions.filter(codename="view_all_tenants").exists()
    assert operators.permissions.count() == Permission.objects.count()
    granted = {
        f"{p.content_type.app_label}.{p.codename}"
        for p in tenants.permissions.select_related("content_type")
    }
    assert granted == set(TENANT_PERMISSIONS)


def test_groups_ensure_adds_missing_permissions_and_keeps_an_operators_changes():
    tenants = Group.objects.get(name=TENANTS_GROUP)
    extra = Permission.objects.get(codename="view_emailservice")
    tenants.permissions.add(extra)
    view_task = Permission.objects.get(codename="view_task", content_type__app_label="dispatch")
    tenants.permissions.remove(view_task)
    groups_ensure()
    assert tenants.permissions.filter(pk=view_task.pk).exists()
    assert tenants.permissions.filter(pk=extra.pk).exists()


def test_the_one_rule_says_who_is_an_operator(make_user, staff_user):
    member = make_user("member", is_staff=True)
    member.groups.add(Group.objects.get(name=OPERATORS_GROUP))
    direct = make_user("direct")
    direct.user_permissions.add(Permission.objects.get(codename="view_all_tenants"))
    tenant, _ = tenant_create(username="tenant")
    plain_staff = make_user("staff-only", is_staff=True)
    gone = make_user("gone", is_superuser=True, is_active=False)
    assert [is_operator(u) for u in (staff_user, member, direct)] == [True, True, True]
    assert [is_operator(u) for u in (tenant, plain_staff, gone, AnonymousUser(), None)] == [
        False
    ] * 5


def test_owned_by_scopes_a_queryset_to_its_owner(make_user, staff_user):
    from apps.contacts.models import Tag

    alice, bob = make_user("alice"), make_user("bob")
    Tag.objects.create(owner=alice, name="a")
    Tag.objects.create(owner=bob, name="b")
    assert [t.name for t in owned_by(Tag.objects.order_by("name"), alice)] == ["a"]
    assert owned_by(Tag.objects.all(), staff_user).count() == 2
    assert not owned_by(Tag.objects.all(), AnonymousUser()).exists()


def test_create_tenant_makes_a_staff_user_in_tenants_who_logs_into_the_admin(client):
    out = io.StringIO()
    call_command("create_tenant", "acme", "--password", "a-long-password-1", stdout=out)
    assert "tenant 'acme' created" in out.getvalue()
    assert client.login(username="acme", password="a-long-password-1")
    assert client.get(reverse("admin:index")).status_code == 200
    assert client.get(reverse("admin:dispatch_task_add")).status_code == 200
    assert client.get(reverse("admin:services_emailservice_changelist")).status_code == 403


def test_create_tenant_without_a_password_prints_a_new_one(client):
    out = io.StringIO()
    call_command("create_tenant", "acme", stdout=out)
    password = out.getvalue().split("with password ")[1].strip().strip("'")
    assert len(password) >= 12 and client.login(username="acme", password=password)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["taken"], "username: a user named 'taken' already exists"),
        (["x y!"], "username: "),
        (["fresh", "--password", "123"], "password: "),
    ],
)
def test_create_tenant_refuses_bad_input_naming_the_field(make_user, args, message):
    make_user("taken")
    with pytest.raises(CommandError, match=message):
        call_command("create_tenant", *args, stdout=io.StringIO())


def test_seed_demo_makes_the_demo_user_a_tenant(make_user):
    from django.contrib.auth import get_user_model

    make_user("demo")  # an older demo user, made before it was a tenant
    call_command("seed_demo", stdout=io.StringIO())
    demo = get_user_model().objects.get(username="demo")
    assert demo.is_staff and demo.groups.filter(name=TENANTS_GROUP).exists()
    assert not is_operator(demo)


def test_an_operator_makes_a_tenant_in_the_admins_user_form(client, staff_user):
    client.force_login(staff_user)
    response = client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "newco",
            "account": "tenant",
            "password1": "a-long-password-1",
            "password2": "a-long-password-1",
        },
    )
    assert response.status_code == 302, response.content[:500]
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="newco")
    assert user.is_staff and list(user.groups.values_list("name", flat=True)) == [TENANTS_GROUP]
    response = client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "ops",
            "account": "operator",
            "password1": "a-long-password-1",
            "password2": "a-long-password-1",
        },
    )
    assert is_operator(get_user_model().objects.get(username="ops"))


def test_the_landing_page_and_view_site_lead_somewhere(client, staff_user):
    assert client.get("/").headers["Location"] == reverse("admin:index")
    client.force_login(staff_user)
    index = client.get(reverse("admin:index")).content.decode()
    assert 'href="/api/docs/"' in index  # "View site": the API documentation
    assert client.get("/api/docs/").status_code == 200
