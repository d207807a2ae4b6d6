"""Task lifecycle services: create, queue (materialization), pause, resume, cancel."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.contacts.models import Contact, Tag
from apps.core.errors import ApplicationError
from apps.dispatch import services
from apps.dispatch.models import OwnerQueue, SubTask, Task, TaskQueue
from apps.dispatch.selectors import subtasks_for, task_progress, tasks_progress
from apps.dispatch.templates import CompiledTask, task_validate_templates
from apps.dispatch.tests.helpers import chunk_in_progress
from apps.events.models import Event
from apps.services.models import Pool


def make_task(owner, *, tags=("list",), **extra) -> Task:
    tag_ids = [Tag.objects.get(owner=owner, name=name).pk for name in tags]
    fields = {
        "name": "Newsletter",
        "subject": "Hello {{ contact.first_name }}",
        "body_text": "Hi {{ contact.first_name }} from {{ contact.attributes.city }}",
        "body_html": "<p>Hi {{ contact.first_name }}</p>",
        "include_tags": tag_ids,
    }
    fields.update(extra)
    return services.task_create(owner=owner, **fields)


def test_a_template_error_names_the_field_and_the_line():
    with pytest.raises(ValidationError) as caught:
        task_validate_templates(subject="Hi", body_text="line one\n{% if %}\n")
    assert "body_text" in caught.value.message_dict
    assert "line 2" in caught.value.message_dict["body_text"][0]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"subject": ""}, "subject"),
        ({"subject": "{{ contact.first_name|nosuchfilter }}"}, "subject"),
        ({"body_text": "", "body_html": ""}, "body_text"),
        ({"body_html": "{% for %}"}, "body_html"),
    ],
)
def test_task_create_rejects_bad_templates(user, pool, make_contacts, fields, field):
    make_contacts(user, 1)
    with pytest.raises(ValidationError) as caught:
        make_task(user, **fields)
    assert field in caught.value.message_dict
    assert not Task.objects.exists()


def test_task_create_refuses_another_users_tags_and_contacts(user, other_user, pool, make_contacts):
    make_contacts(user, 1)
    theirs = make_contacts(other_user, 1, tag="theirs")
    their_tag = Tag.objects.get(owner=other_user)
    with pytest.raises(ValidationError, match="include_tags"):
        services.task_create(
            owner=user, name="x", subject="s", body_text="b", include_tags=[their_tag.pk]
        )
    with pytest.raises(ValidationError, match="contacts"):
        services.task_create(
            owner=user, name="x", subject="s", body_text="b", contacts=[theirs[0].pk]
        )


def test_task_create_refuses_a_pool_not_open_to_the_user(user, make_contacts):
    make_contacts(user, 1)
    private = Pool.objects.create(name="private", is_shared=False)
    with pytest.raises(ValidationError, match="pool"):
        make_task(user, pool=private.pk)
    private.owners.add(user)
    assert make_task(user, pool=private.pk).pool == private


def test_task_create_needs_a_pool(user, make_contacts, db):
    make_contacts(user, 1)
    Pool.objects.filter(name=Pool.DEFAULT_NAME).delete()
    with pytest.raises(ValidationError, match="pool"):
        make_task(user)


def test_queue_materializes_included_minus_excluded_plus_explicit(user, pool, make_contacts):
    listed = make_contacts(user, 5, tag="list")
    make_contacts(user, 2, tag="list", prefix="u", status="unsubscribed")
    excluded = make_contacts(user, 0, tag="blocked")
    Tag.objects.get(owner=user, name="blocked").memberships.create(contact=listed[0])
    extra = make_contacts(user, 1, tag=None, prefix="x")
    del excluded

    task = make_task(
        user, exclude_tags=[Tag.objects.get(owner=user, name="blocked").pk], contacts=[extra[0].pk]
    )
    services.task_queue(task=task)

    task.refresh_from_db()
    assert task.status == Task.Status.QUEUED
    assert task.total == 4 + 2 + 1
    progress = task_progress(task)
    assert progress["pending"] == 5 and progress["skipped"] == 2
    assert progress["total"] == task.total
    emails = set(SubTask.objects.filter(task=task).values_list("to_email", flat=True))
    assert listed[0].email not in emails and extra[0].email in emails
    ids = list(SubTask.objects.filter(task=task).values_list("message_id", flat=True))
    assert len(set(ids)) == len(ids) and all(m.startswith("<") and "@" in m for m in ids)
    lane = TaskQueue.objects.get(task=task)
    assert lane.ready_at is not None
    assert OwnerQueue.objects.get(owner=user, pool=pool).ready_at == lane.ready_at


def test_queue_twice_is_refused(user, pool, make_contacts):
    make_contacts(user, 2)
    task = make_task(user)
    services.task_queue(task=task)
    with pytest.raises(ApplicationError, match="draft"):
        services.task_queue(task=task)
    assert SubTask.objects.filter(task=task).count() == 2


def test_queue_with_no_matching_contact_changes_nothing(user, pool, make_contacts):
    make_contacts(user, 0, tag="empty")
    task = make_task(user, tags=("empty",))
    with pytest.raises(ApplicationError, match="no contact"):
        services.task_queue(task=task)
    task.refresh_from_db()
    assert task.status == Task.Status.DRAFT
    assert not SubTask.objects.filter(task=task).exists()


def test_a_task_whose_recipients_are_all_skipped_completes_at_once(user, pool, make_contacts):
    make_contacts(user, 3, status="bounced")
    task = services.task_queue(task=make_task(user))
    assert task.status == Task.Status.COMPLETED
    assert task_progress(task)["skipped"] == 3


def test_a_future_task_is_scheduled_and_waits(user, pool, make_contacts):
    make_contacts(user, 2)
    when = timezone.now() + timedelta(hours=1)
    task = services.task_queue(task=make_task(user, scheduled_at=when))
    assert task.status == Task.Status.SCHEDULED
    assert set(SubTask.objects.filter(task=task).values_list("next_attempt_at", flat=True)) == {
        when
    }
    assert TaskQueue.objects.get(task=task).ready_at == when


def test_pause_resume_and_cancel(user, pool, make_contacts):
    """Claimed subtasks belong to their dispatcher: pause and cancel change the pending
    ones and bump the epoch of the chunks holding the rest (the dispatcher hands them
    back before its next message)."""
    make_contacts(user, 4)
    task = services.task_queue(task=make_task(user))
    first, second = SubTask.objects.filter(task=task).order_by("id")[:2]
    chunk = chunk_in_progress([first, second], position=0, expired=False)

    task = services.task_pause(task=task)
    assert task.status == Task.Status.PAUSED
    progress = task_progress(task)
    assert progress == {**progress, "pending": 2, "allocated": 1, "sending": 1, "total": 4}
    chunk.refresh_from_db()
    assert chunk.epoch == 1
    assert not TaskQueue.objects.filter(task=task).exists()
    assert OwnerQueue.objects.get(owner=user).ready_at is None
    with pytest.raises(ApplicationError, match="paused"):
        services.task_pause(task=task)

    task = services.task_resume(task=task)
    assert task.status == Task.Status.QUEUED
    assert TaskQueue.objects.get(task=task).ready_at is not None

    task = services.task_cancel(task=task)
    assert task.status == Task.Status.CANCELLED
    progress = task_progress(task)
    assert progress == {**progress, "cancelled": 2, "allocated": 1, "sending": 1, "total": 4}
    chunk.refresh_from_db()
    assert chunk.epoch == 2
    with pytest.raises(ApplicationError, match="cancelled"):
        services.task_cancel(task=task)
    with pytest.raises(ApplicationError, match="resumed"):
        services.task_resume(task=task.pk)


def test_complete_finished_marks_only_tasks_with_nothing_left(user, pool, make_contacts):
    make_contacts(user, 2)
    done = services.task_queue(task=make_task(user))
    busy = services.task_queue(task=make_task(user, name="second"))
    SubTask.objects.filter(task=done).update(status="sent")
    SubTask.objects.filter(task=busy).update(status="allocated")

    assert services.tasks_complete_finished() == [done.pk]
    done.refresh_from_db()
    assert done.status == Task.Status.COMPLETED and done.completed_at is not None
    assert not TaskQueue.objects.filter(task=done).exists()
    assert tasks_progress([done.pk, busy.pk])[busy.pk]["allocated"] == 2


def test_requeue_unknown_sends_again_with_the_same_message_id(user, pool, make_contacts):
    make_contacts(user, 2)
    task = services.task_queue(task=make_task(user))
    SubTask.objects.filter(task=task).update(status="unknown")
    services.tasks_complete_finished()
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    before = dict(SubTask.objects.filter(task=task).values_list("pk", "message_id"))

    assert services.subtask_requeue_unknown(owner=user, task_id=task.pk, actor=user) == 2
    task.refresh_from_db()
    assert task.status == Task.Status.QUEUED
    requeued = Event.objects.get(type="task.unknown_requeued")
    assert (requeued.subject_id, requeued.actor_id, requeued.payload) == (
        str(task.pk),
        user.pk,
        {"count": 2},
    )
    assert (
        dict(SubTask.objects.filter(task=task, status="pending").values_list("pk", "message_id"))
        == before
    )
    assert TaskQueue.objects.get(task=task).ready_at is not None


def test_compiled_templates_render_per_contact_and_escape_html_only():
    compiled = CompiledTask.compile(
        subject="Hi {{ contact.first_name }}\n",
        body_text="{{ contact.attributes.x }}",
        body_html="<b>{{ contact.attributes.x }}</b>",
    )
    subject, text, html = compiled.render({"first_name": "Ann", "attributes": {"x": "<&>"}})
    assert (subject, text, html) == ("Hi Ann", "<&>", "<b>&lt;&amp;&gt;</b>")


def test_contact_is_a_plain_contact_model(user, make_contacts):
    # The materialization reads contacts_contact directly; its columns must be there.
    contact = make_contacts(user, 1)[0]
    assert Contact.objects.filter(pk=contact.pk, status="active").exists()


def test_a_tasks_subtask_ids_lie_above_its_floor_and_pages_start_there(user, pool, make_contacts):
    make_contacts(user, 3)
    first = services.task_queue(task=make_task(user))
    second = services.task_queue(task=make_task(user, name="second"))
    first_ids = set(SubTask.objects.filter(task=first).values_list("pk", flat=True))
    second_ids = set(SubTask.objects.filter(task=second).values_list("pk", flat=True))
    assert max(first_ids) <= second.subtask_id_floor < min(second_ids)
    assert first.subtask_id_floor < min(first_ids)
    page = subtasks_for(second)
    assert set(page.values_list("pk", flat=True)) == second_ids
    assert f'"dispatch_subtask"."id" > {second.subtask_id_floor}' in str(page.query)
    assert set(subtasks_for(second.pk, status="pending").values_list("pk", flat=True)) == (
        second_ids
    )
