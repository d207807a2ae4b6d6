#!/usr/bin/env python
"""The API under load (BENCHMARKS.md, "API"): gunicorn on loopback, ``wrk`` on the same
machine, idle and while a dispatcher sends.

For the stack's ceiling — ``/api/bench/constant``, a bare Django view with a constant
JSON body behind the same middleware (mounted by ``EDM_BENCH_ENDPOINTS=1``) — then
``GET /api/health`` and an authenticated ``GET /api/tasks/<id>/`` (the detail, with its
progress, of the task: 100,000 recipients; ``--smoke`` 5,000), one after another in the
same run: requests/s, latency p50 / p99, errors (non-2xx answers and socket errors),
the CPU milliseconds per request of gunicorn's processes and of PostgreSQL (less
sensitive than requests/s to what else runs on a shared machine) and each endpoint's
share of the ceiling; first idle (the task not yet queued), then while
the dispatcher sends it, with the messages it sent meanwhile. gunicorn runs as in production (``DEBUG`` off, sync workers,
``2 × cores + 1`` of them as its documentation suggests); one ``manage.py dispatch``
sends through 20 services to a counting sink in its own process. wrk is one user at one
address, far beyond the production throttle rates: they are raised out of its reach
(``BENCH_THROTTLES``), the throttles still count every request.

    DEBUG=1 .venv/bin/python scripts/devdb.py -- .venv/bin/python bench/bench_api.py

Needs ``wrk`` (``make system-tools`` installs Debian's where it runs as root); without it
the script says so and exits with ``_common.SKIPPED``.
"""

from __future__ import annotations

import argparse
import os
import re
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

from _common import ROOT, SKIPPED, production_env, report, setup_django  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(
    port: int, workers: int, *, root: Path = ROOT, **extra_env: str
) -> subprocess.Popen:
    """gunicorn with production settings against the benchmark's database (``extra_env``
    added to its environment), serving the source tree ``root`` (this one)."""
    from django.conf import settings as django_settings

    from apps.core.database import database_url

    env = production_env(DATABASE_URL=database_url(), LOG_LEVEL="WARNING", **extra_env)
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
        cwd=root,
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


# wrk is one user at one address asking hundreds of times a second, beyond the
# production rates (100/s per user, 200/s per address, per web process): at those rates
# the benchmark would measure the 429s. The throttles still count every request (their
# cost is in the figures); they are set where wrk cannot reach them.
BENCH_THROTTLES = {"EDM_THROTTLE_USER": "1000000/s", "EDM_THROTTLE_ADDRESS": "1000000/s"}


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


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds so far of a process and its live children (gunicorn's workers)."""
    from baselines import _proc_stat

    ticks = os.sysconf("SC_CLK_TCK")
    total = sum(int(v) for v in _proc_stat(pid)[11:13])
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = _proc_stat(int(entry.name))
            except (OSError, ValueError):
                continue  # gone meanwhile
            if int(fields[1]) == pid:
                total += int(fields[11]) + int(fields[12])
    return total / ticks


def run_measured(url: str, *, server: int, header: str | None = None, **wrk) -> dict:
    """``run_wrk``, with the CPU milliseconds per request the web processes and the
    database server spent meanwhile (less sensitive than requests/s to what else
    runs on the machine; the database's includes a dispatcher's work while it sends)."""
    from baselines import postgres_cpu_seconds

    web, database = process_tree_cpu_seconds(server), postgres_cpu_seconds()
    run = run_wrk(url, header=header, **wrk)
    web = process_tree_cpu_seconds(server) - web
    requests = max(run["requests"], 1)
    run["web_cpu_ms_per_request"] = round(web * 1000 / requests, 3)
    if database is not None:
        database = postgres_cpu_seconds() - database
        run["db_cpu_ms_per_request"] = round(database * 1000 / requests, 3)
    return run


def _round(
    base: str, task_id: int, token: str, *, server: int, seconds: int, connections: int
) -> dict:
    """The three endpoints one after another: the bare view (the ceiling), the health
    probe and the authenticated task detail, with their ratios to the ceiling."""
    wrk = {"server": server, "seconds": seconds, "connections": connections}
    ceiling = run_measured(f"{base}/api/bench/constant", **wrk)
    health = run_measured(f"{base}/api/health", **wrk)
    detail = run_measured(
        f"{base}/api/tasks/{task_id}/", header=f"Authorization: Token {token}", **wrk
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
        gunicorn = start_gunicorn(port, workers, EDM_BENCH_ENDPOINTS="1", **BENCH_THROTTLES)
        dispatchers = []
        try:
            figures["load_before"] = os.getloadavg()[0]
            rounds = {"server": gunicorn.pid, "seconds": seconds, "connections": args.connections}
            idle = _round(base, task.pk, token, **rounds)
            services.task_queue(task=task)
            dispatchers = spawn_dispatchers(1)
            time.sleep(2)  # sending is under way
            sent_before = sink.stats()["deliveries"]
            started = time.monotonic()
            sending = _round(base, task.pk, token, **rounds)
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
