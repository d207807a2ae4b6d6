"""The dispatcher's events, written by the statements that make the changes: one
``subtask.sent`` per accepted message, ``subtask.failed`` and the contact's
``contact.bounced`` for a refusal, ``task.started`` and ``task.completed`` once, and the
auto-disable audited like an operator's (history row, ``service.disabled``)."""

from __future__ import annotations

from collections import Counter

import pytest

from apps.dispatch.models import SubTask, Task
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done, wait_until
from apps.events.models import Event
from apps.services.models import EmailService

pytestmark = pytest.mark.django_db(transaction=True)


def _types(**filters) -> Counter:
    return Counter(Event.objects.filter(**filters).values_list("type", flat=True))


def test_every_outcome_of_a_task_is_an_event_of_the_system(
    user, make_contacts, make_service, smtp_sink, set_config
):
    set_config(queue__concurrency=2, queue__batch_size=5)
    contacts = make_contacts(user, 12)
    smtp_sink.handler.reject[contacts[3].email] = "550 5.1.1 no such user"
    make_service(port=smtp_sink.port)
    task = queue_task(user)

    with ThreadedDispatcher():
        wait_done(task)
        wait_until(
            lambda: Task.objects.get(pk=task.pk).status == "completed",
            message="the task to complete",
        )

    of_task = _types(subject_type="dispatch.task", subject_id=str(task.pk))
    assert (of_task["task.started"], of_task["task.completed"]) == (1, 1)
    sent = Event.objects.filter(type="subtask.sent", payload__task=task.pk)
    sent_ids = SubTask.objects.filter(task=task, status="sent").values_list("pk", flat=True)
    assert sorted(int(e.subject_id) for e in sent) == sorted(sent_ids)
    assert {(e.actor_id, e.owner_id) for e in sent} == {(None, user.pk)}
    failed = Event.objects.get(type="subtask.failed", payload__task=task.pk)
    assert failed.payload["error_class"] == "smtp_550"
    bounced = Event.objects.get(type="contact.bounced")
    assert bounced.subject_id == str(contacts[3].pk) and bounced.actor_id is None


def test_with_events_switched_off_the_engine_appends_none_of_its_own(
    user, make_contacts, make_service, smtp_sink, settings
):
    settings.EDM_EVENTS_ENABLED = False
    make_contacts(user, 4)
    make_service(port=smtp_sink.port)
    task = queue_task(user)

    with ThreadedDispatcher():
        progress = wait_done(task)

    assert progress["sent"] == 4
    assert not Event.objects.filter(type__startswith="subtask.").exists()
    assert not Event.objects.filter(type="task.started").exists()
    assert Event.objects.filter(type="task.queued", subject_id=str(task.pk)).exists()


def test_the_auto_disable_is_audited_like_an_operators(
    user, make_contacts, make_service, set_config
):
    from apps.dispatch.tests.smtp import start_refusing_auth

    set_config(recovery__service_cooldown=0, recovery__service_failure_limit=2)
    make_contacts(user, 2)
    refusing = start_refusing_auth()
    try:
        bad = make_service(port=refusing.port, username="edm")
        queue_task(user)
        with ThreadedDispatcher():
            wait_until(
                lambda: not EmailService.objects.get(pk=bad.pk).is_enabled,
                message="the service to be disabled",
            )
    finally:
        refusing.stop()
    event = Event.objects.get(type="service.disabled", subject_id=str(bad.pk))
    assert event.actor_id is None and "consecutive faults" in event.payload["reason"]
    last = EmailService.history.filter(id=bad.pk).latest("history_date")
    assert last.is_enabled is False and last.history_change_reason.startswith("disabled: 2 ")
