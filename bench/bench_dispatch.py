#!/usr/bin/env python
"""Dispatch benchmarks (BENCHMARKS.md, "Dispatch throughput" and "Fairness and latency").

Parts (all by default; ``--part NAME`` to run some):

``throughput``
    N recipients (100,000; ``--smoke`` 2,000), 200 services in one pool with no rate limit
    and no quota, one counting sink in its own process (``bench/sink.py``). Side by side
    in the same run: baseline A (pre-built messages over reused smtplib connections), EDM
    (``manage.py dispatch`` processes, started idle, woken by the task's NOTIFY) and
    baseline B (django-post-office). Every run is verified in the sink: each recipient
    exactly one message.
``tick``
    1,000 services x 10,000 owners with pending work (``--smoke``: 100 x 500): the cost of
    one tick's reserve + fair pick (200 slots), rolled back after each sample; then the
    first round committed, to check that every owner gets a send within one round.
``materialize``
    Queueing a task for 1,000,000 contacts (``--smoke``: 20,000): INSERT … SELECT time.
``deliverability``
    The send-time cost of deliverability: the throughput workload run alternately with
    everything off (``bench/dispatch_plain.py``: no List-Unsubscribe headers, footer,
    tracking or DKIM), with the headers and footer only (tracking off), and with all of
    it on (headers, click/open tracking, DKIM rsa-sha256 2048-bit signing), in one run.
``events``
    What the dispatcher's high-volume events cost: the throughput workload run with
    ``EDM_EVENTS_ENABLED`` on (one ``subtask.sent`` per message, appended by the chunk's
    outcome statement) and off, alternating (on/off, then off/on, …) in one run, every
    run verified in the sink and, when on, one ``subtask.sent`` per recipient in the
    outbox. Reported: msg/s of each run, the medians, on ÷ off and the spread of the
    ratios of adjacent pairs, and the CPU (dispatchers + PostgreSQL) per message.
``rss``
    A dispatcher sending from that 1,000,000-recipient task for a while: its peak RSS,
    user B's 10-recipient task queued meanwhile (first send, completion), and the
    database time (claim + record round trips) per message sent.
``latency``
    Real-world latency (BENCHMARKS.md, "Dispatch at real-world latency"): a sink in its
    own process answering MAIL, RCPT and the end of DATA each after L ms, EDM at its
    default configuration (``queue.*`` keys reset; ``manage.py dispatch`` processes, as
    many as ``queue.dispatchers``) and, in the same run, baseline A with as many
    connections as there are services. Cases (``--latency-case``): ``200ms-1000``
    (1,000 services), ``50ms-200`` (200 services), ``50ms-1000-rate1`` (1,000 services
    at ``sending_rate`` 1: msg/s and the smallest gap between two receive times of a
    service). Reported: msg/s, EDM ÷ A, PostgreSQL connections per dispatcher (most
    seen in ``pg_stat_activity``), threads and peak RSS per dispatcher, dispatcher and
    PostgreSQL CPU per message, deliveries per second of the run. It raises its
    open-file limit to the hard limit first and says so.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import ROOT, percentile, production_env, report, setup_django  # noqa: E402


def bench_task(owner, name: str, *, tag_id: int, pool):
    """A draft task of the benchmark's personalized message to the members of one tag."""
    from baselines import HTML_TEMPLATE, SUBJECT_TEMPLATE, TEXT_TEMPLATE

    from apps.dispatch import services

    return services.task_create(
        owner=owner,
        name=name,
        subject=SUBJECT_TEMPLATE,
        body_text=TEXT_TEMPLATE,
        body_html=HTML_TEMPLATE,
        include_tags=[tag_id],
        pool=pool,
    )


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_main_thread_cpu(pid: int) -> float:
    """CPU seconds of a process's main thread (a dispatcher's ticks; the rest of its CPU
    is its sender threads')."""
    return proc_cpu_path(Path(f"/proc/{pid}/task/{pid}/stat"))


def proc_cpu_path(path: Path) -> float:
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def set_config(**values) -> None:
    from apps.config.models import SystemConfig
    from apps.config.registry import KEYS

    for name, value in values.items():
        key = name.replace("__", ".")
        SystemConfig.objects.update_or_create(
            key=key, defaults={"value": value, "category": KEYS[key].category}
        )


def bench_user(name: str):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get_or_create(username=name)[0]


def load_contacts(owner, rows, *, tag_name: str) -> int:
    """COPY contacts (email, first_name, city) in and tag them all; returns the tag id."""
    import json

    from django.db import connection

    from apps.contacts.models import Tag

    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM contacts_contacttag WHERE contact_id IN "
            "(SELECT id FROM contacts_contact WHERE owner_id = %s)",
            [owner.pk],
        )
        cursor.execute("DELETE FROM contacts_contact WHERE owner_id = %s", [owner.pk])
        with cursor.cursor.copy(
            "COPY contacts_contact (owner_id, email, first_name, last_name, attributes, "
            "status, source, created_at, updated_at) FROM STDIN"
        ) as copy:
            for email, first_name, city in rows:
                copy.write_row(
                    (
                        owner.pk,
                        email,
                        first_name,
                        "",
                        json.dumps({"city": city}),
                        "active",
                        "bench",
                        "now",
                        "now",
                    )
                )
        tag, _ = Tag.objects.get_or_create(owner=owner, name=tag_name)
        cursor.execute(
            "INSERT INTO contacts_contacttag (tag_id, contact_id, created_at) "
            "SELECT %s, id, now() FROM contacts_contact WHERE owner_id = %s",
            [tag.pk, owner.pk],
        )
        cursor.execute("ANALYZE contacts_contact; ANALYZE contacts_contacttag")
    return tag.pk


def make_pool(
    name: str, count: int, *, port: int, sending_rate: float = 0.0, own_senders: bool = False
):
    """``count`` SMTP services on 127.0.0.1:``port`` in pool ``name`` (made anew); with
    ``own_senders`` each has an envelope sender of its own (``s<i>-<address>``), so the
    sink's receive times per sender are per service."""
    from baselines import FROM_EMAIL, FROM_NAME

    from apps.services.models import EmailService, Pool

    pool, _ = Pool.objects.get_or_create(name=name)
    EmailService.objects.filter(pool=pool).delete()
    EmailService.objects.bulk_create(
        EmailService(
            pool=pool,
            name=f"{name}-{i:04d}",
            kind="smtp",
            host="127.0.0.1",
            port=port,
            from_email=f"s{i}-{FROM_EMAIL}" if own_senders else FROM_EMAIL,
            from_name=FROM_NAME,
            sending_rate=sending_rate,
            daily_quota=0,
        )
        for i in range(count)
    )
    return pool


def drop_task(task) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dispatch_taskqueue WHERE task_id = %s", [task.pk])
        cursor.execute("DELETE FROM dispatch_deadletter WHERE task_id = %s", [task.pk])
        cursor.execute("DELETE FROM dispatch_subtask WHERE task_id = %s", [task.pk])
        cursor.execute("DELETE FROM monitoring_taskwaitmetric WHERE task_id = %s", [task.pk])
        cursor.execute("DELETE FROM dispatch_task_include_tags WHERE task_id = %s", [task.pk])
        cursor.execute("DELETE FROM dispatch_task WHERE id = %s", [task.pk])
        cursor.execute("VACUUM ANALYZE dispatch_subtask")


def spawn_dispatchers(
    count: int, *, plain: bool = False, events: bool = True
) -> list[subprocess.Popen]:
    """``manage.py dispatch`` processes (``plain``: ``dispatch_plain.py``) with production
    settings (``_common.production_env``: ``DEBUG`` off, as deployed); each one's
    PostgreSQL connections carry the application name ``edm-dispatch-<i>``
    (``PGAPPNAME``), so they can be counted."""
    from apps.core.database import database_url

    command = [str(HERE / "dispatch_plain.py")] if plain else [str(ROOT / "manage.py"), "dispatch"]
    processes = [
        subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=production_env(
                DATABASE_URL=database_url(),
                LOG_LEVEL="WARNING",
                PGAPPNAME=f"edm-dispatch-{number}",
                EDM_EVENTS_ENABLED="1" if events else "0",
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        for number in range(count)
    ]
    for process in processes:  # each prints one line once its loop is running
        process.stdout.readline()
    return processes


def stop_dispatchers(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=60)


# -- throughput -------------------------------------------------------------------------


def run_edm(
    recipients,
    *,
    sink,
    owner,
    tag_id,
    pool,
    dispatchers: int,
    plain: bool = False,
    tracking: bool = True,
    events: bool = True,
) -> dict:
    from baselines import postgres_cpu_seconds

    from apps.dispatch import services
    from apps.dispatch.models import Task

    sink.reset()
    processes = spawn_dispatchers(dispatchers, plain=plain, events=events)
    try:
        cpu_before = [proc_cpu(p.pid) for p in processes]
        main_before = [proc_main_thread_cpu(p.pid) for p in processes]
        pg_before = postgres_cpu_seconds()
        sink_before = sink.stats()
        task = bench_task(owner, "bench", tag_id=tag_id, pool=pool)
        if not tracking:
            Task.objects.filter(pk=task.pk).update(tracking=False)
        started = time.time()
        services.task_queue(task=task)
        queued = time.time()
        stats = sink.wait_for(len(recipients), timeout=3600)
        pg_after = postgres_cpu_seconds()
        cpu_after = [proc_cpu(p.pid) for p in processes]
        main_after = [proc_main_thread_cpu(p.pid) for p in processes]
        rss = max(proc_hwm_mb(p.pid) for p in processes)
    finally:
        stop_dispatchers(processes)
    check = sink.verify(r.email for r in recipients)
    if not check["ok"]:
        raise AssertionError(f"EDM: not exactly one message per recipient: {check}")
    seconds = stats["last_at"] - queued
    figures = {
        "messages": stats["deliveries"],
        "materialize_seconds": round(queued - started, 2),
        "seconds": round(seconds, 2),
        "msgs_per_s": round(len(recipients) / seconds),
        "msgs_per_s_incl_materialize": round(len(recipients) / (stats["last_at"] - started)),
        "dispatcher_cpu_s": round(sum(cpu_after) - sum(cpu_before), 2),
        "dispatcher_main_thread_cpu_s": round(sum(main_after) - sum(main_before), 2),
        "postgres_cpu_s": None if pg_before is None else round(pg_after - pg_before, 2),
        "sink_cpu_s": round(
            stats["cpu_user_s"]
            + stats["cpu_system_s"]
            - sink_before["cpu_user_s"]
            - sink_before["cpu_system_s"],
            2,
        ),
        "dispatcher_peak_rss_mb": round(rss),
        "verified": True,
    }
    Task.objects.filter(pk=task.pk).update(status="completed")
    drop_task(task)
    return figures


def throughput_workload(args, *, owner_name: str):
    """The throughput workload's recipients loaded and tagged for ``owner_name``, and the
    dispatch configuration set: ``(n, runs, recipients, owner, tag_id)``."""
    from baselines import make_recipients

    n = 2000 if args.smoke else args.n
    runs = 1 if args.smoke else args.runs
    recipients = make_recipients(n, args.seed)
    owner = bench_user(owner_name)
    tag_id = load_contacts(
        owner, [(r.email, r.first_name, r.city) for r in recipients], tag_name="bench"
    )
    set_config(
        queue__dispatchers=args.dispatchers,
        queue__concurrency=args.concurrency,
        queue__batch_size=args.batch_size,
    )
    return n, runs, recipients, owner, tag_id


def part_throughput(args) -> dict:
    from baselines import run_baseline_a, run_post_office
    from sink import start_sink_process

    n, runs, recipients, owner, tag_id = throughput_workload(args, owner_name="bench-throughput")
    connections = args.dispatchers * args.concurrency
    results: dict[str, list[dict]] = {"a": [], "edm": [], "post_office": []}
    with start_sink_process() as sink:
        pool = make_pool("bench-200", 200, port=sink.port)
        for run in range(1, runs + 1):
            a = run_baseline_a(recipients, sink=sink, connections=connections)
            print(f"run {run} A:   {a}", flush=True)
            results["a"].append(a)
            edm = run_edm(
                recipients,
                sink=sink,
                owner=owner,
                tag_id=tag_id,
                pool=pool,
                dispatchers=args.dispatchers,
            )
            print(f"run {run} EDM: {edm}", flush=True)
            results["edm"].append(edm)
            if not args.skip_post_office:
                b = run_post_office(n, seed=args.seed, sink=sink)
                print(f"run {run} B:   {b}", flush=True)
                results["post_office"].append(b)
    figures: dict = {
        "recipients": n,
        "runs": runs,
        "services": 200,
        "dispatchers": args.dispatchers,
        "concurrency": args.concurrency,
        "smtp_connections": connections,
    }
    for name, rows in results.items():
        if rows:
            figures[f"{name}_msgs_per_s_runs"] = [row["msgs_per_s"] for row in rows]
            figures[f"{name}_msgs_per_s_median"] = round(
                statistics.median(row["msgs_per_s"] for row in rows)
            )
    edm = figures["edm_msgs_per_s_median"]
    figures["edm_over_a"] = round(edm / figures["a_msgs_per_s_median"], 2)
    if results["post_office"]:
        figures["edm_over_post_office"] = round(edm / figures["post_office_msgs_per_s_median"], 2)
    last = results["edm"][-1]
    for key in (
        "materialize_seconds",
        "dispatcher_cpu_s",
        "postgres_cpu_s",
        "sink_cpu_s",
        "dispatcher_peak_rss_mb",
    ):
        figures[f"edm_{key}"] = last[key]
    figures["all_verified"] = all(row.get("verified") for rows in results.values() for row in rows)
    return figures


def _sent_events() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM events_event WHERE type = 'subtask.sent'")
        return cursor.fetchone()[0]


def _drop_sent_events() -> None:
    """Each run starts from the same outbox (the relay would have published and pruned)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM events_event WHERE type LIKE 'subtask.%%'")
        cursor.execute("VACUUM ANALYZE events_event")


def part_events(args) -> dict:
    from sink import start_sink_process

    n, runs, recipients, owner, tag_id = throughput_workload(args, owner_name="bench-events")
    pairs = max(runs, 1 if args.smoke else 3)
    results: dict[str, list[int]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}  # dispatchers + PostgreSQL, µs/msg
    ratios = []
    with start_sink_process() as sink:
        pool = make_pool("bench-200", 200, port=sink.port)
        for pair in range(1, pairs + 1):
            order = ("on", "off") if pair % 2 else ("off", "on")
            got = {}
            for mode in order:
                _drop_sent_events()
                edm = run_edm(
                    recipients,
                    sink=sink,
                    owner=owner,
                    tag_id=tag_id,
                    pool=pool,
                    dispatchers=args.dispatchers,
                    events=mode == "on",
                )
                written = _sent_events()
                expected = n if mode == "on" else 0
                if written != expected:
                    raise AssertionError(f"events {mode}: {written} subtask.sent, not {expected}")
                got[mode] = edm["msgs_per_s"]
                results[mode].append(edm["msgs_per_s"])
                if edm["postgres_cpu_s"] is not None:
                    used = edm["dispatcher_cpu_s"] + edm["postgres_cpu_s"]
                    cpu[mode].append(round(used / n * 1e6))
                print(f"pair {pair} events {mode}: {edm}", flush=True)
            ratios.append(round(got["on"] / got["off"], 3))
        _drop_sent_events()
    on = statistics.median(results["on"])
    off = statistics.median(results["off"])
    return {
        "recipients": n,
        "pairs": pairs,
        "on_msgs_per_s_runs": results["on"],
        "off_msgs_per_s_runs": results["off"],
        "on_msgs_per_s_median": round(on),
        "off_msgs_per_s_median": round(off),
        "on_over_off": round(on / off, 3),
        "pair_ratios": ratios,
        "pair_ratio_spread": [min(ratios), max(ratios)],
        # Less sensitive to the machine's load than the rate: CPU per message sent.
        "on_cpu_us_per_msg_runs": cpu["on"],
        "off_cpu_us_per_msg_runs": cpu["off"],
        "on_over_off_cpu": (
            round(statistics.median(cpu["on"]) / statistics.median(cpu["off"]), 3)
            if cpu["on"] and cpu["off"]
            else None
        ),
        "load": Path("/proc/loadavg").read_text().split()[:3],
    }


# -- real-world latency -----------------------------------------------------------------

LATENCY_CASES = {
    # name: (reply latency in seconds, services, sending_rate, baseline A alongside)
    "200ms-1000": (0.2, 1000, 0.0, True),
    "50ms-200": (0.05, 200, 0.0, True),
    "50ms-1000-rate1": (0.05, 1000, 1.0, False),
}


def raise_open_files() -> dict:
    """Raise this process's open-file limit (inherited by the dispatchers and the sink)
    to the hard limit: as far as the machine allows without privileges."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"open-file limit raised from {soft} to {hard} (the hard limit)", flush=True)
    return {"open_files_soft_before": soft, "open_files_limit": hard}


class _Sampler(threading.Thread):
    """Every 0.25 s while EDM sends: PostgreSQL connections per dispatcher process
    (``pg_stat_activity`` by application name) and each process's thread count."""

    def __init__(self, processes: list[subprocess.Popen]) -> None:
        super().__init__(daemon=True)
        self.processes = processes
        self.stop = threading.Event()
        self.pg_max: dict[str, int] = {}
        self.threads_max: dict[int, int] = {}

    def run(self) -> None:
        from django.db import connection

        try:
            while not self.stop.wait(0.25):
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT application_name, count(*) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'edm-dispatch-%%' GROUP BY 1"
                    )
                    for name, count in cursor.fetchall():
                        self.pg_max[name] = max(self.pg_max.get(name, 0), count)
                for process in self.processes:
                    threads = _proc_status(process.pid, "Threads")
                    self.threads_max[process.pid] = max(
                        self.threads_max.get(process.pid, 0), threads
                    )
        finally:
            connection.close()


def _proc_status(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_edm_latency(recipients, *, sink, owner, tag_id, pool, dispatchers: int, rate: float):
    """EDM at the default configuration against a latency sink: msg/s, every recipient
    exactly once, PostgreSQL connections and threads per dispatcher, peak RSS, CPU per
    message; with a rate limit, the smallest gap between two receive times of a
    service."""
    from baselines import postgres_cpu_seconds

    from apps.dispatch import services
    from apps.dispatch.models import Task

    sink.reset()
    processes = spawn_dispatchers(dispatchers)
    sampler = _Sampler(processes)
    try:
        cpu_before = [proc_cpu(p.pid) for p in processes]
        pg_before = postgres_cpu_seconds()
        task = bench_task(owner, "bench-latency", tag_id=tag_id, pool=pool)
        sampler.start()
        services.task_queue(task=task)
        queued = time.time()
        stats = sink.wait_for(len(recipients), timeout=3600)
        pg_after = postgres_cpu_seconds()
        cpu_after = [proc_cpu(p.pid) for p in processes]
        rss = max(proc_hwm_mb(p.pid) for p in processes)
    finally:
        sampler.stop.set()
        stop_dispatchers(processes)
        sampler.join(5)
    check = sink.verify(r.email for r in recipients)
    if not check["ok"]:
        raise AssertionError(f"EDM: not exactly one message per recipient: {check}")
    messages = stats["deliveries"]
    seconds = stats["last_at"] - queued
    figures = {
        "messages": messages,
        "seconds": round(seconds, 2),
        "msgs_per_s": round(messages / seconds),
        "dispatchers": dispatchers,
        "postgres_connections_max_per_dispatcher": max(sampler.pg_max.values(), default=0),
        "postgres_connections_max": dict(sorted(sampler.pg_max.items())),
        "threads_max_per_dispatcher": max(sampler.threads_max.values(), default=0),
        "dispatcher_peak_rss_mb": round(rss),
        "dispatcher_cpu_ms_per_message": round(
            (sum(cpu_after) - sum(cpu_before)) * 1000 / messages, 3
        ),
        "postgres_cpu_ms_per_message": None
        if pg_before is None
        else round((pg_after - pg_before) * 1000 / messages, 3),
        "verified": True,
    }
    times = sink.stats(detail=True)["times_by_sender"]
    every = sorted(t for received in times.values() for t in received)
    if every:
        # Deliveries in each second of the run: the ramp, the steady rate and the tail.
        buckets = [0] * (int(every[-1] - queued) + 1)
        for at in every:
            buckets[max(0, int(at - queued))] += 1
        figures["per_second"] = buckets
    if rate > 0:
        gaps = [
            b - a
            for received in times.values()
            for a, b in zip(sorted(received), sorted(received)[1:], strict=False)
        ]
        figures["services_seen"] = len(times)
        figures["min_gap_s"] = round(min(gaps), 4) if gaps else None
        figures["gaps_below_rate"] = sum(1 for gap in gaps if gap < rate)
        close = sorted(
            (round(b - a, 3), round(a - queued, 1))
            for received in times.values()
            for a, b in itertools.pairwise(sorted(received))
            if b - a < rate
        )
        figures["closest_gaps_and_when"] = close[:10]
    Task.objects.filter(pk=task.pk).update(status="completed")
    drop_task(task)
    return figures


def part_latency(args) -> dict:
    """The cases of BENCHMARKS.md, "Dispatch at real-world latency", each against a sink
    of its own that answers after L ms, at EDM's default configuration."""
    from baselines import make_recipients, run_baseline_a
    from sink import start_sink_process

    from apps.config.models import SystemConfig

    figures: dict = raise_open_files()
    n = 2000 if args.smoke else args.n
    recipients = make_recipients(n, args.seed)
    owner = bench_user("bench-latency")
    tag_id = load_contacts(
        owner, [(r.email, r.first_name, r.city) for r in recipients], tag_name="latency"
    )
    SystemConfig.objects.filter(key__startswith="queue.").delete()  # the defaults
    from apps.dispatch.conf import DispatchSettings

    dispatchers = DispatchSettings.load().dispatchers
    cases = args.latency_case or list(LATENCY_CASES)
    for name in cases:
        latency, count, rate, with_a = LATENCY_CASES[name]
        for run in range(1, (1 if args.smoke else args.runs) + 1):
            with start_sink_process(latency=latency, record_times=True) as sink:
                pool = make_pool(
                    f"latency-{name}",
                    count,
                    port=sink.port,
                    sending_rate=rate,
                    own_senders=rate > 0,
                )
                row: dict = {
                    "latency_ms": round(latency * 1000),
                    "services": count,
                    "sending_rate": rate,
                    "load_before": os.getloadavg()[0],
                }
                if with_a:
                    a = run_baseline_a(recipients, sink=sink, connections=count)
                    print(f"{name} run {run} A:   {a}", flush=True)
                    row["a_msgs_per_s"] = a["msgs_per_s"]
                    row["a_connections"] = count
                edm = run_edm_latency(
                    recipients,
                    sink=sink,
                    owner=owner,
                    tag_id=tag_id,
                    pool=pool,
                    dispatchers=dispatchers,
                    rate=rate,
                )
                print(f"{name} run {run} EDM: {edm}", flush=True)
                row.update({f"edm_{key}": value for key, value in edm.items()})
                if with_a:
                    row["edm_over_a"] = round(edm["msgs_per_s"] / a["msgs_per_s"], 2)
                row["load_after"] = os.getloadavg()[0]
            figures[f"{name}_run{run}"] = row
    return figures


# -- deliverability: send-time cost ----------------------------------------------------


def _dkim_key(domain: str, *, enabled: bool) -> None:
    from apps.deliverability import dkim
    from apps.deliverability.models import DkimKey

    key = DkimKey.objects.filter(domain=domain, service__isnull=True).first()
    if key is None:
        private = dkim.generate_private_key()
        key = DkimKey(domain=domain, selector="bench", public_key=dkim.public_key_of(private))
        key.private_key = private
    key.is_enabled = enabled
    key.save()


def part_deliverability(args) -> dict:
    """Throughput with deliverability off, headers only, and everything on, alternating."""
    from baselines import FROM_EMAIL
    from sink import start_sink_process

    n, runs, recipients, owner, tag_id = throughput_workload(
        args, owner_name="bench-deliverability"
    )
    domain = FROM_EMAIL.rpartition("@")[2]
    variants = {
        "off": {"plain": True, "tracking": False, "dkim": False},
        "headers": {"plain": False, "tracking": False, "dkim": False},
        "all_on": {"plain": False, "tracking": True, "dkim": True},
    }
    results: dict[str, list[dict]] = {name: [] for name in variants}
    with start_sink_process() as sink:
        pool = make_pool("bench-200", 200, port=sink.port)
        try:
            for run in range(1, runs + 1):
                for name, variant in variants.items():
                    _dkim_key(domain, enabled=variant["dkim"])
                    figures = run_edm(
                        recipients,
                        sink=sink,
                        owner=owner,
                        tag_id=tag_id,
                        pool=pool,
                        dispatchers=args.dispatchers,
                        plain=variant["plain"],
                        tracking=variant["tracking"],
                    )
                    print(f"run {run} {name}: {figures}", flush=True)
                    results[name].append(figures)
        finally:
            _dkim_key(domain, enabled=False)
    out: dict = {"recipients": n, "runs": runs, "dispatchers": args.dispatchers}
    for name, rows in results.items():
        out[f"{name}_msgs_per_s_runs"] = [row["msgs_per_s"] for row in rows]
        out[f"{name}_msgs_per_s_median"] = round(statistics.median(r["msgs_per_s"] for r in rows))
        out[f"{name}_dispatcher_cpu_ms_per_msg"] = round(
            1000 * statistics.median(r["dispatcher_cpu_s"] for r in rows) / n, 3
        )
    off = out["off_msgs_per_s_median"]
    out["headers_over_off"] = round(out["headers_msgs_per_s_median"] / off, 2)
    out["all_on_over_off"] = round(out["all_on_msgs_per_s_median"] / off, 2)
    return out


# -- tick cost and fairness at scale ----------------------------------------------------


def build_scale(owners: int, services: int, per_owner: int):
    """Owners with one queued task each (``per_owner`` pending subtasks), built in SQL."""
    from django.db import connection

    from apps.services.models import Pool

    pool = make_pool("bench-scale", services, port=1, sending_rate=1.0)
    pool = Pool.objects.get(pk=pool.pk)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dispatch_ownerqueue WHERE pool_id = %s", [pool.pk])
        cursor.execute(
            "INSERT INTO auth_user (username, password, is_superuser, first_name, last_name, "
            "email, is_staff, is_active, date_joined) "
            "SELECT 'scale-' || g, '!', false, '', '', '', false, true, now() "
            "FROM generate_series(1, %s) g ON CONFLICT (username) DO NOTHING",
            [owners],
        )
        cursor.execute(
            "INSERT INTO dispatch_task (owner_id, name, subject, body_text, body_html, "
            "from_name, pool_id, priority, status, total, queued_at, message_id_domain, "
            "created_at, updated_at) "
            "SELECT u.id, 'scale', 's', 'b', '', '', %s, 0, 'queued', %s, now(), 'x', "
            "now(), now() FROM auth_user u WHERE u.username LIKE 'scale-%%' RETURNING id",
            [pool.pk, per_owner],
        )
        cursor.execute(
            "INSERT INTO dispatch_subtask (task_id, owner_id, contact_id, to_email, status, "
            "attempts, attempt_token, next_attempt_at, message_id, last_error, error_class, "
            "history, created_at) "
            "SELECT t.id, t.owner_id, 0, 'x' || g || '@scale.example', 'pending', 0, 0, "
            "now() - interval '1 minute', '<' || t.id || '.' || g || '@x>', '', '', '[]', "
            "now() FROM dispatch_task t, generate_series(1, %s) g "
            "WHERE t.pool_id = %s AND t.status = 'queued'",
            [per_owner, pool.pk],
        )
        cursor.execute(
            "INSERT INTO dispatch_taskqueue (task_id, owner_id, pool_id, priority, served, "
            "served_at, ready_at) SELECT id, owner_id, pool_id, 0, 0, now(), "
            "now() - interval '1 minute' FROM dispatch_task "
            "WHERE pool_id = %s AND status = 'queued'",
            [pool.pk],
        )
        cursor.execute(
            "INSERT INTO dispatch_ownerqueue (pool_id, owner_id, served, ready_at) "
            "SELECT pool_id, owner_id, 0, min(ready_at) FROM dispatch_taskqueue "
            "WHERE pool_id = %s GROUP BY pool_id, owner_id",
            [pool.pk],
        )
        cursor.execute("VACUUM ANALYZE dispatch_subtask")
        cursor.execute("VACUUM ANALYZE dispatch_taskqueue")
        cursor.execute("VACUUM ANALYZE dispatch_ownerqueue")
    return pool


def drop_scale(pool) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dispatch_ownerqueue WHERE pool_id = %s", [pool.pk])
        cursor.execute("DELETE FROM dispatch_taskqueue WHERE pool_id = %s", [pool.pk])
        cursor.execute(
            "DELETE FROM dispatch_subtask WHERE task_id IN "
            "(SELECT id FROM dispatch_task WHERE pool_id = %s)",
            [pool.pk],
        )
        cursor.execute("DELETE FROM dispatch_task WHERE pool_id = %s", [pool.pk])
        cursor.execute("DELETE FROM services_emailservice WHERE pool_id = %s", [pool.pk])


def part_tick(args) -> dict:
    import dataclasses

    from django.db import connection, transaction

    from apps.dispatch.conf import DispatchSettings
    from apps.dispatch.engine.tick import tick

    owners, services, per_owner = (500, 100, 20) if args.smoke else (10_000, 1000, 100)
    started = time.perf_counter()
    pool = build_scale(owners, services, per_owner)
    build_seconds = time.perf_counter() - started
    conf = dataclasses.replace(DispatchSettings.load(), batch_size=200, concurrency=200)
    samples = []
    known_sending: set[int] = set()
    for _ in range(20 if args.smoke else 200):
        with transaction.atomic():
            began = time.perf_counter()
            chunks = tick(conf, free=200, known_sending=known_sending)
            samples.append(time.perf_counter() - began)
            claimed = sum(len(c.subtasks) for c in chunks)
            transaction.set_rollback(True)
    # One committed round: every owner should get a send within ceil(owners / slots) ticks.
    slots = min(200, services)
    rounds = -(-owners // slots)
    served: set[int] = set()
    for _ in range(rounds):
        for chunk in tick(conf, free=200, known_sending=known_sending):
            served.update(c.owner_id for c in chunk.subtasks)
        with connection.cursor() as cursor:  # make every service ready again (not timed)
            cursor.execute(
                "UPDATE services_emailservice SET next_available_at = now() - interval '1 s', "
                "used_quota = 0 WHERE pool_id = %s",
                [pool.pk],
            )
    drop_scale(pool)
    return {
        "owners": owners,
        "services": services,
        "pending": owners * per_owner,
        "build_seconds": round(build_seconds, 1),
        "tick_claimed": claimed,
        "tick_ms_p50": round(percentile(samples, 50) * 1000, 2),
        "tick_ms_p95": round(percentile(samples, 95) * 1000, 2),
        "round_ticks": rounds,
        "owners_served_in_first_round": len(served),
    }


# -- materialization, memory and database time per message ------------------------------


def part_materialize_and_rss(args, *, do_rss: bool) -> dict:
    from django.db import connection
    from sink import start_sink_process

    from apps.dispatch import services
    from apps.dispatch.engine.loop import Dispatcher

    n = 20_000 if args.smoke else 1_000_000
    owner = bench_user("bench-million")
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM contacts_contacttag WHERE contact_id IN "
            "(SELECT id FROM contacts_contact WHERE owner_id = %s)",
            [owner.pk],
        )
        cursor.execute("DELETE FROM contacts_contact WHERE owner_id = %s", [owner.pk])
        cursor.execute(
            "INSERT INTO contacts_contact (owner_id, email, first_name, last_name, attributes,"
            " status, source, created_at, updated_at) SELECT %s, 'm' || g || '@million.example',"
            " 'Name' || g, '', jsonb_build_object('city', 'City' || (g %% 97)), 'active', "
            "'bench', now(), now() FROM generate_series(1, %s) g",
            [owner.pk, n],
        )
    from apps.contacts.models import Tag

    tag, _ = Tag.objects.get_or_create(owner=owner, name="million")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO contacts_contacttag (tag_id, contact_id, created_at) "
            "SELECT %s, id, now() FROM contacts_contact WHERE owner_id = %s "
            "ON CONFLICT DO NOTHING",
            [tag.pk, owner.pk],
        )
        cursor.execute("VACUUM ANALYZE contacts_contact")
        cursor.execute("VACUUM ANALYZE contacts_contacttag")
    figures: dict = {"recipients": n}
    with start_sink_process() as sink:
        pool = make_pool("bench-million", 200, port=sink.port)
        task = bench_task(owner, "million", tag_id=tag.pk, pool=pool)
        started = time.perf_counter()
        services.task_queue(task=task)
        figures["materialize_seconds"] = round(time.perf_counter() - started, 2)
        print(f"materialized {n} in {figures['materialize_seconds']} s", flush=True)
        figures.update(dlq_stats_time(task, count=n // 10))
        if do_rss:
            seconds = 8 if args.smoke else 30
            processes = spawn_dispatchers(1)
            time.sleep(3)
            figures.update(small_task_while_big_runs(pool, sink))
            time.sleep(max(0, seconds - 3))
            figures["dispatcher_peak_rss_mb_with_pending"] = round(proc_hwm_mb(processes[0].pid))
            stop_dispatchers(processes)
            figures["sent_during_rss_run"] = sink.stats()["deliveries"]
            figures.update(db_time_per_message(Dispatcher, seconds=5 if args.smoke else 15))
            figures.update(progress_read_time(task))
            task.refresh_from_db()
            if not task.is_finished:  # a smoke-sized task may have been sent by now
                services.task_cancel(task=task)
    drop_task(task)
    return figures


def small_task_while_big_runs(pool, sink) -> dict:
    """User B queues 10 recipients while the big task sends: time to first send and to
    completion (BENCHMARKS.md, "Fairness and latency")."""

    from apps.dispatch import services
    from apps.dispatch.selectors import task_progress
    from apps.monitoring.models import TaskWaitMetric

    owner = bench_user("bench-small")
    tag_id = load_contacts(
        owner,
        [(f"small{i}@small.example", f"Small{i}", "Oslo") for i in range(10)],
        tag_name="small",
    )
    task = bench_task(owner, "small", tag_id=tag_id, pool=pool)
    started = time.time()
    services.task_queue(task=task)
    done = None
    while time.time() - started < 30:
        progress = task_progress(task)
        if progress["sent"] == 10:
            done = time.time() - started
            break
        time.sleep(0.02)
    wait = TaskWaitMetric.objects.filter(task=task).values_list("wait_seconds", flat=True)
    return {
        "small_task_first_send_s": round(wait[0], 3) if wait else None,
        "small_task_done_s": None if done is None else round(done, 2),
    }


def dlq_stats_time(task, *, count: int) -> dict:
    """``dlq_stats()`` over ``count`` dead letters (a tenth of the task's subtasks)."""
    from django.db import connection

    from apps.dispatch.selectors import dlq_stats

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO dispatch_deadletter (subtask_id, task_id, owner_id, error_type, "
            "error_message, history, status, reprocess_count, created_at, updated_at) "
            "SELECT id, task_id, owner_id, 'smtp_' || (450 + id %% 5), 'deferred', '[]', "
            "(ARRAY['pending', 'reprocessing', 'resolved', 'expired'])[1 + id %% 4], 0, "
            "now(), now() FROM dispatch_subtask WHERE task_id = %s ORDER BY id LIMIT %s",
            [task.pk, count],
        )
        cursor.execute("ANALYZE dispatch_deadletter")
    samples = []
    for _ in range(10):
        began = time.perf_counter()
        stats = dlq_stats()
        samples.append(time.perf_counter() - began)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM dispatch_deadletter WHERE task_id = %s", [task.pk])
    return {
        "dlq_entries": stats["total"],
        "dlq_stats_ms_p50": round(statistics.median(samples) * 1000, 1),
    }


def progress_read_time(task) -> dict:
    """The big task's progress as the API detail and the admin read it (the counters'
    rows, see ``apps.dispatch.progress``) against a count of its subtasks (how it was
    read before the counters): p50 of 20 reads and of 5 counts, mid-send."""
    from django.db import connection

    from apps.dispatch.models import ProgressDelta
    from apps.dispatch.selectors import task_progress

    def counted() -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT status, count(*) FROM dispatch_subtask WHERE task_id = %s GROUP BY status",
                [task.pk],
            )
            cursor.fetchall()

    def p50_ms(read, times: int) -> float:
        samples = []
        for _ in range(times):
            started = time.perf_counter()
            read()
            samples.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(samples), 2)

    return {
        "progress_rows": ProgressDelta.objects.filter(task_id=task.pk).count(),
        "progress_read_ms_p50": p50_ms(lambda: task_progress(task), 20),
        "progress_counted_ms_p50": p50_ms(counted, 5),
    }


def db_time_per_message(dispatcher_class, *, seconds: float) -> dict:
    """Run a loop in this process. Database time per message, two ways: PostgreSQL's CPU
    (all its processes, from /proc) over the messages sent — the server's cost of claim
    and record — and, from the client, the wall time of every round trip of every thread
    (Django's cursors and the per-message position moves, which go through libpq
    directly: sending each and waiting for its answer, which overlaps SMTP round trips);
    the latter includes each thread's wait for the GIL and the CPU after the reply, with
    8 sender threads, PostgreSQL and the sink sharing 2 cores."""
    from baselines import postgres_cpu_seconds
    from django.db.backends import utils

    from apps.dispatch.engine import outcomes

    spent = [0.0]
    lock = threading.Lock()

    def timing(original):
        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with lock:
                    spent[0] += time.perf_counter() - began

        return timed

    original_execute = utils.CursorWrapper._execute
    original_begin, original_end = outcomes.advance_begin, outcomes.advance_end
    utils.CursorWrapper._execute = timing(original_execute)
    outcomes.advance_begin = timing(original_begin)
    outcomes.advance_end = timing(original_end)
    try:
        dispatcher = dispatcher_class(seconds=seconds, use_slot=False)
        pg_before = postgres_cpu_seconds()
        stats = dispatcher.run()
        pg_after = postgres_cpu_seconds()
    finally:
        utils.CursorWrapper._execute = original_execute
        outcomes.advance_begin, outcomes.advance_end = original_begin, original_end
    return {
        "db_time_run_sent": stats.sent,
        "db_ms_per_message": round(spent[0] * 1000 / max(1, stats.sent), 3),
        "postgres_cpu_ms_per_message": None
        if pg_before is None
        else round((pg_after - pg_before) * 1000 / max(1, stats.sent), 3),
        "loop_tick_ms_p50": round(percentile(stats.tick_seconds, 50) * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, one run")
    parser.add_argument(
        "--part",
        action="append",
        choices=["throughput", "tick", "materialize", "rss", "latency", "deliverability", "events"],
        help="run only these parts (deliverability and events run only when named)",
    )
    parser.add_argument(
        "--latency-case",
        action="append",
        choices=sorted(LATENCY_CASES),
        help="with --part latency: run only these cases",
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=800)
    parser.add_argument("--skip-post-office", action="store_true")
    args = parser.parse_args()
    parts = args.part or ["throughput", "tick", "materialize", "rss", "latency"]
    setup_django()
    figures: dict = {}
    if "throughput" in parts:
        figures.update(part_throughput(args))
    if "latency" in parts:
        figures.update({f"latency_{k}": v for k, v in part_latency(args).items()})
    if "tick" in parts:
        figures.update({f"scale_{k}": v for k, v in part_tick(args).items()})
    if "events" in parts:
        figures.update({f"events_{k}": v for k, v in part_events(args).items()})
    if "deliverability" in parts:
        figures.update({f"deliverability_{k}": v for k, v in part_deliverability(args).items()})
    if "materialize" in parts or "rss" in parts:
        figures.update(
            {
                f"million_{k}": v
                for k, v in part_materialize_and_rss(args, do_rss="rss" in parts).items()
            }
        )
    report("dispatch_smoke" if args.smoke else "dispatch", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
