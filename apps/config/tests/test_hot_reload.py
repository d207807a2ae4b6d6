"""The per-process cache: no query per read, and a change seen by another process in ≤ 2 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from apps.config import services
from apps.config.selectors import config_get
from apps.core.database import database_url

ROOT = Path(__file__).resolve().parents[3]

# Runs in a second interpreter against the same database: reports the value it starts
# with, then polls config_get() until the value changes and reports when (monotonic clock,
# which is system-wide on Linux) and how many queries all those reads cost.
WATCHER = """
import json, os, sys, time
import django
django.setup()
from django.db import connection
from apps.config.selectors import config_get

queries = 0
def count(execute, sql, params, many, context):
    global queries
    queries += 1
    return execute(sql, params, many, context)

with connection.execute_wrapper(count):
    initial = config_get("queue.batch_size")
    print(json.dumps({"ready": initial}), flush=True)
    reads, deadline = 0, time.monotonic() + 15
    while time.monotonic() < deadline:
        value = config_get("queue.batch_size")
        reads += 1
        if value != initial:
            print(json.dumps({"seen": value, "at": time.monotonic(), "reads": reads,
                              "queries": queries}), flush=True)
            break
        time.sleep(0.001)
    else:
        print(json.dumps({"timeout": True}), flush=True)
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_second_process_sees_a_change_within_two_seconds(staff_user):
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "edm.settings",
    }
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCHER],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = json.loads(watcher.stdout.readline() or "{}")
        assert ready == {"ready": 1000}, watcher.stderr.read()
        time.sleep(0.3)  # the watcher is now serving from its cache
        services.config_set(key="queue.batch_size", value=321, reason="hot", actor=staff_user)
        committed_at = time.monotonic()
        seen = json.loads(watcher.stdout.readline() or "{}")
    finally:
        watcher.kill()
        watcher.wait()
    assert seen.get("seen") == 321, seen
    assert seen["at"] - committed_at <= 2.0
    # Thousands of reads, a handful of version checks (about one per second).
    assert seen["reads"] > 100
    assert seen["queries"] <= 2 + 2 * (seen["at"] - committed_at + 1.3) + 2


@pytest.mark.django_db
def test_reads_between_checks_cost_no_query(django_assert_num_queries):
    config_get("queue.batch_size")  # loads the snapshot
    with django_assert_num_queries(0):
        for _ in range(1000):
            config_get("queue.batch_size")
            config_get("backoff.strategy")


@pytest.mark.django_db
def test_an_expired_snapshot_costs_one_version_check_when_nothing_changed(
    settings, django_assert_num_queries
):
    settings.EDM_CONFIG_CHECK_INTERVAL = 0
    config_get("queue.batch_size")
    with django_assert_num_queries(1):
        config_get("queue.batch_size")


@pytest.mark.django_db
def test_the_writing_process_reads_its_change_back_at_once(staff_user):
    assert config_get("queue.dispatchers") == 2
    services.config_set(key="queue.dispatchers", value=4, actor=staff_user)
    assert config_get("queue.dispatchers") == 4


@pytest.mark.django_db
def test_a_database_error_during_a_check_keeps_serving_the_last_values(settings):
    from django.db import DatabaseError

    settings.EDM_CONFIG_CHECK_INTERVAL = 0
    assert config_get("queue.batch_size") == 1000

    def broken(execute, sql, params, many, context):
        raise DatabaseError("connection lost")

    with connection.execute_wrapper(broken):
        assert config_get("queue.batch_size") == 1000


@pytest.mark.django_db
def test_with_nothing_loaded_a_database_error_is_raised():
    from django.db import DatabaseError

    def broken(execute, sql, params, many, context):
        raise DatabaseError("connection lost")

    with connection.execute_wrapper(broken), pytest.raises(DatabaseError):
        config_get("queue.batch_size")


@pytest.mark.django_db
def test_while_one_thread_checks_the_others_serve_the_loaded_values(settings):
    import threading

    from apps.config import selectors

    settings.EDM_CONFIG_CHECK_INTERVAL = 0
    assert config_get("queue.batch_size") == 1000
    results = []
    with selectors._refresh_lock:  # a check in progress in another thread
        reader = threading.Thread(target=lambda: results.append(config_get("queue.batch_size")))
        reader.start()
        reader.join(timeout=2)
    assert results == [1000]
