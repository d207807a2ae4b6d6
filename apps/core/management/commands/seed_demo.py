"""``manage.py seed_demo``: a demo operator, a demo tenant and each app's demo data.

Idempotent: running it again keeps existing rows. Each app may provide
``apps/<app>/demo.py`` with ``seed(*, operator, user) -> str`` (a one-line summary);
they run in the order of ``DEMO_APPS``.
"""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.core.discovery import app_modules
from apps.core.services import tenant_grant

DEMO_APPS = ["config", "services", "contacts", "dispatch", "monitoring"]


class Command(BaseCommand):
    help = "Seed a demo operator, user, email services, contacts, tags and a small task."

    def add_arguments(self, parser):
        parser.add_argument("--password", default=os.environ.get("EDM_DEMO_PASSWORD", "edm-demo"))

    @transaction.atomic
    def handle(self, *args, password, **options):
        User = get_user_model()
        operator, created = User.objects.get_or_create(
            username="operator",
            defaults={"is_staff": True, "is_superuser": True, "email": "operator@localhost"},
        )
        if created:
            operator.set_password(password)
            operator.save()
        user, created_user = User.objects.get_or_create(
            username="demo", defaults={"email": "demo@localhost"}
        )
        if created_user:
            user.set_password(password)
            user.save()
        # The demo user works in the admin as a tenant (seeing only its own data).
        tenant_grant(user=user)
        for module in app_modules("demo", order=DEMO_APPS):
            summary = module.seed(operator=operator, user=user)
            if summary:
                self.stdout.write(f"{module.__name__.split('.')[1]}: {summary}")
        state = "created" if created else "already there; password unchanged"
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo operator: username 'operator', password '{password}' ({state}); "
                f"demo tenant: 'demo' / '{password}'"
            )
        )
