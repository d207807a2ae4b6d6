"""``manage.py create_tenant USERNAME [--password P] [--email E]``: a tenant account.

The account logs into ``/admin/`` and the API and sees only its own contacts, tags,
imports and tasks (see ``apps.core.tenancy``). Without ``--password`` a random one is
made and printed once.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from apps.core.services import tenant_create


class Command(BaseCommand):
    help = "Create a tenant: a user of the admin and the API who sees only its own data."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--password", help="default: a new random password, printed once")
        parser.add_argument("--email", default="")

    def handle(self, *args, username, password, email, **options):
        try:
            user, password_used = tenant_create(username=username, password=password, email=email)
        except ValidationError as exc:
            reasons = "; ".join(
                f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
            )
            raise CommandError(reasons) from None
        shown = "" if password is not None else f" with password {password_used!r}"
        self.stdout.write(self.style.SUCCESS(f"tenant {user.get_username()!r} created{shown}"))
