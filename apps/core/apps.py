from __future__ import annotations

from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _groups_after_migrate(sender, **kwargs) -> None:
    # Once per ``migrate`` (after the last app's permissions exist), and after a test
    # database flush, which also sends post_migrate and empties the groups.
    if sender is list(apps.get_app_configs())[-1]:
        from apps.core.tenancy import groups_ensure

        groups_ensure()


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        post_migrate.connect(_groups_after_migrate, dispatch_uid="edm-groups-ensure")
        # A token deleted or a user changed: its remembered API token is not used again.
        from django.contrib.auth import get_user_model
        from django.db.models.signals import m2m_changed, post_delete, post_save
        from rest_framework.authtoken.models import Token

        from apps.core.tokens import tokens_forget

        def forget(**kwargs) -> None:
            tokens_forget()

        User = get_user_model()
        for signal, sender in (
            (post_delete, Token),
            (post_save, Token),
            (post_save, User),
            (post_delete, User),
            (m2m_changed, User.groups.through),
        ):
            signal.connect(
                forget, sender=sender, weak=False, dispatch_uid=f"edm-tokens-{signal}-{sender}"
            )
