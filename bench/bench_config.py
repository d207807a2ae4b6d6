#!/usr/bin/env python
"""Cost of reading a configuration value (``config_get``) in a hot loop.

Figures (medians of several runs):
* ``hot_read_ns`` - one ``config_get`` between two version checks (the goal: ≤ 2 µs,
  no query), and the queries those reads issued (must be 0).
* ``version_check_us`` - a read that has to check the version (interval expired, nothing
  changed): one primary-key lookup.
* ``query_per_read_us`` - for comparison, reading the value from the database each time
  (what a cache-less ``config_get`` would cost).

Usage: ``DEBUG=1 python scripts/devdb.py -- python bench/bench_config.py [--smoke]``
"""

from __future__ import annotations

import sys
import time

from _common import median, report, setup_django


def _time_per_call(func, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        func()
    return (time.perf_counter() - started) / calls


def main() -> None:
    smoke = "--smoke" in sys.argv
    setup_django()
    from django.conf import settings
    from django.db import connection

    from apps.config.models import SystemConfig
    from apps.config.selectors import config_cache_clear, config_get

    runs = 3 if smoke else 7
    hot_calls = 20_000 if smoke else 1_000_000
    db_calls = 200 if smoke else 3_000

    config_cache_clear()
    config_get("queue.batch_size")

    queries = 0

    def count(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    # Long interval so no version check falls inside the timed loop of the hot figure.
    settings.EDM_CONFIG_CHECK_INTERVAL = 3600.0
    config_cache_clear()
    config_get("queue.batch_size")
    hot = []
    with connection.execute_wrapper(count):
        for _ in range(runs):
            hot.append(_time_per_call(lambda: config_get("queue.batch_size"), hot_calls))
    hot_queries = queries

    settings.EDM_CONFIG_CHECK_INTERVAL = 0.0
    config_cache_clear()
    config_get("queue.batch_size")
    checks = [_time_per_call(lambda: config_get("queue.batch_size"), db_calls) for _ in range(runs)]

    def direct():
        SystemConfig.objects.filter(key="queue.batch_size").values_list("value", flat=True).first()

    direct_runs = [_time_per_call(direct, db_calls) for _ in range(runs)]

    hot_ns = median(hot) * 1e9
    report(
        "config",
        {
            "hot_read_ns": round(hot_ns, 1),
            "hot_read_ns_min": round(min(hot) * 1e9, 1),
            "hot_reads_per_run": hot_calls,
            "hot_read_queries": hot_queries,
            "version_check_us": round(median(checks) * 1e6, 1),
            "query_per_read_us": round(median(direct_runs) * 1e6, 1),
            "runs": runs,
            "goal_hot_read_le_2us": hot_ns <= 2000 and hot_queries == 0,
        },
    )


if __name__ == "__main__":
    main()
