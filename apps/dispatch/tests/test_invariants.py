"""DESIGN.md's dispatch invariants, with several real dispatcher processes at once.

Each test runs ``manage.py dispatch`` subprocesses against the test database and real
aiosmtpd servers, and checks what the servers received.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.dispatch import progress as progress_lib
from apps.dispatch import services
from apps.dispatch.models import SubTask, Task
from apps.dispatch.recovery import recover_stuck
from apps.dispatch.selectors import task_progress
from apps.dispatch.tests.helpers import (
    ThreadedDispatcher,
    queue_task,
    spawn_dispatcher,
    stderr_of,
    wait_done,
    wait_until,
)
from apps.dispatch.tests.smtp import SlowHandler, start
from apps.monitoring.models import TaskWaitMetric

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def conserved(progress: dict) -> None:
    parts = sum(value for key, value in progress.items() if key != "total")
    assert parts == progress["total"], progress


# How long a dispatcher may take to stop at SIGTERM here: its messages on the wire finish
# and are recorded, its connections close (a second or two on a loaded machine; a standby's
# stop is timed in test_recovery). One that takes longer fails with the stacks of its
# threads (SIGUSR1).
STOP_WITHIN = 60


class Dispatchers:
    """Several ``manage.py dispatch`` processes; stopped (SIGTERM) on exit."""

    def __init__(self, count: int, *args: str) -> None:
        self.processes = [spawn_dispatcher(*args) for _ in range(count)]

    def __enter__(self) -> Dispatchers:
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=STOP_WITHIN)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGUSR1)  # its threads' stacks, to its stderr
                time.sleep(1)
                process.kill()
                process.wait()
                raise AssertionError(
                    f"a dispatcher did not stop within {STOP_WITHIN} s of its SIGTERM: "
                    f"{stderr_of(process)}"
                ) from None
        for process in self.processes:
            assert process.returncode in (0, -signal.SIGKILL), stderr_of(process)


def test_several_dispatchers_send_each_message_once_within_rate_and_quota(
    user, make_contacts, make_service, set_config
):
    set_config(queue__dispatchers=3, queue__concurrency=4, queue__batch_size=40)
    make_contacts(user, 160)
    sink = start(SlowHandler(delay=0.002))
    try:
        fast = [make_service(port=sink.port, name=f"fast{i}") for i in range(3)]
        limited = make_service(port=sink.port, name="limited", sending_rate=0.1)
        quota = make_service(port=sink.port, name="quota", sending_rate=0.05, daily_quota=7)
        task = queue_task(user)
        samples = []

        def check(progress):
            conserved(progress)
            # The counters equal a count of the subtasks, in one snapshot.
            assert progress_lib.mismatches([task.pk]) == []
            samples.append(progress)

        with Dispatchers(3):
            progress = wait_done(task, timeout=60, check=check)
    finally:
        sink.stop()

    assert progress["sent"] == 160 and len(samples) > 3
    received = sink.handler.messages
    assert Counter(m.rcpt_tos[0] for m in received) == Counter(
        SubTask.objects.filter(task=task).values_list("to_email", flat=True)
    )
    by_sender = defaultdict(list)
    for message in received:
        by_sender[message.mail_from].append(message.received_at)
    for service, rate in ((limited, 0.1), (quota, 0.05)):
        times = sorted(by_sender[service.from_email])
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert times and min(gaps, default=rate) >= rate - 0.005, (service.name, gaps)
    assert len(by_sender[quota.from_email]) <= 7
    assert sum(len(by_sender[s.from_email]) for s in fast) > 100
    # Every attempt carries the subtask's own Message-ID.
    ids = dict(SubTask.objects.filter(task=task).values_list("to_email", "message_id"))
    assert all(m.headers["Message-ID"] == ids[m.rcpt_tos[0]] for m in received)


def _recovered(task) -> bool:
    """Run recovery; whether the task has nothing left to send (conserved meanwhile)."""
    recover_stuck()
    progress = task_progress(task)
    conserved(progress)
    return progress["pending"] + progress["allocated"] + progress["sending"] == 0


def test_sigkill_of_a_dispatcher_loses_nothing(user, make_contacts, make_service, set_config):
    set_config(
        queue__dispatchers=3, queue__concurrency=2, queue__batch_size=8, queue__lease_seconds=5
    )
    make_contacts(user, 150)
    sink = start(SlowHandler(delay=0.03))
    try:
        for i in range(4):
            make_service(port=sink.port, name=f"s{i}")
        task = queue_task(user)
        with Dispatchers(3) as group:
            wait_until(
                lambda: task_progress(task)["sent"] >= 20, timeout=30, message="sending to start"
            )
            victim = group.processes[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)

            wait_until(
                lambda: _recovered(task), timeout=60, interval=0.3, message="the others to finish"
            )
        progress = task_progress(task)
    finally:
        sink.stop()

    # At most one message per open connection of the killed process was on the wire.
    assert progress["unknown"] <= 2
    assert progress["sent"] + progress["unknown"] == 150
    received = Counter(m.rcpt_tos[0] for m in sink.handler.messages)
    assert max(received.values()) == 1, "a message was sent twice"
    sent = set(SubTask.objects.filter(task=task, status="sent").values_list("to_email", flat=True))
    assert sent <= set(received)
    unknown = SubTask.objects.filter(task=task, status="unknown")
    assert all(s.error_class == "ambiguous" for s in unknown)


def test_a_small_task_starts_within_two_seconds_while_a_big_one_runs(
    user, other_user, make_contacts, make_service, set_config
):
    set_config(queue__concurrency=4, queue__batch_size=16)
    make_contacts(user, 3000)
    make_contacts(other_user, 10)
    sink = start(SlowHandler(delay=0.005))
    try:
        for i in range(4):
            make_service(port=sink.port, name=f"s{i}")
        big = queue_task(user)
        with ThreadedDispatcher():
            wait_until(lambda: task_progress(big)["sent"] >= 50, message="the big task")
            small = queue_task(other_user)
            queued = time.time()
            progress = wait_done(small, timeout=10)
            finished = time.time()
            big_progress = task_progress(big)
    finally:
        sink.stop()
    assert progress["sent"] == 10
    assert big_progress["pending"] > 0, "the big task must still be running"
    first = TaskWaitMetric.objects.get(task=small)
    assert first.wait_seconds <= 2.0
    assert finished - queued <= 5.0


def test_a_scheduled_task_starts_within_a_second_of_its_time(
    user, make_contacts, make_service, smtp_sink
):
    make_contacts(user, 3)
    make_service(port=smtp_sink.port)
    with ThreadedDispatcher():
        time.sleep(0.3)  # the loop is idle, sleeping
        when = timezone.now() + timedelta(seconds=2)
        task = queue_task(user, scheduled_at=when)
        assert task.status == Task.Status.SCHEDULED
        time.sleep(1.0)
        assert not smtp_sink.handler.messages
        wait_done(task, timeout=10)
    first = min(m.received_at for m in smtp_sink.handler.messages)
    assert abs(first - when.timestamp()) <= 1.0


def _settled(progress: dict) -> bool:
    return progress["sending"] == progress["allocated"] == 0


def test_pause_and_cancel_while_sending(user, make_contacts, make_service, set_config):
    set_config(queue__concurrency=2, queue__batch_size=4)
    make_contacts(user, 120)
    sink = start(SlowHandler(delay=0.01))
    try:
        make_service(port=sink.port)
        make_service(port=sink.port)
        task = queue_task(user)
        with ThreadedDispatcher():
            wait_until(lambda: task_progress(task)["sent"] >= 10, message="sending")
            services.task_pause(task=task)
            # Claimed subtasks go back when their dispatcher notices, before its next send.
            wait_until(lambda: _settled(task_progress(task)), message="in-flight")
            paused = task_progress(task)
            conserved(paused)
            time.sleep(0.5)
            assert task_progress(task) == paused, "nothing moves while paused"
            assert paused["allocated"] == 0 and paused["pending"] > 0

            services.task_resume(task=task)
            wait_until(
                lambda: task_progress(task)["sent"] >= paused["sent"] + 10, message="resumed"
            )
            services.task_cancel(task=task)
            wait_until(lambda: _settled(task_progress(task)), message="in-flight")
            cancelled = task_progress(task)
            time.sleep(0.5)
            assert task_progress(task) == cancelled
    finally:
        sink.stop()
    conserved(cancelled)
    assert cancelled["pending"] == cancelled["allocated"] == 0
    assert cancelled["cancelled"] > 0 and cancelled["sent"] + cancelled["cancelled"] == 120
    assert len(sink.handler.messages) == cancelled["sent"]
    task.refresh_from_db()
    assert task.status == Task.Status.CANCELLED


def test_a_django_q2_cluster_runs_loops_with_successors(
    user, make_contacts, make_service, smtp_sink, set_config
):
    import os
    import subprocess

    from django_q.models import Success
    from django_q.tasks import async_task

    from apps.dispatch.tests.helpers import spawn_qcluster

    set_config(queue__dispatchers=1)
    make_contacts(user, 5)
    make_service(port=smtp_sink.port)
    async_task("apps.dispatch.tasks.dispatcher_loop", 1.5)
    cluster = spawn_qcluster()
    try:
        wait_until(
            lambda: Success.objects.filter(func__endswith="dispatcher_loop").exists(),
            timeout=30,
            message="a first loop to finish",
        )
        task = queue_task(user)  # the successor loop sends it
        wait_done(task, timeout=30, check=conserved)
        wait_until(
            lambda: Success.objects.filter(func__endswith="dispatcher_loop").count() >= 2,
            timeout=30,
            message="the successor loop",
        )
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # The whole group: the cluster's worker processes too.
            os.killpg(cluster.pid, signal.SIGKILL)
    assert task_progress(task)["sent"] == 5
    assert len(smtp_sink.handler.messages) == 5


def test_ctrl_c_stops_a_cluster_loop_at_once_without_a_successor(
    make_service, smtp_sink, set_config
):
    """Ctrl-C reaches the cluster's whole process group: the loop (asked to run two
    minutes) stops within seconds, gives its slot back and enqueues no successor, so the
    cluster, which waits for its workers' tasks, stops too."""
    import os

    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from apps.dispatch.engine.slots import slots_live
    from apps.dispatch.tests.helpers import spawn_qcluster

    # One loop: the cluster's workers start none beside the one enqueued here (no relay
    # loop either).
    set_config(queue__dispatchers=1, events__relays=0)
    make_service(port=smtp_sink.port)
    async_task("apps.dispatch.tasks.dispatcher_loop", 120.0)
    cluster = spawn_qcluster()
    try:
        wait_until(lambda: slots_live() == 1, timeout=30, message="the loop to take a slot")
        OrmQ.objects.all().delete()  # so that a successor would show
        os.killpg(cluster.pid, signal.SIGINT)
        started = time.monotonic()
        cluster.wait(timeout=30)
        stopped_in = time.monotonic() - started
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
    assert stopped_in < 15
    assert slots_live() == 0
    assert not OrmQ.objects.exists()


@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_after_a_pause_or_cancel_at_most_the_messages_it_reports_on_the_wire_are_sent(
    action, api, user, make_contacts, make_service, set_config
):
    """The response of ``POST /api/tasks/<id>/pause`` or ``…/cancel`` says what may still
    be delivered: ``sending``, at most one message per open connection. Rate-limited
    services keep accepted messages in their chunk (written ``sent`` when it ends) while
    they wait for their next slot; those are ``sent`` in the response already."""
    set_config(queue__dispatchers=2, queue__concurrency=4)
    make_contacts(user, 300)
    sink = start(SlowHandler(delay=0.01))
    try:
        for i in range(3):
            make_service(port=sink.port, name=f"rated{i}", sending_rate=0.1)
        task = queue_task(user)
        with Dispatchers(2):
            wait_until(lambda: len(sink.handler.messages) >= 25, timeout=30, message="sending")
            response = api.post(f"/api/tasks/{task.pk}/{action}")
            answered = time.time()
            assert response.status_code == 200, response.data
            reported = response.data["progress"]
            wait_until(
                lambda: _settled(task_progress(task)), timeout=30, message="the chunks to end"
            )
            time.sleep(0.5)
            final = task_progress(task)
    finally:
        sink.stop()
    conserved(final)
    assert reported["sending"] <= 3  # one connection per service
    assert final["sent"] - reported["sent"] <= reported["sending"], (reported, final)
    arrived_after = [m for m in sink.handler.messages if m.received_at > answered]
    assert len(arrived_after) <= reported["sending"]
    assert len(sink.handler.messages) == final["sent"]


def test_hundreds_of_connections_to_a_slow_server_survive_sigkills(
    user, make_contacts, make_service, set_config
):
    """Three dispatcher processes at the default sizing (one connection per ready
    service) against servers that answer every command after 20 ms, 240 services,
    some rate-limited: two processes are killed mid-sending. Every recipient gets one
    message at most, the lost ones are ``unknown`` (at most one per connection of the
    killed processes), the rest is delivered, and no rate-limited service ever had two
    messages closer than its rate — across the kills too."""
    import gc

    from apps.dispatch.tests.smtp import LatencyHandler, start_latency_process

    set_config(queue__dispatchers=3, queue__max_connections=300, queue__lease_seconds=6)
    make_contacts(user, 2400)
    sink = start(LatencyHandler(latency=0.02))
    # The rate-limited services' server apart, in a process of its own: the receive
    # times it notes (what proves the rate limits) are not held up behind the traffic of
    # 220 other connections, nor by this process.
    rated_sink = start_latency_process(0.02)
    rated_received: list = []
    gc.disable()
    try:
        for i in range(220):
            make_service(port=sink.port, name=f"fast{i}")
        rated = [
            make_service(port=rated_sink.port, name=f"rated{i}", sending_rate=0.2)
            for i in range(20)
        ]
        task = queue_task(user)
        with Dispatchers(3) as group:
            for victim, after in zip(group.processes[:2], (300, 900), strict=True):
                wait_until(
                    lambda after=after: len(sink.handler.messages) >= after,
                    timeout=60,
                    message=f"{after} messages",
                )
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=10)
            wait_until(lambda: _recovered(task), timeout=120, interval=0.5, message="the survivor")
        progress = task_progress(task)
    finally:
        gc.enable()
        sink.stop()
        rated_received = rated_sink.stop()
    received = Counter(m.rcpt_tos[0] for m in sink.handler.messages)
    received.update(rcpt_tos[0] for _, rcpt_tos, _ in rated_received)
    twice = [to for to, count in received.items() if count > 1]
    assert max(received.values()) == 1, ("a message was sent twice", _subtasks(task, twice))
    assert progress["unknown"] <= 2 * 100  # one per open connection of each killed loop
    # The counters are a count of the rows, and every row is sent or unknown.
    assert progress_lib.mismatches([task.pk]) == []
    assert progress["sent"] + progress["unknown"] == 2400, (progress, _subtasks(task))
    sent = set(SubTask.objects.filter(task=task, status="sent").values_list("to_email", flat=True))
    assert sent <= set(received)
    by_sender = defaultdict(list)
    for mail_from, _, received_at in rated_received:
        by_sender[mail_from].append(received_at)
    assert len(by_sender) == 20
    # A receive time is noted when the server's loop gets the processor: on a loaded
    # machine that can be late, and a gap then looks shorter than it was on the wire by
    # as much as the server was late (measured by the server itself) noting its first
    # message.
    for service in rated:
        for a, b in itertools.pairwise(sorted(by_sender[service.from_email])):
            slack = 0.005 + rated_sink.late_by(a)
            assert b - a >= 0.2 - slack, (service.name, b - a, slack)


def _subtasks(task, to_emails: list[str] | None = None) -> list[tuple]:
    """What a failure message shows: the given recipients' subtasks, or the first of
    those neither sent nor unknown (status, attempts, error, history)."""
    rows = SubTask.objects.filter(task=task)
    if to_emails is None:
        rows = rows.exclude(status__in=("sent", "unknown"))
    else:
        rows = rows.filter(to_email__in=to_emails)
    return list(rows.values_list("to_email", "status", "attempts", "last_error", "history")[:20])


def test_a_rate_limited_service_prepares_its_next_message_before_its_slot(
    user, make_contacts, make_service, set_config
):
    """Against a server that answers after 50 ms, a service limited to one message per
    0.3 s starts each next transaction (MAIL, RCPT, DATA) before its slot and holds only
    the final ".": its messages are committed 0.3 s apart, not 0.3 s plus three round
    trips."""
    from apps.dispatch.tests.smtp import LatencyHandler

    make_contacts(user, 8)
    sink = start(LatencyHandler(latency=0.05))
    try:
        service = make_service(port=sink.port, sending_rate=0.3)
        task = queue_task(user)
        with ThreadedDispatcher():
            wait_done(task, timeout=30)
    finally:
        sink.stop()
    received = sorted(m.received_at for m in sink.handler.messages)
    mails = sorted(sink.handler.mail_at[service.from_email])
    assert len(received) == 8
    gaps = [b - a for a, b in itertools.pairwise(received)]
    assert min(gaps) >= 0.3 - 0.005
    # Each next MAIL FROM arrived before the previous message's slot had passed.
    early = [
        mail for mail, previous in zip(mails[1:], received, strict=False) if mail < previous + 0.3
    ]
    assert len(early) >= 6, (mails, received)


def test_a_dispatcher_out_of_file_descriptors_opens_fewer_connections_and_loses_nothing(
    user, make_contacts, make_service, set_config
):
    """A dispatcher process allowed 100 open files, 150 ready services and enough
    recipients for a first chunk on each (16 messages): it cannot open a connection for
    each. The connections it cannot open are this machine's shortage, not the services'
    fault: no service is cooled down or disabled, the claimed work goes
    back at once, and every recipient gets exactly one message through the connections
    it could open."""
    import resource

    from apps.dispatch.tests.smtp import LatencyHandler
    from apps.services.models import EmailService

    set_config(queue__dispatchers=1)
    make_contacts(user, 2400)
    sink = start(LatencyHandler(latency=0.01))

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))

    process = spawn_dispatcher(preexec_fn=few_files)
    try:
        for i in range(150):
            make_service(port=sink.port, name=f"s{i}")
        process.stdout.readline()  # the loop runs
        task = queue_task(user)
        progress = wait_done(task, timeout=90, check=conserved)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        sink.stop()
    stderr = stderr_of(process)
    assert process.returncode == 0, stderr[-3000:]
    assert progress["sent"] == 2400
    assert Counter(Counter(m.rcpt_tos[0] for m in sink.handler.messages).values()) == {1: 2400}
    assert "out of file descriptors: keeping to" in stderr
    kept = int(stderr.split("out of file descriptors: keeping to ")[-1].split()[0])
    assert 10 < kept < 100  # as many as the open files allow, not one
    assert not EmailService.objects.filter(consecutive_failures__gt=0).exists()
    assert not EmailService.objects.filter(is_enabled=False).exists()
