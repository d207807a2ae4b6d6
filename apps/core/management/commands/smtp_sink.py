"""``manage.py smtp_sink``: a local SMTP server that accepts and stores every message."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.core.smtp_sink import SinkHandler, start_sink
from apps.core.stopping import set_from_signal_handler


class Command(BaseCommand):
    help = "Run a local SMTP sink; each received message is saved as an .eml file and logged."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.EDM_SINK_HOST)
        parser.add_argument("--port", type=int, default=settings.EDM_SINK_PORT)
        parser.add_argument("--dir", default=str(settings.EDM_SINK_DIR))

    def handle(self, *args, host, port, dir, **options):
        directory = Path(dir)
        handler = SinkHandler(directory=directory, keep=False)
        controller = start_sink(handler, host=host, port=port)
        self.stdout.write(f"SMTP sink listening on {host}:{port}; messages go to {directory}")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: set_from_signal_handler(stop))
        signal.signal(signal.SIGINT, lambda *_: set_from_signal_handler(stop))
        stop.wait()
        controller.stop()
        self.stdout.write(f"SMTP sink stopped after {handler.count} message(s)")
