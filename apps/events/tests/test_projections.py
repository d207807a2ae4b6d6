"""Projections against a real PostgreSQL: commit order, counting once, rebuilding."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from apps.events import projections
from apps.events.models import OwnerDailyCount, ProcessedEvent, Projection, TaskDailyCount
from apps.events.services import event_append
from apps.events.tests.conftest import append

pytestmark = pytest.mark.django_db(transaction=True)


def counts(model=OwnerDailyCount) -> list[tuple]:
    fields = ["owner_id", *(["task_id"] if model is TaskDailyCount else []), "day"]
    return sorted(model.objects.values_list(*fields, *model.COUNTERS))


def owner_totals(user) -> dict[str, int]:
    row = OwnerDailyCount.objects.get(owner=user)
    return {name: getattr(row, name) for name in OwnerDailyCount.COUNTERS if getattr(row, name)}


def test_the_counters_follow_the_event_types_per_owner_and_task(user, other_user):
    append("task.queued", user, recipients=5, task_id=7)
    for _ in range(3):
        append("subtask.sent", user, task_id=7)
    append("subtask.failed", user, task_id=7)
    append("subtask.dead", user, task_id=8)
    append("contact.unsubscribed", user, task_id=7)
    append("contact.bounced", user)
    append("subtask.opened", user, task_id=7)
    append("subtask.clicked", user, task_id=7, count=2)
    append("tag.created", user)
    append("subtask.sent", other_user, task_id=9)
    for name in projections.PROJECTIONS:
        projections.projection_catch_up(name=name)
    assert owner_totals(user) == {
        "queued": 5,
        "sent": 3,
        "failed": 2,
        "unsubscribed": 1,
        "bounced": 1,
        "opened": 1,
        "clicked": 2,
    }
    tasks = {row.task_id: row for row in TaskDailyCount.objects.all()}
    assert (tasks[7].queued, tasks[7].sent, tasks[7].failed, tasks[8].failed) == (5, 3, 1, 1)
    assert tasks[9].owner_id == other_user.pk and tasks[9].sent == 1


def test_an_event_that_commits_after_a_higher_id_is_still_counted(user):
    """The hazard of bigserial ids: the first transaction takes the lower id but commits
    last. A checkpoint "id > N" would skip it; the projection must not."""
    holding = threading.Event()
    release = threading.Event()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                event_append("subtask.sent", owner=user, payload={"n": "early id"})
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert holding.wait(10)
    late = append("subtask.sent", user, n="later id, committed first")
    projections.projection_catch_up(name="owner_daily")
    # The later event is not counted past the running transaction either: nothing can
    # appear behind the checkpoint.
    assert not OwnerDailyCount.objects.exists()
    release.set()
    writer.join()
    projections.projection_catch_up(name="owner_daily")
    assert owner_totals(user) == {"sent": 2}
    assert Projection.objects.get(name="owner_daily").position_id == late.pk
    assert ProcessedEvent.objects.filter(projection="owner_daily").count() == 2


def test_the_same_event_read_twice_counts_once(user):
    for _ in range(4):
        append("subtask.sent", user, task_id=1)
    projections.projection_catch_up(name="owner_daily")
    assert owner_totals(user) == {"sent": 4}
    # As if the checkpoint were lost (restored from a backup): everything is read again.
    Projection.objects.filter(name="owner_daily").update(position_txid=0, position_id=0)
    projections.projection_catch_up(name="owner_daily")
    assert owner_totals(user) == {"sent": 4}


def test_a_rebuilt_projection_equals_the_live_one(user, other_user, staff_user):
    for round_ in range(3):
        for who in (user, other_user):
            task_id = 10 * who.pk + round_
            append("task.queued", who, recipients=10, task_id=task_id)
            for _ in range(round_ + 2):
                append("subtask.sent", who, task_id=task_id)
            append("contact.complained", who, task_id=task_id)
        for name in projections.PROJECTIONS:
            projections.projection_run(name=name, limit=3)  # live: small rounds
    for name in projections.PROJECTIONS:
        projections.projection_catch_up(name=name)
    live = (counts(OwnerDailyCount), counts(TaskDailyCount))
    assert live[0] and live[1]

    for name in projections.PROJECTIONS:
        projections.projection_reset(name=name, actor=staff_user)
    assert not OwnerDailyCount.objects.exists() and not TaskDailyCount.objects.exists()
    for name in projections.PROJECTIONS:
        projections.projection_catch_up(name=name)
    assert (counts(OwnerDailyCount), counts(TaskDailyCount)) == live


def test_a_paused_projection_waits_and_resumes_where_it_stopped(user, staff_user):
    append("subtask.sent", user)
    projections.projection_pause(name="owner_daily", actor=staff_user)
    assert projections.projection_run(name="owner_daily").skipped
    status = {p["name"]: p for p in projections.projections_status()}["owner_daily"]
    assert status["status"] == "paused" and status["lag_seconds"] >= 0
    projections.projection_resume(name="owner_daily", actor=staff_user)
    projections.projection_catch_up(name="owner_daily")
    assert owner_totals(user) == {"sent": 1}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT type, actor_id FROM events_event WHERE type LIKE 'projection.%%' ORDER BY id"
        )
        assert cursor.fetchall() == [
            ("projection.paused", staff_user.pk),
            ("projection.resumed", staff_user.pk),
        ]
