"""``manage.py dispatch``: run one dispatcher loop in the foreground.

For debugging, and for running dispatchers under another supervisor (systemd, a
container orchestrator) instead of the django-q2 cluster. The loop takes a dispatcher
slot like the cluster's loops do, so ``queue.dispatchers`` still bounds the total.
SIGTERM / SIGINT stop it cleanly: messages on the wire finish and are recorded, claimed
ones go back to the queue.

When every slot is taken (a restart right after a crash, whose slot lease still runs for
up to 30 s; or ``queue.dispatchers`` loops already running), it waits as a standby and
takes the first slot that frees, instead of exiting — a supervisor's restart limits then
never leave it dead. ``--no-wait`` exits at once instead (status 1).

SIGUSR1 prints what every thread of the process is doing (its stack) to stderr, without
stopping it: what an operator looks at when a dispatcher seems stuck.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
import threading

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from apps.core.stopping import set_from_signal_handler
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine.loop import Dispatcher

logger = logging.getLogger("edm.dispatch")

# A standby tries for a free slot this often (seconds).
STANDBY_POLL_SECONDS = 2.0


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
        parser.add_argument(
            "--no-wait",
            action="store_true",
            help="exit at once when every dispatcher slot is taken (default: wait for one)",
        )

    def handle(self, *args, seconds, once, no_wait, **options):
        if seconds is not None and seconds <= 0:
            raise CommandError("--seconds must be positive")
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: set_from_signal_handler(stop))
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
        dispatcher = Dispatcher(stop=stop, seconds=seconds, once=once)
        if not self._wait_for_slot(dispatcher, stop, no_wait=no_wait):
            self.stdout.write("dispatcher stopped while waiting for a slot")
            return
        self.stdout.write(f"dispatcher running in slot {dispatcher.slot[0]}", ending="\n")
        self.stdout.flush()
        stats = dispatcher.run()
        self.stdout.write(
            f"dispatcher stopped: {stats.ticks} ticks, {stats.claimed} claimed, {stats.sent} sent"
        )

    def _wait_for_slot(self, dispatcher: Dispatcher, stop: threading.Event, *, no_wait: bool):
        """Take a slot, waiting as a standby while all are held; False when stopped first."""
        announced = False
        while not stop.is_set():
            try:
                if dispatcher.acquire_slot():
                    return True
            except DatabaseError as exc:
                # The database is away (a restart, a failover): keep standing by.
                logger.warning("standby dispatcher cannot reach the database: %s", exc)
                connection.close()
            else:
                if no_wait:
                    raise CommandError(
                        f"no free dispatcher slot: queue.dispatchers="
                        f"{dispatcher.conf.dispatchers} loops are already running"
                    )
                if not announced:
                    self.stdout.write(
                        f"every dispatcher slot is taken (queue.dispatchers="
                        f"{dispatcher.conf.dispatchers}); waiting as a standby"
                    )
                    self.stdout.flush()
                    announced = True
            if stop.wait(STANDBY_POLL_SECONDS):
                break
            # queue.dispatchers may have been raised meanwhile.
            dispatcher.conf = DispatchSettings.load()
        return False
