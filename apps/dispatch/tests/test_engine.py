"""The dispatcher against a real PostgreSQL and real aiosmtpd servers (in-process loops)."""

from __future__ import annotations

import email
from collections import Counter

import pytest

from apps.contacts.models import Contact
from apps.dispatch.models import DeadLetter, SubTask, Task
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done, wait_until
from apps.monitoring.models import TaskWaitMetric
from apps.services.models import EmailService

pytestmark = pytest.mark.django_db(transaction=True)


def conserved(progress: dict) -> None:
    parts = sum(value for key, value in progress.items() if key != "total")
    assert parts == progress["total"], progress


def test_a_task_is_sent_once_per_recipient_personalized(user, make_contacts, make_service,
                                                        smtp_sink, set_config):
    set_config(queue__concurrency=4, queue__batch_size=20)
    make_contacts(user, 30)
    make_service(port=smtp_sink.port)
    make_service(port=smtp_sink.port)
    task = queue_task(user)

    with ThreadedDispatcher():
        progress = wait_done(task, check=conserved)
        wait_until(lambda: Task.objects.get(pk=task.pk).status == "completed", timeout=3,
                   message="the task to complete")

    assert progress["sent"] == 30
    messages = smtp_sink.handler.messages
    assert len(messages) == 30
    recipients = Counter(m.rcpt_tos[0] for m in messages)
    assert set(recipients.values()) == {1}
    ids = dict(SubTask.objects.filter(task=task).values_list("to_email", "message_id"))
    for received in messages:
        parsed = email.message_from_bytes(received.data)
        to = received.rcpt_tos[0]
        assert parsed["Message-ID"] == ids[to]
        number = to.split("@")[0][1:]
        assert parsed["Subject"] == f"Hello Name{number}"
        text = parsed.get_payload()[0].get_payload(decode=True).decode()
        assert f"City{number}" in text
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    assert TaskWaitMetric.objects.get(task=task).wait_seconds >= 0
    assert sum(EmailService.objects.values_list("total_sent", flat=True)) == 30


def test_a_permanent_refusal_fails_and_bounces_the_contact(user, make_contacts, make_service,
                                                           smtp_sink, set_config):
    contacts = make_contacts(user, 3)
    smtp_sink.handler.reject[contacts[1].email] = "550 5.1.1 no such user"
    make_service(port=smtp_sink.port)
    task = queue_task(user)

    with ThreadedDispatcher():
        progress = wait_done(task, check=conserved)

    assert (progress["sent"], progress["failed"]) == (2, 1)
    failed = SubTask.objects.get(task=task, status="failed")
    assert failed.error_class == "smtp_550" and failed.attempts == 1
    assert Contact.objects.get(pk=contacts[1].pk).status == "bounced"
    assert EmailService.objects.get().total_failed == 1


def test_a_deferral_is_retried_with_back_off_then_dead_lettered(user, make_contacts,
                                                                make_service, smtp_sink,
                                                                set_config):
    set_config(backoff__strategy="fixed", backoff__initial=0.2, backoff__jitter=0,
               backoff__max_retries=2)
    contacts = make_contacts(user, 2)
    smtp_sink.handler.reject[contacts[0].email] = "450 4.2.1 mailbox busy"
    make_service(port=smtp_sink.port)
    task = queue_task(user)

    with ThreadedDispatcher():
        progress = wait_done(task, check=conserved)

    assert (progress["sent"], progress["dead"]) == (1, 1)
    dead = SubTask.objects.get(task=task, status="dead")
    assert dead.attempts == 3
    times = [entry["attempt"] for entry in dead.history]
    assert times == [1, 2, 3]
    letter = DeadLetter.objects.get(subtask=dead)
    assert letter.error_type == "smtp_450" and len(letter.history) == 3
