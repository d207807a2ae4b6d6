#!/usr/bin/env python
"""The events relay: webhook publishing rate and projection lag (docs/events.md).

1. **Relay → receiver.** ``--events`` events (default 20,000) of ``--owners`` owners (8),
   each owner with one webhook endpoint, are appended set-based; then one relay loop
   (``apps.events.loop.RelayLoop``: publish, deliver on its delivery threads, project)
   runs until every delivery is delivered to a real HTTP server in its own process
   (HTTP/1.1 keep-alive, answers 200, checks every 100th signature with
   ``standardwebhooks``). Figure: events/s from the first publish to the last delivery.
   The same for one endpoint alone (its events in order, one connection).
2. **Projection consume rate**: ``subtask.sent`` events counted per second by
   ``projection_run`` rounds (both projections).
3. **Projection lag at dispatch's rate**: a writer appends ``subtask.sent`` events in
   chunks of 100 (as a dispatch chunk's outcome statement does) at ``--rate`` events/s
   (1,500) for ``--seconds`` (20) while a relay loop runs; the projections' lag
   (``projection_lag_seconds``) is sampled every 0.25 s: max and p95.

    DEBUG=1 .venv/bin/python scripts/devdb.py -- .venv/bin/python bench/bench_events.py
    ... --smoke     # 2,000 events, 5 s of writing
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import percentile, report, setup_django  # noqa: E402


def _handler(count, secrets: dict[str, str]):
    from standardwebhooks import Webhook

    verifiers = {path: Webhook(secret) for path, secret in secrets.items()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as production servers do: no 40 ms stalls

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with count.get_lock():
                count.value += 1
                n = count.value
            if n % 100 == 0:
                verifiers[self.path].verify(body, dict(self.headers.items()))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    return Handler


def _serve(listener: socket.socket, count, secrets: dict[str, str]) -> None:
    server = ThreadingHTTPServer(
        listener.getsockname(), _handler(count, secrets), bind_and_activate=False
    )
    server.socket.close()
    server.socket = listener
    server.daemon_threads = True
    server.serve_forever()


class Receiver:
    """A real HTTP server of its own (``processes`` forked processes accepting on one
    listening socket), counting what it received."""

    def __init__(self, secrets: dict[str, str], *, processes: int = 2) -> None:
        ctx = multiprocessing.get_context("fork")
        # Read by the relay processes too (spawned): a value of the spawn context.
        self.count = multiprocessing.get_context("spawn").Value("l", 0)
        listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.processes = [
            ctx.Process(target=_serve, args=(listener, self.count, secrets), daemon=True)
            for _ in range(processes)
        ]
        for process in self.processes:
            process.start()
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        listener.close()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(5)


def _relay_process(seconds: float, count, target: int, ready, go) -> None:
    """One relay loop in a process of its own, until the receiver has ``target``."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "edm.settings")
    import django

    django.setup()  # the schema is the parent's, already migrated
    from apps.events.loop import RelayLoop

    loop = RelayLoop(seconds=seconds)
    if not loop.acquire():
        raise SystemExit("no free relay slot")
    with ready.get_lock():
        ready.value += 1
    go.wait()

    def watch() -> None:
        while count.value < target:
            time.sleep(0.005)
        loop.stop.set()

    threading.Thread(target=watch, daemon=True).start()
    loop.run()


def _reset() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE events_event, events_webhookdelivery, events_webhookattempt, "
            "events_webhookendpoint, events_processedevent, events_ownerdailycount, "
            "events_taskdailycount, events_relaylease CASCADE"
        )
    from apps.events.models import Projection

    Projection.objects.all().delete()


def _owners(n: int):
    from django.contrib.auth import get_user_model

    User = get_user_model()
    return [User.objects.get_or_create(username=f"bench-events-{i}")[0] for i in range(n)]


def _append(owners, total: int, event_type: str = "task.completed") -> None:
    from django.db import connection, transaction

    from apps.events.services import events_append_sql

    ids = [o.pk for o in owners]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            events_append_sql(
                "SELECT %s, (%s::bigint[])[1 + n %% %s], NULL, 'dispatch.task', n::text, "
                "jsonb_build_object('task_id', n, 'name', 'bench task ' || n) "
                "FROM generate_series(1, %s) AS n"
            ),
            [event_type, ids, len(ids), total],
        )


def relay_rate(events: int, owner_count: int, relays: int) -> dict:
    from django.db import connection, connections

    from apps.config.services import config_set
    from apps.events.models import WebhookDelivery, WebhookEndpoint
    from apps.events.webhooks import webhook_create

    _reset()
    config_set(key="events.relays", value=relays, reason="bench")
    owners = _owners(owner_count)
    endpoints = [
        webhook_create(
            owner=owner, actor=owner, url=f"http://127.0.0.1:1/e{i}", event_types=["task.*"]
        )
        for i, owner in enumerate(owners)
    ]
    with connection.cursor() as cursor:  # the endpoints' own webhook.changed events
        cursor.execute("UPDATE events_event SET published_at = now()")
    _append(owners, events)
    connections.close_all()  # nothing open across the receiver's fork
    receiver = Receiver({f"/e{i}": secret for i, (_, secret) in enumerate(endpoints)})
    try:
        for i, (endpoint, _) in enumerate(endpoints):
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(url=f"{receiver.url}/e{i}")
        connections.close_all()
        ctx = multiprocessing.get_context("spawn")
        ready, go = ctx.Value("i", 0), ctx.Event()
        loops = [
            ctx.Process(target=_relay_process, args=(600.0, receiver.count, events, ready, go))
            for _ in range(relays)
        ]
        for loop in loops:
            loop.start()
        while ready.value < relays and any(p.is_alive() for p in loops):
            time.sleep(0.01)
        started = time.perf_counter()
        go.set()
        while receiver.count.value < events and any(p.is_alive() for p in loops):
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        for loop in loops:
            loop.join(30)
            if loop.is_alive():  # never left running into the next part
                loop.terminate()
                loop.join(5)
        received = receiver.count.value
        delivered = WebhookDelivery.objects.filter(status="delivered").count()
    finally:
        receiver.stop()
    return {
        "events": events,
        "endpoints": owner_count,
        "relay_loops": relays,
        "received": received,
        "delivered_rows": delivered,
        "seconds": round(elapsed, 2),
        "events_per_second": round(received / elapsed),
    }


def consume_rate(events: int) -> dict:
    from apps.events import projections

    _reset()
    owners = _owners(8)
    _append(owners, events, "subtask.sent")
    started = time.perf_counter()
    counted = 0
    for name in projections.PROJECTIONS:
        counted += projections.projection_catch_up(name=name)
    elapsed = time.perf_counter() - started
    return {
        "events": events,
        "counted": counted,
        "seconds": round(elapsed, 2),
        "events_per_second_per_projection": round(events * len(projections.PROJECTIONS) / elapsed),
    }


def lag_at_rate(rate: float, seconds: float) -> dict:
    from django.db import connections

    from apps.events import projections
    from apps.events.loop import RelayLoop
    from apps.events.models import OwnerDailyCount

    _reset()
    projections.projections_ensure()
    owners = _owners(8)
    chunk = 100
    written = 0
    stop = threading.Event()

    def writer() -> None:
        nonlocal written
        try:
            interval = chunk / rate
            next_at = time.perf_counter()
            end = next_at + seconds
            while time.perf_counter() < end:
                _append(owners, chunk, "subtask.sent")
                written += chunk
                next_at += interval
                time.sleep(max(0.0, next_at - time.perf_counter()))
        finally:
            stop.set()
            connections.close_all()

    lags: list[float] = []

    loop = RelayLoop(seconds=seconds + 30)
    assert loop.acquire()
    threads = [
        threading.Thread(target=writer),
        threading.Thread(target=_sample_lag, args=(stop, lags)),
    ]
    for thread in threads:
        thread.start()
    runner = threading.Thread(target=loop.run)
    runner.start()
    threads[0].join()
    caught_up_started = time.perf_counter()
    while sum(OwnerDailyCount.objects.values_list("sent", flat=True)) < written:
        if time.perf_counter() - caught_up_started > 30:
            break
        time.sleep(0.05)
    caught_up = time.perf_counter() - caught_up_started
    loop.stop.set()
    runner.join()
    threads[1].join()
    counted = sum(OwnerDailyCount.objects.values_list("sent", flat=True))
    return {
        "rate_target": rate,
        "written": written,
        "written_per_second": round(written / seconds),
        "counted": counted,
        "lag_max_seconds": round(max(lags), 2) if lags else None,
        "lag_p95_seconds": round(percentile(lags, 95), 2) if lags else None,
        "caught_up_after_writer_seconds": round(caught_up, 2),
    }


def _sample_lag(stop: threading.Event, lags: list[float]) -> None:
    """Append the largest projection lag every 0.25 s to ``lags`` until ``stop``."""
    from django.db import connections

    from apps.events import projections
    from apps.events.models import Projection

    try:
        while not stop.is_set():
            lags.append(
                max(projections.projection_lag_seconds(p) for p in Projection.objects.all())
            )
            time.sleep(0.25)
    finally:
        connections.close_all()


def lag_under_dispatch(n: int) -> dict:
    """The dispatcher at full speed (bench_dispatch's throughput workload: 200 services,
    one counting sink, 2 ``manage.py dispatch`` processes, events on) while a relay loop
    advances the projections: their lag sampled every 0.25 s."""
    from types import SimpleNamespace

    import bench_dispatch as bd
    from sink import start_sink_process

    from apps.dispatch import services
    from apps.events import projections
    from apps.events.loop import RelayLoop
    from apps.events.models import OwnerDailyCount

    _reset()
    projections.projections_ensure()
    args = SimpleNamespace(
        smoke=False, n=n, runs=1, seed=1, dispatchers=2, concurrency=4, batch_size=800
    )
    n, _, _, owner, tag_id = bd.throughput_workload(args, owner_name="bench-events")
    lags: list[float] = []
    stop = threading.Event()

    def sent_counted() -> int:
        return sum(OwnerDailyCount.objects.filter(owner=owner).values_list("sent", flat=True))

    with start_sink_process() as sink:
        pool = bd.make_pool("bench-events-200", 200, port=sink.port)
        sink.reset()
        processes = bd.spawn_dispatchers(2, events=True)
        loop = RelayLoop(seconds=3600)
        assert loop.acquire()
        runner = threading.Thread(target=loop.run)
        watcher = threading.Thread(target=_sample_lag, args=(stop, lags))
        try:
            task = bd.bench_task(owner, "bench-events", tag_id=tag_id, pool=pool)
            runner.start()
            watcher.start()
            queued = time.time()
            services.task_queue(task=task)
            stats = sink.wait_for(n, timeout=1800)
            sent_at = stats["last_at"]
            deadline = time.time() + 60
            while sent_counted() < n and time.time() < deadline:
                time.sleep(0.05)
            counted_at = time.time()
        finally:
            stop.set()
            loop.stop.set()
            bd.stop_dispatchers(processes)
            if runner.is_alive():
                runner.join()
            if watcher.is_alive():
                watcher.join()
    counted = sent_counted()
    bd.drop_task(task)
    return {
        "recipients": n,
        "msgs_per_s": round(n / (sent_at - queued)),
        "sent_counted": counted,
        "lag_max_seconds": round(max(lags), 2) if lags else None,
        "lag_p95_seconds": round(percentile(lags, 95), 2) if lags else None,
        "counted_after_last_send_seconds": round(counted_at - sent_at, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--owners", type=int, default=8)
    parser.add_argument("--relays", type=int, default=2, help="relay loops (processes)")
    parser.add_argument("--rate", type=float, default=1500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--dispatch", type=int, default=50000, help="recipients (0: skip)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.seconds, args.dispatch = 2000, 5, 2000
    os.environ.setdefault("EDM_WEBHOOKS_ALLOW_PRIVATE", "1")
    setup_django()
    load = open("/proc/loadavg").read().split()[:3]
    figures = {"load_before": " ".join(load)}
    figures["relay"] = relay_rate(args.events, args.owners, args.relays)
    figures["relay_one_loop"] = relay_rate(args.events, args.owners, 1)
    figures["relay_one_endpoint"] = relay_rate(max(1000, args.events // 4), 1, 1)
    figures["projection_consume"] = consume_rate(args.events * 2)
    figures["projection_lag"] = lag_at_rate(args.rate, args.seconds)
    if args.dispatch:
        figures["projection_lag_under_dispatch"] = lag_under_dispatch(args.dispatch)
    figures["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
    report("events", figures)
    _reset()


if __name__ == "__main__":
    main()
