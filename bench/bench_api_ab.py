#!/usr/bin/env python
"""The task detail and the stack's ceiling side by side with another source tree
(BENCHMARKS.md, "API"): one gunicorn per tree on one PostgreSQL, wrk alternating
between them in short runs, so that both meet the same load of a shared machine.

    git worktree add /tmp/before <commit>
    DEBUG=1 .venv/bin/python scripts/devdb.py -- \\
        .venv/bin/python bench/bench_api_ab.py /tmp/before

Both trees run on this virtualenv and this tree's schema (compare trees with the same
migrations). For each round, in alternating order: ``/api/bench/constant`` (the
ceiling) then ``GET /api/tasks/<id>/`` (a draft task of 5,000 recipients, as
``bench_api.py --smoke`` has idle) on each server; printed are the medians over the
rounds of requests/s, p99, the CPU milliseconds per request of each server's gunicorn
and of PostgreSQL, the errors, and the detail's share of its ceiling. Without a tree (``make bench``) it is skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import ROOT, SKIPPED, report, setup_django  # noqa: E402
from bench_api import (  # noqa: E402
    BENCH_THROTTLES,
    free_port,
    process_tree_cpu_seconds,
    run_wrk,
    start_gunicorn,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "other", type=Path, nargs="?", help="the other source tree (e.g. a worktree)"
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="3 rounds")
    parser.add_argument("--seconds", type=int, default=2, help="per run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    args = parser.parse_args()
    if args.other is None:  # ``make bench`` runs every script: this one needs a tree
        print("bench_api_ab: give the other source tree to compare with (see --help)")
        return SKIPPED
    if args.smoke:
        args.rounds = 3
    if shutil.which("wrk") is None:
        print("bench_api_ab: wrk is not installed (make system-tools, or apt-get install wrk)")
        return SKIPPED
    setup_django()

    from baselines import postgres_cpu_seconds
    from bench_dispatch import bench_task, bench_user, drop_task, load_contacts, make_pool
    from rest_framework.authtoken.models import Token

    owner = bench_user("bench-api-ab")
    token = Token.objects.get_or_create(user=owner)[0].key
    tag_id = load_contacts(
        owner, [(f"ab{i}@ab.example", f"Ab{i}", "Oslo") for i in range(5_000)], tag_name="ab"
    )
    task = bench_task(owner, "ab", tag_id=tag_id, pool=make_pool("bench-api-ab", 2, port=9))
    workers = 2 * (os.cpu_count() or 1) + 1
    trees = {"this": ROOT, "other": args.other.resolve()}
    servers = {}
    runs: dict[tuple[str, str], list[dict]] = {}
    try:
        for name, root in trees.items():
            port = free_port()
            servers[name] = (
                start_gunicorn(
                    port, workers, root=root, EDM_BENCH_ENDPOINTS="1", **BENCH_THROTTLES
                ),
                f"http://127.0.0.1:{port}",
            )
        for number in range(args.rounds):
            order = list(trees) if number % 2 == 0 else list(reversed(trees))
            for endpoint, path in (
                ("constant", "/api/bench/constant"),
                ("detail", f"/api/tasks/{task.pk}/"),
            ):
                for name in order:
                    process, base = servers[name]
                    web, database = process_tree_cpu_seconds(process.pid), postgres_cpu_seconds()
                    run = run_wrk(
                        base + path,
                        seconds=args.seconds,
                        connections=args.connections,
                        header=f"Authorization: Token {token}",
                    )
                    requests = max(run["requests"], 1)
                    run["web_cpu_ms"] = (
                        (process_tree_cpu_seconds(process.pid) - web) * 1000 / requests
                    )
                    run["db_cpu_ms"] = (postgres_cpu_seconds() - database) * 1000 / requests
                    runs.setdefault((name, endpoint), []).append(run)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    drop_task(task)
    figures: dict = {
        "other": str(trees["other"]),
        "rounds": args.rounds,
        "load": os.getloadavg()[0],
    }
    for (name, endpoint), rows in runs.items():
        for key in ("requests_per_s", "p99_ms", "web_cpu_ms", "db_cpu_ms"):
            figures[f"{name}_{endpoint}_{key}"] = round(statistics.median(r[key] for r in rows), 3)
        figures[f"{name}_{endpoint}_errors"] = sum(r["errors"] for r in rows)
    for name in trees:
        shares = [
            detail["requests_per_s"] / max(constant["requests_per_s"], 1)
            for constant, detail in zip(
                runs[(name, "constant")], runs[(name, "detail")], strict=True
            )
        ]
        figures[f"{name}_detail_of_ceiling"] = round(statistics.median(shares), 2)
    report("api_ab", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
