from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "apps.monitoring"
    label = "monitoring"

    def ready(self) -> None:
        from prometheus_client import disable_created_metrics

        from apps.monitoring.collectors import DatabaseCollector, cluster_collector_register

        # A "_created" sample per counter doubles a scrape for little use.
        disable_created_metrics()
        cluster_collector_register(DatabaseCollector())
