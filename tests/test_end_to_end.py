"""What ``make run`` promises, end to end: the seeded demo task's mails reach the sink.

seed_demo (operator, demo user, services on the sink, contacts, tags, a queued task), then
one real dispatcher loop (``manage.py dispatch``) against a real aiosmtpd sink.
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from apps.contacts.models import Contact
from apps.dispatch.models import Task
from apps.dispatch.selectors import task_progress


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_demo_task_is_delivered_to_the_local_sink(smtp_sink, settings):
    settings.EDM_SINK_HOST = "127.0.0.1"
    settings.EDM_SINK_PORT = smtp_sink.port
    call_command("seed_demo", stdout=StringIO())
    task = Task.objects.get(owner__username="demo")
    recipients = task.total
    assert recipients > 0

    call_command("dispatch", "--seconds", "6", stdout=StringIO())

    progress = task_progress(task)
    assert progress["sent"] == recipients, progress
    received = [message.rcpt_tos[0] for message in smtp_sink.handler.messages]
    assert sorted(received) == sorted(set(received)), "a recipient got two messages"
    expected = set(
        Contact.objects.filter(owner__username="demo", memberships__isnull=False).values_list(
            "email", flat=True
        )
    )
    assert set(received) == expected
    first = smtp_sink.handler.messages[0]
    assert first.headers["Subject"].startswith("Welcome, ")
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
