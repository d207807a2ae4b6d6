"""Helpers of the monitoring tests."""

from __future__ import annotations

import threading

from django.db import connections

from apps.monitoring.loop import MonitorLoop


def run_monitor(loop: MonitorLoop) -> threading.Thread:
    """Run ``loop`` (its lease acquired) in a thread with its own database connections;
    stop it with ``loop.stop.set()`` and join the thread."""

    def target() -> None:
        try:
            loop.run()
        finally:
            connections.close_all()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread
