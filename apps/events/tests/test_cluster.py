"""The relay loop in a real ``manage.py qcluster``: started by the cluster, delivering,
and stopped by SIGTERM with everything else."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from standardwebhooks import Webhook

from apps.dispatch.tests.helpers import spawn_qcluster, wait_until
from apps.events.loop import relays_live
from apps.events.models import WebhookDelivery
from apps.events.tests.conftest import append

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STOP_WITHIN = 10.0


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_a_cluster_starts_its_relay_loop_delivers_and_stops_at_sigterm(
    user, endpoint_for, http_receiver, config
):
    config("queue.dispatchers", 0)
    config("events.relays", 1)
    _, secret = endpoint_for(http_receiver.url, types=["tag.created"])
    events = [append("tag.created", user, n=i) for i in range(50)]
    cluster = spawn_qcluster(EDM_WEBHOOKS_ALLOW_PRIVATE="1")
    try:
        wait_until(lambda: relays_live() == 1, timeout=40, message="the relay loop")
        wait_until(lambda: len(http_receiver.requests) >= 50, timeout=30, message="deliveries")
        processes = tree(cluster.pid)
        os.killpg(cluster.pid, signal.SIGTERM)
        signalled = time.monotonic()
        wait_until(lambda: relays_live() == 0, timeout=STOP_WITHIN + 5, message="the loop's stop")
        loop_stopped_in = time.monotonic() - signalled
        _, alive = psutil.wait_procs(processes, timeout=20)
        all_stopped_in = time.monotonic() - signalled
    finally:
        for process in tree(cluster.pid):
            process.kill()
        cluster.wait(timeout=10)
    assert loop_stopped_in < STOP_WITHIN, loop_stopped_in
    assert alive == [], f"processes still alive {all_stopped_in:.1f} s after SIGTERM"
    verifier = Webhook(secret)
    ids = [verifier.verify(r.body, r.headers)["id"] for r in http_receiver.requests]
    assert sorted(ids) == sorted(str(e.uid) for e in events)
    assert WebhookDelivery.objects.filter(status="delivered").count() == 50


def test_a_relay_loop_a_worker_takes_after_the_stop_signal_ends_with_the_cluster(config):
    """The cluster's SIGINT reaches a worker busy with another job; the relay loop queued
    behind that job starts after the signal, and must stop at once all the same."""
    from django.utils import timezone
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from apps.events.tasks import LOOP_FUNC

    config("queue.dispatchers", 0)
    config("events.relays", 1)
    async_task("time.sleep", 3)  # the only worker is busy when the stop comes
    async_task(LOOP_FUNC, 240.0)
    cluster = spawn_qcluster(EDM_Q_WORKERS="1")
    try:
        # Dequeued rows are locked until their retry time, in the future.
        taken = lambda: OrmQ.objects.filter(lock__gt=timezone.now()).count()  # noqa: E731
        wait_until(lambda: taken() == 2, timeout=40, message="both jobs handed to the worker")
        processes = tree(cluster.pid)
        os.killpg(cluster.pid, signal.SIGTERM)
        signalled = time.monotonic()
        _, alive = psutil.wait_procs(processes, timeout=3 + STOP_WITHIN + 10)
        stopped_in = time.monotonic() - signalled
    finally:
        for process in tree(cluster.pid):
            process.kill()
        cluster.wait(timeout=10)
    assert alive == [], f"processes still alive {stopped_in:.1f} s after SIGTERM"
    assert stopped_in < 3 + STOP_WITHIN, stopped_in
    assert relays_live() == 0
    assert not any((q.task or {}).get("func") == LOOP_FUNC for q in OrmQ.objects.all()), (
        "no successor after the stop"
    )
