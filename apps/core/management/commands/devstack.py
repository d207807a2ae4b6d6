"""``manage.py devstack``: everything ``make run`` starts, supervised in one foreground process.

1. ``migrate``, ``setup_schedules`` and ``seed_demo`` (idempotent: a second run reuses data);
2. then three children: the local SMTP sink (``smtp_sink``) first — the demo services
   send to it, and a send that finds no server would cool the service down — then the
   django-q2 cluster (``qcluster``, which starts its dispatcher loops at once) and the web
   server (``runserver`` on 127.0.0.1:8000, no autoreload);
3. "EDM is up" is printed once the sink accepts connections and the web server answers
   ``/api/health`` (so the demo task's first mail is measured from a moment that means
   something: it arrives within seconds);
4. Ctrl-C (or SIGTERM) stops all three; if one of them dies, the others are stopped too
   and the exit code is non-zero.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

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
        children = {"smtp sink": subprocess.Popen([*manage, "smtp_sink"])}
        sink = (settings.EDM_SINK_HOST, settings.EDM_SINK_PORT)
        _wait(lambda: _accepts(sink), children, what="the mail sink", stderr=self.stderr)
        children["q2 cluster"] = subprocess.Popen([*manage, "qcluster"])
        children["web"] = subprocess.Popen([*manage, "runserver", addr, "--noreload"])
        health = f"http://{addr}/api/health"
        _wait(lambda: _answers(health), children, what="the web server", stderr=self.stderr)
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


def _accepts(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _wait(ready: Callable[[], bool], children: dict, *, what: str, stderr, timeout=60) -> None:
    """Until ``ready()``, a child exits (the supervising loop then stops everything), or
    ``timeout`` seconds (then start anyway: a slow machine is no reason to give up)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if any(child.poll() is not None for child in children.values()):
            return
        if time.monotonic() > deadline:
            stderr.write(f"{what} is not answering after {timeout} s; going on")
            return
        time.sleep(0.1)
