#!/usr/bin/env python
"""Baselines of the dispatch throughput benchmark: A (smtplib, pre-built), A' (Django's
EmailMultiAlternatives in the loop) and B (django-post-office), plus the cost of building
one message with ``apps.dispatch.mime``.

    DEBUG=1 .venv/bin/python scripts/devdb.py -- .venv/bin/python bench/bench_baselines.py
    ... bench/bench_baselines.py --smoke            # 2,000 recipients, one run
    ... bench/bench_baselines.py --runs 3 --n 100000

Prints the figures of each run and their medians, and stores them in
``bench/results/dispatch_baselines.json``. Every run checks in the sink that each
recipient got exactly one message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report, setup_django


def measure_build(samples: int) -> dict[str, float]:
    """µs per message (one core, best of 5): rendering the three templates, building
    with ``apps.dispatch.mime``, and building with Django's EmailMultiAlternatives."""
    from baselines import FROM_EMAIL, FROM_NAME, make_recipients, render_parts
    from django.core.mail import EmailMultiAlternatives

    from apps.dispatch.mime import build_message, make_message_id

    recipients = make_recipients(samples, seed=99)
    parts = [render_parts(r) for r in recipients]

    def render_all() -> None:
        for recipient in recipients:
            render_parts(recipient)

    def mime_all() -> None:
        for recipient, (subject, text, html) in zip(recipients, parts, strict=True):
            build_message(
                from_email=FROM_EMAIL,
                from_name=FROM_NAME,
                to=recipient.email,
                to_name=recipient.first_name,
                subject=subject,
                text=text,
                html=html,
                message_id=make_message_id("bench.edm.example"),
                headers={"List-Unsubscribe": f"<https://bench.edm.example/u/{recipient.email}>"},
            )

    def django_all() -> None:
        for recipient, (subject, text, html) in zip(recipients, parts, strict=True):
            message = EmailMultiAlternatives(
                subject,
                text,
                f"{FROM_NAME} <{FROM_EMAIL}>",
                [f"{recipient.first_name} <{recipient.email}>"],
                headers={"List-Unsubscribe": f"<https://bench.edm.example/u/{recipient.email}>"},
            )
            message.attach_alternative(html, "text/html")
            message.message().as_bytes(linesep="\r\n")

    def per_message(function) -> float:
        best = min(timeit.repeat(function, number=1, repeat=5, timer=time.process_time))
        return round(best / samples * 1e6, 1)

    subject, text, html = parts[0]
    return {
        "message_parts_bytes": len(subject) + len(text.encode()) + len(html.encode()),
        "render_us": per_message(render_all),
        "mime_build_us": per_message(mime_all),
        "django_build_us": per_message(django_all),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2,000 recipients, one run")
    parser.add_argument("--n", type=int, default=100_000, help="recipients (default 100,000)")
    parser.add_argument("--runs", type=int, default=1, help="runs of each baseline")
    parser.add_argument("--connections", type=int, default=8, help="SMTP connections for A/A'")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--po-processes", type=int, default=2)
    parser.add_argument("--po-threads", type=int, default=4)
    parser.add_argument("--po-batch-size", type=int, default=5000)
    parser.add_argument("--skip-post-office", action="store_true")
    args = parser.parse_args()
    n = 2000 if args.smoke else args.n
    runs = 1 if args.smoke else args.runs

    setup_django()
    from baselines import (
        make_recipients,
        run_baseline_a,
        run_baseline_a_prime,
        run_post_office,
    )
    from sink import start_sink_process

    figures: dict[str, object] = {"recipients": n, "runs": runs}
    build = measure_build(200 if args.smoke else 2000)
    figures.update(build)
    print(f"build: {build}", flush=True)

    recipients = make_recipients(n, args.seed)
    results: dict[str, list[dict]] = {"a": [], "a_prime": [], "post_office": []}
    with start_sink_process() as sink:
        for run in range(1, runs + 1):
            a = run_baseline_a(recipients, sink=sink, connections=args.connections)
            print(f"run {run} A:  {a}", flush=True)
            results["a"].append(a)
            a_prime = run_baseline_a_prime(recipients, sink=sink, connections=args.connections)
            print(f"run {run} A': {a_prime}", flush=True)
            results["a_prime"].append(a_prime)
            if not args.skip_post_office:
                b = run_post_office(
                    n,
                    seed=args.seed,
                    sink=sink,
                    processes=args.po_processes,
                    threads=args.po_threads,
                    batch_size=args.po_batch_size,
                )
                print(f"run {run} B:  {b}", flush=True)
                results["post_office"].append(b)

    for name, rows in results.items():
        if not rows:
            continue
        rates = [row["msgs_per_s"] for row in rows]
        figures[f"{name}_msgs_per_s_median"] = round(statistics.median(rates))
        figures[f"{name}_msgs_per_s_runs"] = rates
        for key in ("sender_cpu_s", "sink_cpu_s", "postgres_cpu_s", "queue_seconds"):
            values = [row[key] for row in rows if row.get(key) is not None]
            if values:
                figures[f"{name}_{key}_median"] = round(statistics.median(values), 2)
    if results["post_office"]:
        figures["a_over_post_office"] = round(
            figures["a_msgs_per_s_median"] / figures["post_office_msgs_per_s_median"], 2
        )
    figures["a_prime_over_a"] = round(
        figures["a_prime_msgs_per_s_median"] / figures["a_msgs_per_s_median"], 2
    )
    figures["all_verified"] = all(row["verified"] for rows in results.values() for row in rows)
    report("dispatch_baselines", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
