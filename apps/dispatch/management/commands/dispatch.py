"""``manage.py dispatch``: run one dispatcher loop in the foreground.

For debugging, and for running dispatchers under another supervisor (systemd, a
container orchestrator) instead of the django-q2 cluster. The loop takes a dispatcher
slot like the cluster's loops do, so ``queue.dispatchers`` still bounds the total.
SIGTERM / SIGINT stop it cleanly: messages on the wire finish and are recorded, claimed
ones go back to the queue.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from apps.dispatch.engine.loop import Dispatcher


class Command(BaseCommand):
    help = "Run one dispatcher loop in the foreground (Ctrl-C or SIGTERM stops it)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--seconds",
            type=float,
            default=None,
            help="stop after this many seconds (default: run until stopped)",
        )
        parser.add_argument(
            "--once", action="store_true", help="run one tick, send what it claimed, then stop"
        )

    def handle(self, *args, seconds, once, **options):
        if seconds is not None and seconds <= 0:
            raise CommandError("--seconds must be positive")
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        dispatcher = Dispatcher(stop=stop, seconds=seconds, once=once)
        if not dispatcher.acquire_slot():
            raise CommandError(
                f"no free dispatcher slot: queue.dispatchers={dispatcher.conf.dispatchers} "
                "loops are already running"
            )
        self.stdout.write(f"dispatcher running in slot {dispatcher.slot[0]}", ending="\n")
        self.stdout.flush()
        stats = dispatcher.run()
        self.stdout.write(
            f"dispatcher stopped: {stats.ticks} ticks, {stats.claimed} claimed, {stats.sent} sent"
        )
