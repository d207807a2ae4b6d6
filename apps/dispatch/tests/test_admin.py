"""Smoke tests of the dispatch admin: every page renders, every action calls its service
and reports what it did; million-row lists never count."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import escape

from apps.dispatch.models import DeadLetter, SubTask, Task
from apps.dispatch.recovery import recover_stuck
from apps.dispatch.tests.helpers import chunk_in_progress, queue_task
from apps.dispatch.tests.test_api import make_dead


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def task(user, pool, make_contacts) -> Task:
    """A queued task of ``user`` with 5 pending subtasks."""
    make_contacts(user, 5)
    return queue_task(user)


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def run_action(admin_client, model: str, action: str, ids: list[int]):
    url = reverse(f"admin:dispatch_{model}_changelist")
    response = admin_client.post(
        url, {"action": action, "_selected_action": [str(pk) for pk in ids]}, follow=True
    )
    assert response.status_code == 200
    return messages_of(response)


# --- pages --------------------------------------------------------------------------------------


def test_task_list_shows_a_progress_bar(admin_client, task):
    make_dead(task.pk, error_types=["smtp_451"])
    response = admin_client.get(reverse("admin:dispatch_task_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert task.name in html
    assert 'title="pending: 4"' in html and 'title="dead: 1"' in html
    assert "0 / 5 sent" in html


def test_task_list_filters_and_search(admin_client, task, user):
    url = reverse("admin:dispatch_task_changelist")
    assert task.name in admin_client.get(url, {"status__exact": "queued"}).content.decode()
    assert "0 tasks" in admin_client.get(url, {"status__exact": "paused"}).content.decode()
    assert task.name in admin_client.get(url, {"q": user.username}).content.decode()


def test_task_page_shows_progress_and_links(admin_client, task):
    response = admin_client.get(reverse("admin:dispatch_task_change", args=[task.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="task-progress"' in html and 'title="pending: 5"' in html
    assert '<strong class="task-count-pending">5</strong>' in html
    assert f"?task={task.pk}" in html
    assert "tags: list" in html


def test_subtask_list_filters_by_task_and_status_without_counting(admin_client, task):
    url = reverse("admin:dispatch_subtask_changelist")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url, {"task": task.pk, "status__exact": "pending"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="action-select"') == 5
    assert "rows are not counted" in html
    assert not [
        q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "dispatch_subtask" in q["sql"]
    ]
    assert (
        "@alice.test"
        not in admin_client.get(url, {"task": task.pk, "status__exact": "sent"}).content.decode()
    )


def test_subtask_list_pages_without_a_count(admin_client, task, monkeypatch):
    from apps.dispatch.admin import SubTaskAdmin

    monkeypatch.setattr(SubTaskAdmin, "list_per_page", 2)
    url = reverse("admin:dispatch_subtask_changelist")
    first = admin_client.get(url, {"task": task.pk}).content.decode()
    third = admin_client.get(url, {"task": task.pk, "p": 3}).content.decode()
    beyond = admin_client.get(url, {"task": task.pk, "p": 9})

    assert first.count('class="action-select"') == 2 and "p=2" in first
    assert third.count('class="action-select"') == 1
    assert beyond.status_code == 302  # past the end: the admin's "invalid page" redirect


def test_subtask_page_is_read_only(admin_client, task):
    subtask = SubTask.objects.filter(task=task).first()
    url = reverse("admin:dispatch_subtask_change", args=[subtask.pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    assert escape(subtask.message_id) in response.content.decode()
    assert admin_client.post(url, {"status": "sent"}).status_code == 403
    assert SubTask.objects.get(pk=subtask.pk).status == "pending"


def test_dead_letter_list_and_page(admin_client, task):
    (entry,) = make_dead(task.pk, error_types=["smtp_451"])
    url = reverse("admin:dispatch_deadletter_changelist")
    listing = admin_client.get(url, {"error_type": "smtp_451", "status__exact": "pending"})
    assert listing.status_code == 200
    assert entry.subtask.to_email in listing.content.decode()
    assert "rows are not counted" in listing.content.decode()
    page = admin_client.get(reverse("admin:dispatch_deadletter_change", args=[entry.pk]))
    assert page.status_code == 200
    assert "451 try later" in page.content.decode()


def test_a_queued_task_cannot_be_deleted_in_the_admin(admin_client, task):
    assert admin_client.get(reverse("admin:dispatch_task_add")).status_code == 200
    assert (
        admin_client.get(reverse("admin:dispatch_task_delete", args=[task.pk])).status_code == 403
    )


# --- actions ------------------------------------------------------------------------------------


def test_action_pause_then_resume(admin_client, task):
    assert run_action(admin_client, "task", "pause_tasks", [task.pk]) == ["1 task(s) paused."]
    task.refresh_from_db()
    assert task.status == "paused"
    assert run_action(admin_client, "task", "resume_tasks", [task.pk]) == ["1 task(s) resumed."]
    task.refresh_from_db()
    assert task.status == "queued"


def test_action_cancel(admin_client, task):
    assert run_action(admin_client, "task", "cancel_tasks", [task.pk]) == ["1 task(s) cancelled."]
    assert SubTask.objects.filter(task=task, status="cancelled").count() == 5


def test_action_queue_reports_refused_tasks(admin_client, task, user):
    from apps.dispatch import services

    draft = services.task_create(
        owner=user,
        name="draft",
        subject="s",
        body_text="b",
        include_tags=list(task.include_tags.all()),
    )
    messages = run_action(admin_client, "task", "queue_tasks", [task.pk, draft.pk])

    assert messages[0] == "1 task(s) queued."
    assert f"#{task.pk}: only a draft task can be queued" in messages[1]
    draft.refresh_from_db()
    assert draft.status == "queued" and draft.total == 5


def unknown(task: Task, count: int) -> list[int]:
    ids = list(SubTask.objects.filter(task=task).order_by("id").values_list("pk", flat=True))
    ids = ids[:count]
    for subtask in SubTask.objects.filter(pk__in=ids):
        chunk_in_progress([subtask], position=0)  # on the wire when its dispatcher died
    recover_stuck()
    return ids


def test_action_requeue_unknown_of_tasks(admin_client, task):
    unknown(task, 2)
    messages = run_action(admin_client, "task", "requeue_unknown", [task.pk])
    assert messages == ["2 unknown subtask(s) requeued."]
    assert not SubTask.objects.filter(task=task, status="unknown").exists()


def test_action_requeue_unknown_reports_a_cancelled_task_as_refused(admin_client, task):
    from apps.dispatch import services

    unknown(task, 1)
    services.task_cancel(task=task)
    messages = run_action(admin_client, "task", "requeue_unknown", [task.pk])
    assert messages == [
        "0 unknown subtask(s) requeued.",
        f"1 refused — #{task.pk}: a cancelled task's subtasks cannot be requeued",
    ]
    assert SubTask.objects.filter(task=task, status="unknown").count() == 1


def test_action_requeue_selected_unknown_subtasks(admin_client, task):
    ids = unknown(task, 2)
    pending = SubTask.objects.filter(task=task, status="pending").first()
    messages = run_action(admin_client, "subtask", "requeue_unknown", [ids[0], pending.pk])
    assert messages == [
        "1 unknown subtask(s) requeued.",
        "1 refused — 1 selected subtask(s) are not unknown",
    ]
    assert SubTask.objects.get(pk=ids[0]).status == "pending"
    assert SubTask.objects.get(pk=ids[1]).status == "unknown"


def test_action_reprocess_dead_letters(admin_client, task):
    first, second = make_dead(task.pk, error_types=["smtp_451", "transient"])
    DeadLetter.objects.filter(pk=second.pk).update(status="resolved")

    messages = run_action(admin_client, "deadletter", "reprocess", [first.pk, second.pk])

    assert messages[0] == "1 dead letter(s) reprocessed."
    assert f"#{second.pk}: dead letter {second.pk} is resolved" in messages[1]
    assert DeadLetter.objects.get(pk=first.pk).status == "reprocessing"
    assert SubTask.objects.get(pk=first.subtask_id).status == "pending"
