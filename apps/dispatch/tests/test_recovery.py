"""Stuck-work recovery, dispatcher slots, the q2 entry points and the commands."""

from __future__ import annotations

import signal
import threading
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.db.models import F
from django.utils import timezone

from apps.dispatch import tasks
from apps.dispatch.dlq import dead_letters_auto_reprocess, dead_letters_cleanup
from apps.dispatch.engine import slots
from apps.dispatch.models import DeadLetter, DispatcherSlot, SendChunk, SubTask, TaskQueue
from apps.dispatch.recovery import RECOVERY_LOCK_KEY, recover_stuck
from apps.dispatch.selectors import task_progress
from apps.dispatch.tests.helpers import (
    chunk_in_progress,
    queue_task,
    spawn_dispatcher,
    stderr_of,
    wait_until,
)


@pytest.fixture
def task(user, pool, make_contacts):
    make_contacts(user, 4)
    return queue_task(user)


def _subtasks(task):
    return list(SubTask.objects.filter(task=task).order_by("id"))


def test_expired_leases_go_back_or_become_unknown(user, pool, make_contacts, set_config):
    make_contacts(user, 6)
    task = queue_task(user)
    a, b1, b2, b3, c, d = _subtasks(task)
    past = timezone.now() - timedelta(seconds=5)
    SubTask.objects.filter(pk=a.pk).update(status="allocated", lease_expires_at=past)
    dead = chunk_in_progress([b1, b2, b3], position=1)  # b1 accepted, b2 on the wire
    live = chunk_in_progress([c], position=0, expired=False)
    TaskQueue.objects.filter(task=task).update(ready_at=None)

    result = recover_stuck()

    assert (result["sent"], result["released"], result["unknown"], result["resent"]) == (
        1,
        2,
        1,
        0,
    )
    statuses = {s.pk: s.status for s in _subtasks(task)}
    assert statuses == {
        a.pk: "pending",
        b1.pk: "sent",
        b2.pk: "unknown",
        b3.pk: "pending",
        c.pk: "allocated",
        d.pk: "pending",
    }
    assert SubTask.objects.get(pk=b2.pk).error_class == "ambiguous"
    assert SubTask.objects.get(pk=b2.pk).attempts == 1
    assert not SendChunk.objects.filter(pk=dead.pk).exists()
    assert SendChunk.objects.filter(pk=live.pk).exists()
    assert task_progress(task)["sending"] == 1  # c, on the wire of a live dispatcher
    assert TaskQueue.objects.get(task=task).ready_at is not None


def test_recovery_never_touches_a_subtask_claimed_again(task):
    """A chunk row outlives the claim of a subtask its dispatcher handed back (a paused
    task): recovery of that chunk leaves the subtask's new claim alone."""
    a, b, c, d = _subtasks(task)
    chunk_in_progress([a, b, c], position=0)
    # b was handed back and claimed by another dispatcher (new token, fresh lease).
    SubTask.objects.filter(pk=b.pk).update(
        attempt_token=F("attempt_token") + 1, lease_expires_at=timezone.now() + timedelta(60)
    )
    result = recover_stuck()
    statuses = {s.pk: s.status for s in _subtasks(task)}
    assert statuses == {a.pk: "unknown", b.pk: "allocated", c.pk: "pending", d.pk: "pending"}
    assert result["released"] == 1


def test_resend_ambiguous_sends_unknown_messages_again(task, set_config):
    set_config(recovery__resend_ambiguous=True)
    first = _subtasks(task)[0]
    chunk_in_progress([first], position=0)
    result = recover_stuck()
    assert result["resent"] == 1 and result["unknown"] == 0
    again = SubTask.objects.get(pk=first.pk)
    assert again.status == "pending" and again.message_id == first.message_id


def test_a_task_that_stopped_moving_is_requeued_and_reported(task):
    SubTask.objects.filter(task=task).update(next_attempt_at=timezone.now() - timedelta(hours=1))
    TaskQueue.objects.filter(task=task).update(
        ready_at=None, served_at=timezone.now() - timedelta(hours=2)
    )
    result = recover_stuck(stuck_threshold=60)
    assert result["requeued_tasks"] == [task.pk]
    assert TaskQueue.objects.get(task=task).ready_at is not None
    assert recover_stuck(stuck_threshold=60)["requeued_tasks"] == []


@pytest.mark.django_db(transaction=True)
def test_recovery_is_a_singleton(user, pool, make_contacts):
    held = threading.Event()
    release = threading.Event()

    def hold_lock():
        with connections["default"].cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RECOVERY_LOCK_KEY])
            held.set()
            release.wait(10)
            cursor.execute("COMMIT")
        connections.close_all()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    try:
        assert held.wait(5)
        assert recover_stuck() == {"skipped": True}
        out = StringIO()
        call_command("recover_stuck_tasks", stdout=out)
        assert "another recovery pass" in out.getvalue()
    finally:
        release.set()
        thread.join()
    assert recover_stuck()["skipped"] is False


def test_recover_command_reports_what_it_did(task):
    SubTask.objects.filter(pk=_subtasks(task)[0].pk).update(
        status="allocated", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    out = StringIO()
    call_command("recover_stuck_tasks", stdout=out)
    assert "released 1 allocated" in out.getvalue()
    assert task_progress(task)["pending"] == 4


def test_slots_never_exceed_the_configured_number(db):
    first = slots.slot_acquire(limit=2)
    second = slots.slot_acquire(limit=2)
    assert first and second and first[0] != second[0]
    assert slots.slot_acquire(limit=2) is None
    assert slots.slots_live() == 2
    assert slots.slot_heartbeat(*first, limit=2)
    assert not slots.slot_heartbeat(*second, limit=1), "a lowered limit ends the loop"
    assert slots.slot_acquire(limit=2) is not None
    DispatcherSlot.objects.filter(number=first[0]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    taken = slots.slot_acquire(limit=2)
    assert taken is not None and taken[0] == first[0]
    assert not slots.slot_heartbeat(*first, limit=2), "the expired holder lost its slot"


def test_watchdog_enqueues_missing_loops(db, set_config):
    from django_q.models import OrmQ

    set_config(queue__dispatchers=3)
    slots.slot_acquire(limit=3)
    assert tasks.dispatch_watchdog() == "1 live, 3 wanted, 2 started"
    assert OrmQ.objects.count() == 2


def test_a_loop_without_a_free_slot_returns_at_once(db, set_config):
    set_config(queue__dispatchers=1)
    slots.slot_acquire(limit=1)
    assert tasks.dispatcher_loop(seconds=5) == "no free dispatcher slot"


@pytest.mark.django_db(transaction=True)
def test_a_q2_loop_runs_then_enqueues_its_successor(
    user, make_contacts, make_service, smtp_sink, set_config
):
    from django_q.models import OrmQ

    set_config(queue__dispatchers=1)
    make_contacts(user, 3)
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    assert OrmQ.objects.count() == 1, "queueing while no loop is live starts one"
    OrmQ.objects.all().delete()  # this test runs the loop itself
    summary = tasks.dispatcher_loop(seconds=1.5)
    assert summary.startswith("slot 0:") and task_progress(task)["sent"] == 3
    assert OrmQ.objects.count() == 1, "the successor is queued"
    assert slots.slots_live() == 0, "the slot is released for the successor"


@pytest.mark.django_db(transaction=True)
def test_dispatch_command_once_sends_and_stops(
    user, make_contacts, make_service, smtp_sink, set_config
):
    set_config(queue__batch_size=10, queue__concurrency=1)
    make_contacts(user, 3)
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    out = StringIO()
    call_command("dispatch", "--once", stdout=out)
    assert "3 claimed, 3 sent" in out.getvalue()
    assert len(smtp_sink.handler.messages) == 3
    assert task_progress(task)["sent"] == 3


def test_dispatch_command_with_no_wait_refuses_when_every_slot_is_taken(db, set_config):
    set_config(queue__dispatchers=1)
    slots.slot_acquire(limit=1)
    with pytest.raises(CommandError, match="no free dispatcher slot"):
        call_command("dispatch", "--once", "--no-wait")
    with pytest.raises(CommandError, match="--seconds"):
        call_command("dispatch", "--seconds", "0")


def test_dlq_auto_reprocess_and_retention(task, user, set_config):
    first, second = _subtasks(task)[:2]
    old = timezone.now() - timedelta(days=40)
    SubTask.objects.filter(pk__in=[first.pk, second.pk]).update(status="dead")
    DeadLetter.objects.create(
        subtask=first,
        task=task,
        owner=user,
        error_type="x",
        updated_at=timezone.now() - timedelta(hours=1),
    )
    DeadLetter.objects.create(
        subtask=second, task=task, owner=user, error_type="x", status="resolved", updated_at=old
    )
    assert dead_letters_auto_reprocess() == 0, "off by default"
    set_config(dlq__auto_reprocess_after=60)
    assert dead_letters_auto_reprocess() == 1
    assert SubTask.objects.get(pk=first.pk).status == "pending"
    assert dead_letters_cleanup() == 1
    assert tasks.dlq_maintenance() == {"reprocessed": 0, "deleted": 0}
    assert DeadLetter.objects.get().status == "reprocessing"


def test_schedules_are_declared():
    names = {entry["name"] for entry in tasks.SCHEDULES}
    assert {"dispatch-watchdog", "dispatch-recover-stuck"} <= names
    assert all(entry["minutes"] >= 1 for entry in tasks.SCHEDULES)
    assert connection.vendor == "postgresql"


@pytest.mark.django_db(transaction=True)
def test_a_loop_whose_slot_is_withdrawn_stops_without_successor(set_config):
    from django_q.models import OrmQ

    set_config(queue__dispatchers=2)

    def withdraw():
        set_config(queue__dispatchers=0)
        connections.close_all()

    stopper = threading.Timer(0.3, withdraw)
    started = time.monotonic()
    stopper.start()
    try:
        summary = tasks.dispatcher_loop(seconds=20)
    finally:
        stopper.cancel()
        connections.close_all()
    assert summary.startswith("slot 0:")
    assert time.monotonic() - started < 5
    assert OrmQ.objects.count() == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_dispatcher_started_while_every_slot_is_held_waits_and_takes_the_freed_one(
    set_config, user, make_contacts, make_service, smtp_sink
):
    """A restart right after a crash: the dead loop's slot lease still runs. The new
    ``manage.py dispatch`` stands by instead of exiting, then takes the slot and sends."""
    set_config(queue__dispatchers=1)
    # The crashed loop's lease, long enough to outlast the start of the new process on a
    # loaded machine; the test lets it run out once the new one stands by.
    slots.slot_acquire(limit=1, ttl=120)
    make_contacts(user, 3)
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    process = spawn_dispatcher("--seconds", "20")
    try:
        assert "waiting as a standby" in process.stdout.readline()
        time.sleep(2)
        assert process.poll() is None, "the standby exited"
        assert task_progress(task)["sent"] == 0
        DispatcherSlot.objects.filter(number=0).update(expires_at=timezone.now())
        assert "running in slot 0" in process.stdout.readline()  # once the lease ran out
        wait_until(lambda: task_progress(task)["sent"] == 3, timeout=20, message="3 sent")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_standby_dispatcher_shows_its_stacks_at_sigusr1_and_stops_at_sigterm(set_config):
    set_config(queue__dispatchers=1)
    slots.slot_acquire(limit=1, ttl=60)
    process = spawn_dispatcher()
    assert "waiting as a standby" in process.stdout.readline()
    process.send_signal(signal.SIGUSR1)
    wait_until(lambda: "_wait_for_slot" in stderr_of(process), timeout=10, message="its stacks")
    assert "most recent call first" in stderr_of(process)
    assert process.poll() is None  # it goes on standing by
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert time.monotonic() - started < 5
    assert "stopped while waiting" in out


# --- loops start at once --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_queueing_while_no_loop_is_live_starts_the_loops_at_once(
    user, make_contacts, make_service, set_config
):
    from django_q.models import OrmQ

    set_config(queue__dispatchers=2)
    make_contacts(user, 2)
    make_service(port=1)
    queue_task(user)
    assert OrmQ.objects.count() == 2, "as many loops as queue.dispatchers, at once"
    queue_task(user)
    assert OrmQ.objects.count() == 2, "loops already on their way are not started twice"
    assert tasks.dispatcher_loops_ensure() == 0


def test_no_loop_is_started_while_enough_are_live(db, set_config):
    from django_q.models import OrmQ

    set_config(queue__dispatchers=2)
    slots.slot_acquire(limit=2)
    assert tasks.dispatcher_loops_ensure() == 1
    slots.slot_acquire(limit=2)
    OrmQ.objects.all().delete()
    assert tasks.dispatcher_loops_ensure() == 0 and not OrmQ.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_new_cluster_sends_its_first_mail_within_seconds(
    user, make_contacts, make_service, smtp_sink, set_config
):
    """No watchdog schedule, no loop enqueued: the cluster's workers start the loops as
    they start (q2's schedules would tick up to a minute later)."""
    import os
    import signal
    import subprocess
    import time

    from django_q.models import OrmQ, Schedule

    from apps.dispatch.tests.helpers import spawn_qcluster, wait_done

    set_config(queue__dispatchers=1)
    make_contacts(user, 3)
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    OrmQ.objects.all().delete()  # as if the loops queued with it were lost
    assert not Schedule.objects.exists()
    started = time.time()
    cluster = spawn_qcluster()
    try:
        wait_done(task, timeout=25)
        first_mail = min(m.received_at for m in smtp_sink.handler.messages)
    finally:
        os.killpg(cluster.pid, signal.SIGINT)  # the whole group: its loop stops at once
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
    elapsed = first_mail - started
    assert task_progress(task)["sent"] == 3
    assert elapsed < 15, f"first mail {elapsed:.1f} s after the cluster started"
