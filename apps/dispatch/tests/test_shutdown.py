"""Stopping a real ``manage.py qcluster`` with SIGTERM, the two ways it happens.

* To the whole process group (docker, systemd, Kubernetes): every process gets it.
* To the main process alone (``kill PID``, a supervisor that signals its child only).

Either way: every dispatcher loop stops within 10 s, every process of the cluster exits,
the messages that were on the wire are recorded, claimed ones go back to the queue (no
subtask is left allocated or sending), and no slot stays held.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from apps.dispatch.engine.slots import slots_live
from apps.dispatch.models import SubTask
from apps.dispatch.selectors import task_progress
from apps.dispatch.tests.helpers import queue_task, spawn_qcluster, wait_until
from apps.dispatch.tests.smtp import SlowHandler, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STOP_WITHIN = 10.0


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("target", ["process group", "main process"])
def test_sigterm_stops_every_loop_and_process_of_the_cluster_within_ten_seconds(
    target, user, make_contacts, make_service, set_config
):
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    # The two dispatcher loops on the cluster's two workers (the relay loop's own stop:
    # apps/events/tests/test_cluster.py).
    set_config(queue__dispatchers=2, queue__concurrency=4, queue__batch_size=20, events__relays=0)
    make_contacts(user, 2000)
    sink = start(SlowHandler(delay=0.02))
    cluster = None
    try:
        for i in range(4):
            make_service(port=sink.port, name=f"s{i}")
        task = queue_task(user)
        OrmQ.objects.all().delete()  # the loops queueing started: these two instead
        for _ in range(2):
            async_task("apps.dispatch.tasks.dispatcher_loop", 200.0)
        cluster = spawn_qcluster()
        wait_until(lambda: slots_live() == 2, timeout=40, message="two loops holding slots")
        wait_until(lambda: len(sink.handler.messages) >= 50, timeout=30, message="sending")
        processes = _tree(cluster.pid)
        assert len(processes) >= 4  # main, sentinel, workers, pusher, monitor

        if target == "process group":
            os.killpg(cluster.pid, signal.SIGTERM)
        else:
            cluster.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        wait_until(lambda: slots_live() == 0, timeout=STOP_WITHIN + 5, message="loops to stop")
        loops_stopped_in = time.monotonic() - signalled
        _, alive = psutil.wait_procs(processes, timeout=max(1.0, 30 - loops_stopped_in))
        all_stopped_in = time.monotonic() - signalled
        leftovers = [(p.pid, p.status(), " ".join(p.cmdline()[-3:])) for p in alive]
    finally:
        if cluster is not None:
            for process in _tree(cluster.pid):
                process.kill()
            cluster.wait(timeout=10)
        sink.stop()

    print(
        f"SIGTERM to the {target}: loops stopped in {loops_stopped_in:.1f} s, "
        f"every process in {all_stopped_in:.1f} s"
    )
    assert loops_stopped_in < STOP_WITHIN, loops_stopped_in
    assert leftovers == [], f"processes still alive {all_stopped_in:.1f} s after SIGTERM"
    assert all_stopped_in < STOP_WITHIN + 5, all_stopped_in
    progress = task_progress(task)
    assert progress["allocated"] == progress["sending"] == 0, progress
    assert progress["unknown"] == 0, progress  # nothing was abandoned on the wire
    received = len(sink.handler.messages)
    assert progress["sent"] == received, (progress, received)  # on the wire → recorded
    assert progress["pending"] == progress["total"] - received  # claimed → back
    assert not SubTask.objects.filter(task=task, status="allocated").exists()
