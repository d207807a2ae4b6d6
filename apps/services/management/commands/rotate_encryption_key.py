"""``manage.py rotate_encryption_key``: re-encrypt stored secrets with the newest key.

Rotation: put the new key first in ``EDM_ENCRYPTION_KEY`` (``NEW,OLD``), restart, run
this command, then drop the old key (``NEW``) and restart again.

Which secrets: every stored secret lives in a model field whose name ends in
``_encrypted`` and holds an ``apps.services.crypto`` token (SMTP passwords, alert-channel
signing secrets, DKIM private keys, webhook secrets, …). The command finds those fields on
every installed model, so a secret added by any app is rotated without being listed here.
All or nothing: one transaction, and a token no configured key can decrypt aborts it.
"""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from apps.services import crypto
from apps.services.crypto import DecryptionError

SUFFIX = "_encrypted"


def encrypted_fields() -> list[tuple[type, str]]:
    """``(model, field name)`` of every stored secret, in a stable order."""
    found = []
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if field.name.endswith(SUFFIX):
                found.append((model, field.name))
    return sorted(found, key=lambda item: (item[0]._meta.label_lower, item[1]))


@transaction.atomic
def secrets_reencrypt() -> dict[str, int]:
    """Re-encrypt every non-empty secret with the first key; how many per ``model.field``."""
    counts: dict[str, int] = {}
    for model, name in encrypted_fields():
        rows = model._default_manager.exclude(**{name: ""}).select_for_update()
        changed = 0
        for pk, token in rows.values_list("pk", name):
            model._default_manager.filter(pk=pk).update(**{name: crypto.reencrypt(token)})
            changed += 1
        if changed:
            counts[f"{model._meta.label_lower}.{name}"] = changed
    return counts


class Command(BaseCommand):
    help = "Re-encrypt every stored secret with the first key of EDM_ENCRYPTION_KEY."

    def handle(self, *args, **options):
        try:
            counts = secrets_reencrypt()
        except DecryptionError as exc:
            raise CommandError(f"{exc}; nothing was changed") from None
        total = sum(counts.values())
        self.stdout.write(f"{total} secret(s) re-encrypted with the newest key")
        for label, count in counts.items():
            self.stdout.write(f"  {label}: {count}")
