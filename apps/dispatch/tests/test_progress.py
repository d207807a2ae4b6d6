"""Progress counters kept by triggers: exact after every kind of write, folded by
compaction without a count lost, checked and repaired by ``check_task_progress``.

(Every dispatch test also ends with ``progress.mismatches() == []``: see conftest.)"""

from __future__ import annotations

import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from apps.dispatch import progress, services
from apps.dispatch.models import ProgressDelta, SubTask, Task
from apps.dispatch.selectors import task_progress
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done


def _counted(task) -> dict[str, int]:
    """The statuses of a task's subtasks, counted the slow way."""
    rows = SubTask.objects.filter(task=task).values_list("status", flat=True)
    counts: dict[str, int] = {}
    for status in rows:
        counts[status] = counts.get(status, 0) + 1
    return counts


def _nonzero(progress_row: dict) -> dict[str, int]:
    return {k: v for k, v in progress_row.items() if v and k not in ("total", "sending")}


@pytest.mark.django_db
def test_queueing_counts_pending_and_skipped(make_user, make_contacts, pool):
    owner = make_user()
    make_contacts(owner, 7)
    make_contacts(owner, 3, prefix="gone", status="unsubscribed")
    task = queue_task(owner)
    row = task_progress(task)
    assert row["total"] == 10 and row["pending"] == 7 and row["skipped"] == 3
    assert _nonzero(row) == _counted(task)


@pytest.mark.django_db
def test_pause_cancel_and_direct_writes_move_the_counters(make_user, make_contacts, pool):
    owner = make_user()
    make_contacts(owner, 12)
    task = queue_task(owner)
    first, second = SubTask.objects.filter(task=task).order_by("id")[:2]
    SubTask.objects.filter(pk=first.pk).update(status="sent")
    SubTask.objects.filter(pk=second.pk).update(status="failed")
    SubTask.objects.filter(task=task, status="pending").update(attempts=1)  # no status change
    services.task_pause(task=task)
    services.task_cancel(task=task)
    row = task_progress(task)
    assert row == {**row, "total": 12, "sent": 1, "failed": 1, "cancelled": 10, "pending": 0}
    assert _nonzero(row) == _counted(task)
    SubTask.objects.filter(pk=first.pk).delete()
    assert task_progress(task)["total"] == 11 and task_progress(task)["sent"] == 0


@pytest.mark.django_db
def test_deleting_a_task_leaves_nothing_after_compaction(make_user, make_contacts, pool):
    owner = make_user()
    make_contacts(owner, 5)
    task = queue_task(owner)
    task_id = task.pk
    SubTask.objects.filter(task=task).delete()
    Task.objects.filter(pk=task_id).delete()
    assert ProgressDelta.objects.filter(task_id=task_id).exists()  # +5 and -5, unfolded
    progress.compact()
    assert not ProgressDelta.objects.filter(task_id=task_id).exists()


@pytest.mark.django_db
def test_compaction_folds_rows_and_keeps_the_counts(make_user, make_contacts, pool):
    owner = make_user()
    make_contacts(owner, 60)
    task = queue_task(owner)
    for subtask in SubTask.objects.filter(task=task).order_by("id")[:50]:
        SubTask.objects.filter(pk=subtask.pk).update(status="sent")  # one row per statement
    before = task_progress(task)
    assert ProgressDelta.objects.filter(task_id=task.pk).count() > progress.COMPACT_ABOVE
    assert progress.compact() > progress.COMPACT_ABOVE
    assert task_progress(task) == before
    (folded,) = ProgressDelta.objects.filter(task_id=task.pk).values("pending", "sent", "failed")
    assert folded == {"pending": 10, "sent": 50, "failed": 0}
    # A task with few rows is left alone.
    assert progress.compact() == 0


@pytest.mark.django_db(transaction=True)
def test_compaction_while_writers_append(make_user, make_contacts, pool):
    """Two compactions in a loop while two writers change statuses one row at a time:
    nothing is counted twice or lost."""
    owner = make_user()
    make_contacts(owner, 400)
    task = queue_task(owner)
    ids = list(SubTask.objects.filter(task=task).order_by("id").values_list("id", flat=True))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(part: list[int]) -> None:
        try:
            for pk in part:
                SubTask.objects.filter(pk=pk).update(status="sent")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    def compactor() -> None:
        try:
            while not stop.is_set():
                progress.compact(above=2)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    writers = [threading.Thread(target=writer, args=(ids[k::2],)) for k in range(2)]
    compactors = [threading.Thread(target=compactor) for _ in range(2)]
    for thread in writers + compactors:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in compactors:
        thread.join()
    assert errors == []
    assert progress.mismatches() == []
    assert task_progress(task)["sent"] == 400


@pytest.mark.django_db(transaction=True)
def test_counters_stay_exact_while_dispatching(make_user, make_contacts, make_service, smtp_sink):
    """Two dispatchers sending while a third thread folds the counters' rows all the
    time: the counters match a count of the subtasks in every sample (one snapshot
    each), and in the end."""
    owner = make_user()
    make_contacts(owner, 150)
    for _ in range(3):
        make_service(port=smtp_sink.port)
    task = queue_task(owner)
    samples = []
    stop = threading.Event()

    def compactor() -> None:
        try:
            while not stop.is_set():
                progress.compact(above=1)
        finally:
            connections.close_all()

    def check(row):
        samples.append(progress.mismatches([task.pk]))

    folding = threading.Thread(target=compactor)
    folding.start()
    try:
        with ThreadedDispatcher(), ThreadedDispatcher():
            row = wait_done(task, timeout=60, check=check)
    finally:
        stop.set()
        folding.join()
    assert row["sent"] == 150
    assert len(samples) > 3 and all(sample == [] for sample in samples)
    assert ProgressDelta.objects.filter(task_id=task.pk).count() == 1  # folded


@pytest.mark.django_db
def test_check_command_finds_and_repairs(make_user, make_contacts, pool):
    owner = make_user()
    make_contacts(owner, 4)
    task = queue_task(owner)
    call_command("check_task_progress")  # consistent: no error
    with connection.cursor() as cursor:  # a counter gone wrong (a write made with triggers off)
        cursor.execute(
            "INSERT INTO dispatch_progressdelta (task_id, sent) VALUES (%s, 2)",
            [task.pk],
        )
    assert task_progress(task)["sent"] == 2  # the counters are what progress reads
    with pytest.raises(CommandError, match="--repair"):
        call_command("check_task_progress", task=[task.pk])
    call_command("check_task_progress", repair=True)
    assert progress.mismatches() == []
    row = task_progress(task)
    assert row["sent"] == 0 and row["pending"] == 4 and row["total"] == 4


@pytest.mark.django_db(transaction=True)
def test_migration_counts_the_subtasks_already_there(make_user, make_contacts, pool):
    owner = make_user()
    make_contacts(owner, 6)
    task = queue_task(owner)
    SubTask.objects.filter(pk=SubTask.objects.filter(task=task).first().pk).update(status="sent")
    call_command("migrate", "dispatch", "0004", verbosity=0)
    with connection.cursor() as cursor:  # written while no trigger existed
        cursor.execute(
            "UPDATE dispatch_subtask SET status = 'failed' WHERE id = "
            "(SELECT min(id) FROM dispatch_subtask WHERE task_id = %s AND status = 'pending')",
            [task.pk],
        )
    call_command("migrate", "dispatch", verbosity=0)
    row = task_progress(task)
    assert (row["sent"], row["failed"], row["pending"], row["total"]) == (1, 1, 4, 6)
