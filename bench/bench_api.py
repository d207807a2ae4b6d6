#!/usr/bin/env python
"""The API under load (BENCHMARKS.md, "API"): gunicorn on loopback, ``wrk`` on the same
machine, idle and while a dispatcher sends.

For the stack's ceiling — ``/api/bench/constant``, a bare Django view with a constant
JSON body behind the same middleware (mounted by ``EDM_BENCH_ENDPOINTS=1``) — then
``GET /api/health`` and an authenticated ``GET /api/tasks/<id>/`` (the detail, with its
progress, of the task: 100,000 recipients; ``--smoke`` 5,000), one after another in the
same run: requests/s, latency p50 / p99, errors (non-2xx answers and socket errors) and
each endpoint's share of the ceiling; first idle (the task not yet queued), then while
the dispatcher sends it, with the messages it sent meanwhile. gunicorn runs as in production (``DEBUG`` off, sync workers,
``2 × cores + 1`` of them as its documentation suggests); one ``manage.py dispatch``
sends through 20 services to a counting sink in its own process.

    DEBUG=1 .venv/bin/python scripts/devdb.py -- .venv/bin/python bench/bench_api.py

Needs ``wrk`` (``make system-tools`` installs Debian's where it runs as root); without it
the script says so and exits with ``_common.SKIPPED``.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import ROOT, SKIPPED, report, setup_django  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(port: int, workers: int, **extra_env: str) -> subprocess.Popen:
    """gunicorn with production settings against the benchmark's database (``extra_env``
    added to its environment)."""
    from cryptography.fernet import Fernet
    from django.conf import settings as django_settings

    from apps.core.database import database_url

    url = database_url()
    env = dict(
        os.environ,
        DATABASE_URL=url,
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(48),
        EDM_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
        **extra_env,
    )
    # whitenoise warns on every worker start without the directory (no file is served here)
    Path(django_settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "edm.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("gunicorn did not answer /api/health within 60 s")


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, *, seconds: int, connections: int, header: str | None = None) -> dict:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if header:
        command[1:1] = ["-H", header]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latency = {pct: float(value) * _UNIT_MS[unit] for pct, value, unit in _LATENCY.findall(out)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "requests": requests,
        "requests_per_s": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))),
        "p50_ms": round(latency["50"], 2),
        "p99_ms": round(latency["99"], 2),
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    }


def _round(base: str, task_id: int, token: str, *, seconds: int, connections: int) -> dict:
    """The three endpoints one after another: the bare view (the ceiling), the health
    probe and the authenticated task detail, with their ratios to the ceiling."""
    ceiling = run_wrk(f"{base}/api/bench/constant", seconds=seconds, connections=connections)
    health = run_wrk(f"{base}/api/health", seconds=seconds, connections=connections)
    detail = run_wrk(
        f"{base}/api/tasks/{task_id}/",
        seconds=seconds,
        connections=connections,
        header=f"Authorization: Token {token}",
    )
    figures: dict = {}
    for name, run in (("constant", ceiling), ("health", health), ("task_detail", detail)):
        figures.update({f"{name}_{key}": value for key, value in run.items()})
    figures["health_of_ceiling"] = round(health["requests_per_s"] / ceiling["requests_per_s"], 2)
    figures["task_detail_of_ceiling"] = round(
        detail["requests_per_s"] / ceiling["requests_per_s"], 2
    )
    figures["errors"] = ceiling["errors"] + health["errors"] + detail["errors"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="5,000 recipients, 3 s per run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench_api: wrk is not installed (make system-tools, or apt-get install wrk)")
        return SKIPPED
    setup_django()

    from bench_dispatch import (
        bench_task,
        bench_user,
        drop_task,
        load_contacts,
        make_pool,
        spawn_dispatchers,
        stop_dispatchers,
    )
    from rest_framework.authtoken.models import Token
    from sink import start_sink_process

    from apps.dispatch import services
    from apps.dispatch.models import Task

    n = 5_000 if args.smoke else 100_000
    seconds = 3 if args.smoke else 15
    workers = 2 * (os.cpu_count() or 1) + 1
    owner = bench_user("bench-api")
    token = Token.objects.get_or_create(user=owner)[0].key
    tag_id = load_contacts(
        owner,
        [(f"api{i}@api.example", f"Api{i}", "Oslo") for i in range(n)],
        tag_name="api",
    )
    figures: dict = {
        "recipients": n,
        "gunicorn_workers": workers,
        "wrk": args.connections,
        "seconds_per_run": seconds,
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with start_sink_process() as sink:
        pool = make_pool("bench-api", 20, port=sink.port)
        task = bench_task(owner, "api", tag_id=tag_id, pool=pool)
        gunicorn = start_gunicorn(port, workers, EDM_BENCH_ENDPOINTS="1")
        dispatchers = []
        try:
            figures["load_before"] = os.getloadavg()[0]
            idle = _round(base, task.pk, token, seconds=seconds, connections=args.connections)
            services.task_queue(task=task)
            dispatchers = spawn_dispatchers(1)
            time.sleep(2)  # sending is under way
            sent_before = sink.stats()["deliveries"]
            started = time.monotonic()
            sending = _round(base, task.pk, token, seconds=seconds, connections=args.connections)
            elapsed = time.monotonic() - started
            sent = sink.stats()["deliveries"] - sent_before
            figures["load_after"] = os.getloadavg()[0]
        finally:
            if dispatchers:
                stop_dispatchers(dispatchers)
            gunicorn.terminate()
            gunicorn.wait(timeout=30)
        figures.update({f"idle_{key}": value for key, value in idle.items()})
        figures.update({f"sending_{key}": value for key, value in sending.items()})
        figures["dispatcher_msgs_per_s_meanwhile"] = round(sent / elapsed)
        figures["task_still_sending_at_the_end"] = Task.objects.get(pk=task.pk).status == "sending"
        if not Task.objects.get(pk=task.pk).is_finished:
            services.task_cancel(task=task)
    drop_task(task)
    report("api_smoke" if args.smoke else "api", figures)
    return 0 if idle["errors"] == sending["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
