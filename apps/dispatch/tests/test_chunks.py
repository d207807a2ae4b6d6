"""The chunk row: per-message position moves, their fence, and what ends a chunk."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from apps.dispatch import services
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine import outcomes
from apps.dispatch.engine.tick import Claimed, ReservedService
from apps.dispatch.models import SendChunk, SubTask
from apps.dispatch.selectors import task_progress
from apps.dispatch.tests.helpers import queue_task
from apps.monitoring.models import TaskWaitMetric


def _service(service_id: int = 1) -> ReservedService:
    return ReservedService(
        id=service_id,
        pool_id=1,
        slots=10,
        old_next=timezone.now(),
        sending_rate=0.0,
        kind="smtp",
        host="127.0.0.1",
        port=25,
        security="none",
        username="",
        password_encrypted="",
        from_email="sender@example.com",
        from_name="",
    )


def _claim(task, *, lease: float = 60.0) -> list[Claimed]:
    """Claim every pending subtask of ``task`` the way a tick does."""
    SubTask.objects.filter(task=task, status="pending").update(
        status="allocated",
        attempt_token=F("attempt_token") + 1,
        lease_expires_at=timezone.now() + timedelta(seconds=lease),
    )
    return [
        Claimed(
            id=s.pk,
            task_id=s.task_id,
            owner_id=s.owner_id,
            token=s.attempt_token,
            to_email=s.to_email,
            message_id=s.message_id,
            attempts=s.attempts,
            created_at=s.created_at,
            had_failures=False,
            contact={},
        )
        for s in SubTask.objects.filter(task=task, status="allocated").order_by("id")
    ]


@pytest.fixture
def task(user, pool, make_contacts):
    make_contacts(user, 3)
    return queue_task(user)


@pytest.mark.parametrize("taken", [1, 3])
def test_a_claim_whose_subtasks_were_claimed_again_does_not_start(task, taken):
    """A claim that waited past its lease (a loaded dispatcher) may find its subtasks
    handed back by recovery and claimed again by another chunk, under a new token and a
    new lease: it writes no chunk row and sends nothing, whichever of its subtasks were
    taken, and the new claim starts."""
    stale = _claim(task)
    again = [c.id for c in stale[:taken]]
    SubTask.objects.filter(pk__in=again).update(status="pending", lease_expires_at=None)
    fresh = [c for c in _claim(task) if c.id in again]
    assert all(c.token == s.token + 1 for c, s in zip(fresh, stale, strict=False))
    assert outcomes.chunk_start(_service(), stale) == (None, [])
    assert not SendChunk.objects.exists()
    log, todo = outcomes.chunk_start(_service(2), fresh)
    assert log is not None and todo == fresh


def test_positions_move_until_the_task_is_paused(task):
    claimed = _claim(task)
    log, todo = outcomes.chunk_start(_service(), claimed)
    assert todo == claimed
    row = SendChunk.objects.get(pk=log.id)
    assert row.subtask_ids == [c.id for c in claimed] and row.position == -1
    pgconn = outcomes.advance_connection()
    assert outcomes.chunk_advance(log, 0, pgconn)
    assert SendChunk.objects.get(pk=log.id).position == 0
    assert task_progress(task)["sending"] == 1

    services.task_pause(task=task)
    assert not outcomes.chunk_advance(log, 1, pgconn)  # the epoch moved
    stopped = outcomes.chunk_recheck(log, {task.pk})
    assert stopped == {task.pk} and log.epoch == 1
    assert outcomes.drop_tasks(claimed[1:], stopped) == []
    statuses = dict(SubTask.objects.filter(task=task).values_list("pk", "status"))
    assert [statuses[c.id] for c in claimed] == ["allocated", "pending", "pending"]


def test_another_tasks_pause_costs_one_recheck_and_sending_goes_on(user, task, make_contacts):
    make_contacts(user, 2, tag="other", prefix="o")
    other = queue_task(user, tag="other", name="Other")
    claimed = _claim(task) + _claim(other)
    log, _ = outcomes.chunk_start(_service(), claimed)
    pgconn = outcomes.advance_connection()
    services.task_pause(task=other)
    assert not outcomes.chunk_advance(log, 0, pgconn)
    stopped = outcomes.chunk_recheck(log, {task.pk, other.pk})
    assert stopped == {other.pk}
    kept = outcomes.drop_tasks(claimed, stopped)
    assert [c.task_id for c in kept] == [task.pk] * 3
    assert outcomes.chunk_advance(log, 0, pgconn)  # the new epoch is adopted
    assert task_progress(other)["pending"] == 2


def test_a_lost_lease_stops_the_chunk(task):
    claimed = _claim(task)
    log, _ = outcomes.chunk_start(_service(), claimed)
    SendChunk.objects.filter(pk=log.id).update(lease_expires_at=timezone.now() - timedelta(hours=1))
    assert not outcomes.chunk_advance(log, 0, outcomes.advance_connection())
    assert outcomes.chunk_recheck(log, {task.pk}) is None


def test_a_chunk_whose_lease_already_ran_out_does_not_start(task):
    claimed = _claim(task, lease=-1)
    assert outcomes.chunk_start(_service(), claimed) == (None, [])
    assert not SendChunk.objects.exists()


def test_a_task_cancelled_before_its_chunk_starts_gets_its_subtasks_cancelled(task):
    claimed = _claim(task)
    services.task_cancel(task=task)
    log, todo = outcomes.chunk_start(_service(), claimed)
    assert log is not None and todo == []
    assert task_progress(task)["cancelled"] == 3


def test_finishing_a_chunk_records_sends_and_hands_back_the_rest(task, make_service):
    service = make_service(port=25)
    claimed = _claim(task)
    log, _ = outcomes.chunk_start(_service(service.pk), claimed)
    report = outcomes.ChunkReport(log=log, task_ids={task.pk})
    report.sent = claimed[:2]
    report.sent_at = [0.0, 0.0]  # time.monotonic() long ago: sent_at is in the past
    report.latencies = [0.01, 0.03]
    report.attempted = 2
    report.unattempted = claimed[2:]
    conf = DispatchSettings.load()
    outcomes.finish_chunk(
        dataclasses.replace(_service(service.pk), slots=3), report, conf=conf, wait_recorded=set()
    )
    progress = task_progress(task)
    assert progress == {**progress, "sent": 2, "pending": 1, "allocated": 0, "total": 3}
    sent = SubTask.objects.filter(task=task, status="sent")
    assert all(s.attempts == 1 and s.sent_at < timezone.now() for s in sent)
    assert not SendChunk.objects.exists()
    service.refresh_from_db()
    assert service.total_sent == 2
    assert TaskWaitMetric.objects.filter(task=task).count() == 1
