"""The relay loop's task: it stops at once when its cluster is already stopping."""

from __future__ import annotations

import threading
import time

import pytest
from django_q.models import OrmQ

from apps.core import stopping
from apps.events import tasks
from apps.events.loop import relays_live

pytestmark = pytest.mark.django_db


def relay_loops_enqueued() -> int:
    return sum(1 for q in OrmQ.objects.all() if (q.task or {}).get("func") == tasks.LOOP_FUNC)


@pytest.fixture
def cluster_stop():
    """The cluster's stop event as its sentinel hands it to its workers."""
    event = threading.Event()
    stopping.cluster_stop_event_set(event)
    yield event
    stopping.cluster_stop_event_set(None)


def test_a_relay_loop_taken_after_the_cluster_was_told_to_stop_returns_at_once(
    cluster_stop, config
):
    """A q2 worker takes a loop queued ahead of its STOP after the cluster's SIGINT has
    come and gone: the loop must still stop, without a successor."""
    config("events.relays", 1)
    cluster_stop.set()
    started = time.monotonic()
    outcome = tasks.relay_loop(seconds=5.0)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"ran {elapsed:.1f} s after the cluster's stop ({outcome})"
    assert relay_loops_enqueued() == 0, "no successor once the cluster stops"
    assert relays_live() == 0, "its lease is released"


def test_a_relay_loop_runs_its_time_and_enqueues_its_successor_while_the_cluster_runs(
    cluster_stop, config
):
    config("events.relays", 1)
    started = time.monotonic()
    tasks.relay_loop(seconds=0.5)
    assert time.monotonic() - started >= 0.5
    assert relay_loops_enqueued() == 1
