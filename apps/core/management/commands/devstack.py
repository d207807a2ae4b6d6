"""``manage.py devstack``: everything ``make run`` starts, supervised in one foreground process.

1. ``migrate``, ``setup_schedules`` and ``seed_demo`` (idempotent: a second run reuses data);
2. then three children: the web server (``runserver`` on 127.0.0.1:8000, no autoreload),
   the django-q2 cluster (``qcluster``) and the local SMTP sink (``smtp_sink``);
3. Ctrl-C (or SIGTERM) stops all three; if one of them dies, the others are stopped too
   and the exit code is non-zero.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Migrate, seed the demo, then run web + django-q2 cluster + SMTP sink until Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--no-seed", action="store_true")

    def handle(self, *args, addr, no_seed, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("setup_schedules", verbosity=0)
        if not no_seed:
            call_command("seed_demo", stdout=self.stdout)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        children = {
            "smtp sink": subprocess.Popen([*manage, "smtp_sink"]),
            "q2 cluster": subprocess.Popen([*manage, "qcluster"]),
            "web": subprocess.Popen([*manage, "runserver", addr, "--noreload"]),
        }
        self.stdout.write(
            self.style.SUCCESS(
                f"EDM is up: admin http://{addr}/admin/ · API http://{addr}/api/docs/ · "
                f"health http://{addr}/api/health · mail sink {settings.EDM_SINK_HOST}:"
                f"{settings.EDM_SINK_PORT} → {settings.EDM_SINK_DIR} · Ctrl-C stops everything"
            )
        )
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"{name} exited with {child.returncode}; stopping")
                    exit_code = child.returncode or 1
                    stopping = True
            time.sleep(0.2)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.stdout.write("EDM stopped.")
        if exit_code:
            sys.exit(exit_code)
