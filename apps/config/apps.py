from __future__ import annotations

from django.apps import AppConfig


class SystemConfigConfig(AppConfig):
    name = "apps.config"
    label = "config"
    verbose_name = "Configuration"
