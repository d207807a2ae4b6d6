from __future__ import annotations

from django.apps import AppConfig


class DispatchConfig(AppConfig):
    name = "apps.dispatch"
    label = "dispatch"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from apps.dispatch.tasks import on_worker_spawn

        # A q2 worker that starts makes sure the dispatcher loops run (``tasks``).
        post_spawn.connect(on_worker_spawn, dispatch_uid="edm-dispatcher-loops")
