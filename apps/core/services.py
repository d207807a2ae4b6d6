"""Accounts: tenants are made here (the admin's user form and ``create_tenant`` call it)."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser, Group
from django.core.exceptions import ValidationError
from django.db import transaction

from apps.core.tenancy import TENANTS_GROUP, groups_ensure


@transaction.atomic
def tenant_create(
    *, username: str, password: str | None = None, email: str = ""
) -> tuple[AbstractBaseUser, str]:
    """Create a tenant: an active staff user in the ``tenants`` group, who logs into the
    admin and the API and sees only its own data. Returns the user and its password
    (a new random one when ``password`` is ``None``).

    Raises ``ValidationError`` naming the field: a username that is empty, malformed or
    taken, a password that the password validators refuse.
    """
    User = get_user_model()
    username = (username or "").strip()
    field = User._meta.get_field(User.USERNAME_FIELD)
    try:
        field.run_validators(username)
    except ValidationError as exc:
        raise ValidationError({"username": exc.messages}) from None
    if not username:
        raise ValidationError({"username": ["the username may not be empty"]})
    if User.objects.filter(**{f"{User.USERNAME_FIELD}__iexact": username}).exists():
        raise ValidationError({"username": [f"a user named {username!r} already exists"]})
    user = User(**{User.USERNAME_FIELD: username}, email=email or "", is_staff=True)
    if password is None:
        password = secrets.token_urlsafe(12)
    else:
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise ValidationError({"password": exc.messages}) from None
    user.set_password(password)
    user.save()
    tenant_grant(user=user)
    return user, password


def tenant_grant(*, user: AbstractBaseUser) -> None:
    """Make an existing user a tenant: staff (so it may log into the admin) and a member
    of ``tenants``. Idempotent."""
    groups_ensure()
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.groups.add(Group.objects.get(name=TENANTS_GROUP))
