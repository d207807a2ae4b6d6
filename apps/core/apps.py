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
