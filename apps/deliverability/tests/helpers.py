"""Helpers of the deliverability tests: send a task through a real dispatcher."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done


def send_task(owner, sink, **task_fields):
    """Queue a task to the owner's "list" tag, send it with a dispatcher in this process,
    and return (task, progress, messages received by the sink, parsed)."""
    task = queue_task(owner, **task_fields)
    with ThreadedDispatcher():
        progress = wait_done(task)
    parsed = [parse(m.data) for m in sink.handler.messages]
    return task, progress, parsed


def parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def path_of(url: str) -> str:
    """The path (and query) of one of our public URLs."""
    from apps.deliverability.tests.conftest import PUBLIC_URL

    assert url.startswith(PUBLIC_URL + "/"), url
    return url[len(PUBLIC_URL) :]
