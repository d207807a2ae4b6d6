"""The task detail's own read path (``selectors.owned_task_detail`` and the serializers'
fields built once): it answers exactly what DRF's generic path answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers

from apps.contacts.models import Tag
from apps.dispatch import services
from apps.dispatch.api import tasks_with_related_ids
from apps.dispatch.models import SubTask, Task
from apps.dispatch.selectors import owned_task_detail, task_progress
from apps.dispatch.serializers import TaskDetailSerializer, TaskSerializer
from apps.dispatch.tests.helpers import chunk_in_progress


@pytest.fixture
def task(user, pool, make_contacts) -> Task:
    """A queued task of ``user`` with every relation and every date set."""
    contacts = make_contacts(user, 6)
    make_contacts(user, 1, tag="skip", prefix="skip")
    include = Tag.objects.get(owner=user, name="list")
    exclude = Tag.objects.get(owner=user, name="skip")
    created = services.task_create(
        owner=user,
        actor=user,
        name="Détail ✓",
        subject="Hello {{ contact.first_name }}",
        body_text="Hi",
        body_html="<p>Hi</p>",
        from_name="Ops",
        include_tags=[include.pk],
        exclude_tags=[exclude.pk],
        contacts=[contacts[3].pk, contacts[1].pk],
        pool=pool.pk,
        priority=-7,
        scheduled_at=None,
        tracking=False,
    )
    services.task_queue(task=created)
    Task.objects.filter(pk=created.pk).update(
        scheduled_at=timezone.now() - timedelta(minutes=5),
        started_at=timezone.now(),
    )
    return created


def _generic(serializer_class, task_id: int) -> dict:
    """DRF's own representation (fields built from the model for this instance) of the
    task read through the ORM."""
    instance = tasks_with_related_ids(Task.objects.filter(pk=task_id)).get()
    return serializers.ModelSerializer.to_representation(serializer_class(), instance)


def test_the_detail_answers_what_drfs_generic_path_answers(api, task):
    body = api.get(f"/api/tasks/{task.pk}/").json()

    expected = _generic(TaskDetailSerializer, task.pk)
    assert body == expected
    assert list(body) == list(expected)  # same fields, same order
    assert body["contacts"] == sorted(body["contacts"]) and len(body["contacts"]) == 2
    assert body["exclude_tags"] and body["include_tags"]
    assert body["scheduled_at"].endswith("Z") and body["started_at"] is not None
    assert body["progress"] == task_progress(task) and body["progress"]["total"] == 6


def test_the_list_and_the_detail_show_a_task_alike(api, task):
    listed = api.get("/api/tasks/").json()["results"]
    assert listed == [api.get(f"/api/tasks/{task.pk}/").json()]


def test_the_serializer_without_progress_matches_drfs_too(task):
    instance = tasks_with_related_ids(Task.objects.filter(pk=task.pk)).get()
    assert TaskSerializer(instance).data == _generic(TaskSerializer, task.pk)
    assert "progress" not in TaskSerializer(instance).data


def test_a_task_without_relations_reads_them_empty_and_dates_null(api, user, pool, make_contacts):
    make_contacts(user, 1)
    draft = services.task_create(
        owner=user,
        actor=user,
        name="bare",
        subject="s",
        body_text="b",
        body_html="",
        from_name="",
        include_tags=[Tag.objects.get(owner=user, name="list").pk],
        exclude_tags=[],
        contacts=[],
        pool=None,
        priority=0,
        scheduled_at=None,
        tracking=True,
    )
    body = api.get(f"/api/tasks/{draft.pk}/").json()
    assert body == _generic(TaskDetailSerializer, draft.pk)
    assert body["exclude_tags"] == [] and body["contacts"] == []
    assert body["scheduled_at"] is None and body["queued_at"] is None


def test_progress_of_a_chunk_on_the_wire_is_read_as_the_selector_reads_it(api, task):
    subtasks = list(SubTask.objects.filter(task=task).order_by("id")[:4])
    chunk_in_progress(subtasks, position=2, expired=False)

    progress = api.get(f"/api/tasks/{task.pk}/").json()["progress"]

    assert progress == task_progress(task)
    assert (progress["sent"], progress["sending"], progress["allocated"]) == (2, 1, 1)


def test_another_users_task_answers_the_same_404_as_a_missing_one(api, other_api, task):
    theirs = other_api.get(f"/api/tasks/{task.pk}/")
    missing = api.get("/api/tasks/999999/")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert theirs.json()["code"] == "not_found"
    assert theirs.json()["detail"] == "No Task matches the given query."


def test_the_selector_reads_only_the_owners_task(user, other_user, task):
    assert owned_task_detail(other_user, task.pk) is None
    mine = owned_task_detail(user, task.pk)
    assert mine.pk == task.pk and mine.owner_id == user.pk
    assert mine.progress_counts == task_progress(task)


def test_a_sending_tasks_progress_is_read_once_a_second_per_process(
    api, task, settings, django_assert_num_queries
):
    """Pollers of a sending task share one progress reading per second per process; the
    status is read fresh each time, so a paused task shows its own counts at once."""
    settings.EDM_SENDING_PROGRESS_SECONDS = 1
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SENDING)
    subtasks = list(SubTask.objects.filter(task=task).order_by("id")[:4])
    chunk = chunk_in_progress(subtasks, position=0, expired=False)
    first = api.get(f"/api/tasks/{task.pk}/").json()["progress"]
    assert (first["sent"], first["sending"]) == (0, 1)

    type(chunk).objects.filter(pk=chunk.pk).update(position=2)  # two more accepted
    with django_assert_num_queries(2):  # the token's user, then the task: no progress read
        again = api.get(f"/api/tasks/{task.pk}/").json()
    assert again["progress"] == first and again["status"] == "sending"

    services.task_pause(task=task)  # the status changes: the counts are read at once
    paused = api.get(f"/api/tasks/{task.pk}/").json()
    assert paused["status"] == "paused"
    assert paused["progress"] == task_progress(task) and paused["progress"]["sent"] == 2

    settings.EDM_SENDING_PROGRESS_SECONDS = 0  # off: every request reads
    Task.objects.filter(pk=task.pk).update(status=Task.Status.SENDING)
    assert api.get(f"/api/tasks/{task.pk}/").json()["progress"] == task_progress(task)
