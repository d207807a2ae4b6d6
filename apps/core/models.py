"""Bits shared by every app."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import models


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Tenant(User):
    """The user model seen as an account that owns data; it carries the operator rule's
    permission (``core.view_all_tenants``, see :mod:`apps.core.tenancy`)."""

    class Meta:
        proxy = True
        verbose_name = "tenant account"
        default_permissions = ()
        permissions = [("view_all_tenants", "Can see and change every tenant's data")]
