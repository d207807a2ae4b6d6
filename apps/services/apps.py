from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


@checks.register(checks.Tags.database)
def check_stored_secrets(app_configs=None, databases=None, **kwargs) -> list[checks.CheckMessage]:
    """Every stored password must decrypt with ``EDM_ENCRYPTION_KEY``.

    A wrong key otherwise shows up only when a dispatcher first connects. Database checks
    run on ``migrate`` (so on every start of ``make run`` and the containers) and with
    ``manage.py check --database default``.
    """
    if not databases or "default" not in databases:
        return []
    from django.db import DatabaseError

    from apps.services.crypto import DecryptionError, decrypt
    from apps.services.models import EmailService

    try:
        rows = list(
            EmailService.objects.exclude(password_encrypted="").values_list(
                "name", "password_encrypted"
            )
        )
    except DatabaseError:
        return []  # not migrated yet
    unreadable = []
    for name, token in rows:
        try:
            decrypt(token)
        except DecryptionError:
            unreadable.append(name)
    if not unreadable:
        return []
    return [
        checks.Error(
            f"EDM_ENCRYPTION_KEY cannot decrypt the stored password of {len(unreadable)} email "
            f"service(s): {', '.join(sorted(unreadable)[:10])}",
            hint="Set EDM_ENCRYPTION_KEY to the key these were saved with (keep it after the new "
            "key, comma-separated, while rotating), or set the passwords again.",
            id="services.E001",
        )
    ]


class ServicesConfig(AppConfig):
    name = "apps.services"
    label = "services"
    verbose_name = "Email services"
