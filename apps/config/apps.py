from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_defaults(sender, using="default", **kwargs) -> None:
    """After ``migrate``: a row for every registered key (idempotent)."""
    from django.db import connections

    from apps.config.models import ConfigVersion, SystemConfig
    from apps.config.services import config_sync_defaults

    tables = connections[using].introspection.table_names()
    if SystemConfig._meta.db_table in tables and ConfigVersion._meta.db_table in tables:
        config_sync_defaults()


class SystemConfigConfig(AppConfig):
    name = "apps.config"
    label = "config"
    verbose_name = "Configuration"

    def ready(self) -> None:
        post_migrate.connect(_sync_defaults, sender=self, dispatch_uid="config-sync-defaults")
