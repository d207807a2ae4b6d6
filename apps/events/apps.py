from __future__ import annotations

from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "apps.events"
    label = "events"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from apps.events.alerts import metric_register
        from apps.events.collectors import EventsCollector
        from apps.events.tasks import on_worker_spawn
        from apps.monitoring.collectors import cluster_collector_register

        # A q2 worker that starts makes sure the relay loops run (``tasks``).
        post_spawn.connect(on_worker_spawn, dispatch_uid="edm-relay-loops")
        # The alert rule metric of endpoints the relay disabled (``alerts``).
        metric_register()
        cluster_collector_register(EventsCollector())
