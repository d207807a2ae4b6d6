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


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_keeps_the_smtp_code_and_shows_its_times_as_moments(
    user, make_contacts, make_service, set_config, client, staff_user
):
    """Its error message starts with the server's code, the API gives each attempt's
    time in ISO 8601 and the admin in local time (never a Unix timestamp)."""
    import datetime as dt

    from django.urls import reverse
    from rest_framework.test import APIClient

    from apps.core.smtp_sink import SinkHandler
    from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done
    from apps.dispatch.tests.smtp import start

    (contact,) = make_contacts(user, 1)
    sink = start(SinkHandler(reject={contact.email: "451 4.3.0 mailbox busy, try later"}))
    try:
        set_config(dlq__immediate_error_types=["smtp_451"])
        make_service(port=sink.port)
        task = queue_task(user)
        with ThreadedDispatcher():
            wait_done(task)
    finally:
        sink.stop()
    entry = DeadLetter.objects.get(task=task)
    assert entry.error_message == "451 4.3.0 mailbox busy, try later"

    api = APIClient()
    api.force_authenticate(user)
    (row,) = api.get("/api/dlq").json()["results"]
    assert row["error_message"].startswith("451 ")
    at = row["history"][0]["at"]
    assert isinstance(at, str) and dt.datetime.fromisoformat(at).tzinfo is not None
    subtask = api.get(f"/api/tasks/{task.pk}/subtasks/").json()["results"][0]
    assert dt.datetime.fromisoformat(subtask["history"][0]["at"]).year >= 2026

    client.force_login(staff_user)
    page = client.get(reverse("admin:dispatch_deadletter_change", args=[entry.pk]))
    shown = dt.datetime.fromtimestamp(entry.history[0]["at"], tz=dt.UTC)
    assert shown.strftime("%Y-%m-%d %H:%M:%S") in page.content.decode()
    assert str(entry.history[0]["at"]) not in page.content.decode()
