from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "apps.monitoring"
    label = "monitoring"

    def ready(self) -> None:
        from prometheus_client import REGISTRY, disable_created_metrics

        from apps.monitoring.collectors import DatabaseCollector

        # A "_created" sample per counter doubles a scrape for little use.
        disable_created_metrics()
        # Once per process: ready() may run again in tests that reload the app registry.
        if not any(isinstance(c, DatabaseCollector) for c in REGISTRY._collector_to_names):
            REGISTRY.register(DatabaseCollector())
