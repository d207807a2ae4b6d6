"""Dead-letter services: reprocess one, reprocess all by filter, statistics."""

from __future__ import annotations

import pytest

from apps.contacts.models import Tag
from apps.core.errors import ApplicationError
from apps.dispatch import services
from apps.dispatch.models import DeadLetter, SubTask, Task, TaskQueue
from apps.dispatch.selectors import dlq_stats


@pytest.fixture
def dead_task(user, pool, make_contacts):
    """A completed task of ``user`` whose 3 subtasks are dead letters (two error types)."""
    make_contacts(user, 3)
    task = services.task_create(
        owner=user,
        name="t",
        subject="s",
        body_text="b",
        include_tags=[Tag.objects.get(owner=user).pk],
    )
    services.task_queue(task=task)
    for index, subtask in enumerate(SubTask.objects.filter(task=task).order_by("id")):
        subtask.status = "dead"
        subtask.attempts = 6
        subtask.save()
        DeadLetter.objects.create(
            subtask=subtask,
            task=task,
            owner=user,
            error_type="smtp_451" if index < 2 else "transient",
            error_message="try later",
            history=[{"attempt": 1, "error": "451"}],
        )
    services.tasks_complete_finished()
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    return task


def test_reprocess_one_sends_it_again_with_attempts_reset(dead_task, user):
    entry = DeadLetter.objects.filter(task=dead_task).order_by("id").first()
    message_id = entry.subtask.message_id

    result = services.dead_letter_reprocess(dead_letter_id=entry.pk, owner=user)

    assert result.status == DeadLetter.Status.REPROCESSING and result.reprocess_count == 1
    subtask = SubTask.objects.get(pk=entry.subtask_id)
    assert (subtask.status, subtask.attempts, subtask.message_id) == ("pending", 0, message_id)
    dead_task.refresh_from_db()
    assert dead_task.status == Task.Status.QUEUED
    assert TaskQueue.objects.get(task=dead_task).ready_at is not None
    with pytest.raises(ApplicationError, match="reprocessing"):
        services.dead_letter_reprocess(dead_letter_id=entry.pk)


def test_reprocess_of_another_users_entry_does_not_exist(dead_task, other_user):
    entry = DeadLetter.objects.filter(task=dead_task).first()
    with pytest.raises(ApplicationError, match="does not exist"):
        services.dead_letter_reprocess(dead_letter_id=entry.pk, owner=other_user)
    assert DeadLetter.objects.get(pk=entry.pk).status == DeadLetter.Status.PENDING


def test_reprocess_all_by_error_type(dead_task, user, other_user):
    assert services.dead_letters_reprocess_all(owner=other_user) == 0
    assert services.dead_letters_reprocess_all(task_id=dead_task.pk, error_type="smtp_451") == 2
    assert SubTask.objects.filter(task=dead_task, status="pending").count() == 2
    assert services.dead_letters_reprocess_all(owner=user) == 1
    assert not SubTask.objects.filter(task=dead_task, status="dead").exists()


def test_reprocess_refuses_a_cancelled_task(dead_task):
    Task.objects.filter(pk=dead_task.pk).update(status="cancelled")
    entry = DeadLetter.objects.filter(task=dead_task).first()
    with pytest.raises(ApplicationError, match="cancelled"):
        services.dead_letter_reprocess(dead_letter_id=entry.pk)
    assert services.dead_letters_reprocess_all() == 0


def test_dlq_stats_count_by_status_and_error_type(dead_task, user, other_user):
    services.dead_letters_reprocess_all(error_type="transient")
    stats = dlq_stats()
    assert stats["total"] == 3
    assert stats["by_status"] == {"pending": 2, "reprocessing": 1, "resolved": 0, "expired": 0}
    assert stats["by_error_type"] == {"smtp_451": 2, "transient": 1}
    assert dlq_stats(owner=other_user)["total"] == 0
    assert services.dlq_stats(owner=user)["total"] == 3
