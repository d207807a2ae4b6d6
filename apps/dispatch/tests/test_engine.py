"""The dispatcher against a real PostgreSQL and real aiosmtpd servers (in-process loops)."""

from __future__ import annotations

import email
from collections import Counter

import pytest
from django.utils import timezone

from apps.contacts.models import Contact
from apps.dispatch.models import DeadLetter, SubTask, Task
from apps.dispatch.selectors import task_progress
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done, wait_until
from apps.monitoring.models import TaskWaitMetric
from apps.services.models import EmailService

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True, params=["threads", "events"])
def sender_mode(request, set_config):
    """Every test here runs on both ways of carrying the SMTP connections
    (``queue.sender``): one thread each, and all on one event loop."""
    set_config(queue__sender=request.param)
    return request.param


def conserved(progress: dict) -> None:
    parts = sum(value for key, value in progress.items() if key != "total")
    assert parts == progress["total"], progress


def test_a_task_is_sent_once_per_recipient_personalized(
    user, make_contacts, make_service, smtp_sink, set_config
):
    set_config(queue__concurrency=4, queue__batch_size=20)
    make_contacts(user, 30)
    make_service(port=smtp_sink.port)
    make_service(port=smtp_sink.port)
    task = queue_task(user)

    with ThreadedDispatcher():
        progress = wait_done(task, check=conserved)
        wait_until(
            lambda: Task.objects.get(pk=task.pk).status == "completed",
            timeout=3,
            message="the task to complete",
        )

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


def test_a_permanent_refusal_fails_and_bounces_the_contact(
    user, make_contacts, make_service, smtp_sink, set_config
):
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


def test_a_deferral_is_retried_with_back_off_then_dead_lettered(
    user, make_contacts, make_service, smtp_sink, set_config
):
    set_config(
        backoff__strategy="fixed", backoff__initial=0.2, backoff__jitter=0, backoff__max_retries=2
    )
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


def test_back_off_spaces_the_attempts(user, make_contacts, make_service, smtp_sink, set_config):
    set_config(
        backoff__strategy="fixed", backoff__initial=0.3, backoff__jitter=0, backoff__max_retries=1
    )
    contacts = make_contacts(user, 1)
    smtp_sink.handler.reject[contacts[0].email] = "451 4.3.0 try again"
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    with ThreadedDispatcher():
        wait_done(task)
    times = [entry["at"] for entry in SubTask.objects.get(task=task).history]
    assert len(times) == 2 and times[1] - times[0] >= 0.3


def test_a_connection_dropped_at_the_end_of_data_is_resent_once_delivered_if_asked(
    user, make_contacts, make_service, set_config
):
    """A connection closed instead of the answer to the final "." may have delivered
    the message (the sender cannot tell): with ``recovery.resend_ambiguous`` it is sent
    again at once, with its same Message-ID (without, it is ``unknown``:
    ``test_a_message_whose_final_dot_gets_no_answer_is_unknown_not_retried``)."""
    from apps.dispatch.tests.smtp import DroppingHandler, start

    set_config(recovery__resend_ambiguous=True)
    contacts = make_contacts(user, 4)
    sink = start(DroppingHandler(drop={contacts[2].email}))
    try:
        make_service(port=sink.port)
        task = queue_task(user)
        with ThreadedDispatcher():
            progress = wait_done(task, check=conserved)
    finally:
        sink.stop()
    assert progress["sent"] == 4
    assert sink.handler.dropped == {contacts[2].email: 1}
    assert Counter(m.rcpt_tos[0] for m in sink.handler.messages)[contacts[2].email] == 1
    retried = SubTask.objects.get(task=task, to_email=contacts[2].email)
    assert retried.attempts == 2 and retried.history[0]["kind"] == "ambiguous"


@pytest.mark.parametrize("resend", [False, True])
def test_a_message_whose_final_dot_gets_no_answer_is_unknown_not_retried(
    resend, user, make_contacts, make_service, set_config
):
    """The server accepts a message but its answer to the final "." comes after the
    sender's timeout: whether it was delivered cannot be told, so the subtask is
    ``unknown`` (``ambiguous``) like a message on the wire of a dead dispatcher — not a
    transient failure retried into a second delivery. With ``recovery.resend_ambiguous``
    it is sent again at once, with its same Message-ID."""
    from apps.dispatch.tests.smtp import StallingHandler, start

    # smtp_timeout: lease_seconds / 3 = 2 s; the answer comes after 4 s.
    set_config(
        queue__lease_seconds=6,
        backoff__strategy="fixed",
        backoff__initial=0.1,
        backoff__jitter=0,
        recovery__resend_ambiguous=resend,
    )
    contacts = make_contacts(user, 4)
    stalled = contacts[2].email
    sink = start(StallingHandler(stall_for={stalled}))
    try:
        make_service(port=sink.port)
        task = queue_task(user)
        with ThreadedDispatcher():
            progress = wait_done(task, timeout=30, check=conserved)
    finally:
        sink.stop()
    received = Counter(m.rcpt_tos[0] for m in sink.handler.messages)
    assert sink.handler.stalled == {stalled: 1}
    subtask = SubTask.objects.get(task=task, to_email=stalled)
    assert subtask.history[0]["kind"] == "ambiguous"
    if resend:
        assert progress["sent"] == 4
        assert received[stalled] == 2 and subtask.attempts == 2
        ids = {m.headers["Message-ID"] for m in sink.handler.messages if m.rcpt_tos[0] == stalled}
        assert ids == {subtask.message_id}
    else:
        assert progress["sent"] == 3 and progress["unknown"] == 1
        assert received[stalled] == 1, "a message was sent twice"
        assert subtask.status == "unknown" and subtask.error_class == "ambiguous"
        assert subtask.attempts == 1
    assert all(count == 1 for to, count in received.items() if to != stalled)


def test_refused_auth_cools_the_service_down_without_charging_the_message(
    user, make_contacts, make_service, smtp_sink, set_config
):
    from apps.dispatch.tests.smtp import start_refusing_auth

    set_config(recovery__service_cooldown=300, recovery__service_failure_limit=2)
    make_contacts(user, 5)
    refusing = start_refusing_auth()
    try:
        bad = make_service(port=refusing.port, username="edm", name="bad")
        bad.password = "wrong"
        bad.save()
        task = queue_task(user)
        with ThreadedDispatcher():
            wait_until(
                lambda: EmailService.objects.get(pk=bad.pk).consecutive_failures >= 1,
                message="the fault to be recorded",
            )
            progress = task_progress(task)
            assert progress["pending"] + progress["allocated"] == 5
            assert not SubTask.objects.filter(task=task, attempts__gt=0).exists()
            make_service(port=smtp_sink.port, name="good")
            progress = wait_done(task, check=conserved)
    finally:
        refusing.stop()
    assert progress["sent"] == 5
    bad.refresh_from_db()
    assert bad.consecutive_failures == 1 and bad.is_enabled
    assert (bad.next_available_at - timezone.now()).total_seconds() > 200
    assert bad.total_sent == 0 and not SubTask.objects.filter(attempts__gt=1).exists()
    assert len(smtp_sink.handler.messages) == 5


def test_repeated_faults_disable_the_service(user, make_contacts, make_service, set_config):
    from apps.dispatch.tests.smtp import start_refusing_auth

    set_config(recovery__service_cooldown=0, recovery__service_failure_limit=2)
    make_contacts(user, 2)
    refusing = start_refusing_auth()
    try:
        bad = make_service(port=refusing.port, username="edm")
        task = queue_task(user)
        with ThreadedDispatcher():
            wait_until(
                lambda: not EmailService.objects.get(pk=bad.pk).is_enabled,
                message="the service to be disabled",
            )
    finally:
        refusing.stop()
    bad.refresh_from_db()
    assert bad.consecutive_failures == 2
    assert "consecutive faults" in bad.disabled_reason and "authentication" in bad.disabled_reason
    assert task_progress(task)["pending"] == 2


def test_a_throttled_service_is_pushed_back_and_the_message_not_charged(
    user, make_contacts, make_service, smtp_sink, set_config
):
    from apps.dispatch.tests.smtp import ThrottlingHandler, start

    set_config(backoff__throttle_delay=300)
    make_contacts(user, 3)
    throttling = start(ThrottlingHandler(times=1))
    try:
        slow = make_service(port=throttling.port, name="throttled")
        task = queue_task(user)
        with ThreadedDispatcher():
            wait_until(lambda: throttling.handler.throttled == 1, message="a 421")
            make_service(port=smtp_sink.port, name="other")
            progress = wait_done(task, check=conserved)
    finally:
        throttling.stop()
    assert progress["sent"] == 3
    slow.refresh_from_db()
    assert (slow.next_available_at - timezone.now()).total_seconds() > 200
    assert slow.consecutive_failures == 0
    assert not SubTask.objects.filter(task=task, attempts__gt=1).exists()


def test_a_lost_listen_connection_means_polling_and_listening_again(
    user, make_contacts, make_service, smtp_sink, monkeypatch, caplog
):
    """The LISTEN connection dies (a database restart, a network cut): the loop warns
    once, keeps sending by polling, and listens again."""
    from django.db import connection

    from apps.dispatch.engine import loop

    monkeypatch.setattr(loop, "RELISTEN_EVERY", 0.5)
    make_contacts(user, 3)
    make_service(port=smtp_sink.port)
    with ThreadedDispatcher() as running:
        wait_until(
            lambda: running.dispatcher is not None and running.dispatcher.listener is not None,
            message="listening",
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()"
            )
            assert cursor.fetchone()[0]
        task = queue_task(user)
        wait_done(task, timeout=10)
        wait_until(
            lambda: (
                running.dispatcher.listener is not None
                and running.dispatcher.listener.info.backend_pid > 0
            ),
            message="listening again",
        )
    lost = [r for r in caplog.records if "lost the LISTEN connection" in r.getMessage()]
    assert len(lost) == 1
    assert len(smtp_sink.handler.messages) == 3
