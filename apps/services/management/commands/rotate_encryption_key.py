"""``manage.py rotate_encryption_key``: re-encrypt stored secrets with the newest key.

Rotation: put the new key first in ``EDM_ENCRYPTION_KEY`` (``NEW,OLD``), restart, run
this command, then drop the old key (``NEW``) and restart again.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.services.crypto import DecryptionError
from apps.services.services import services_reencrypt_secrets


class Command(BaseCommand):
    help = "Re-encrypt every stored service password with the first key of EDM_ENCRYPTION_KEY."

    def handle(self, *args, **options):
        try:
            count = services_reencrypt_secrets()
        except DecryptionError as exc:
            raise CommandError(f"{exc}; nothing was changed") from None
        self.stdout.write(f"{count} password(s) re-encrypted with the newest key")
