"""Small units: back-off strategies, the sender cache, rendering failures, metrics."""

from __future__ import annotations

import dataclasses
import random
import socket

import pytest
from prometheus_client import REGISTRY

from apps.dispatch.backoff import retry_delay
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine.tick import ReservedService, _share
from apps.dispatch.engine.worker import SenderCache
from apps.dispatch.models import DeadLetter, SubTask, Task
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done
from apps.services.senders import SendError


@pytest.fixture
def conf(db) -> DispatchSettings:
    return dataclasses.replace(
        DispatchSettings.load(), backoff_initial=10, backoff_multiplier=2,
        backoff_max_delay=1000, backoff_jitter=0, backoff_custom_delays=(5, 50),
    )


@pytest.mark.parametrize(
    ("strategy", "delays"),
    [
        ("fixed", [10, 10, 10, 10]),
        ("linear", [10, 30, 50, 70]),
        ("exponential", [10, 20, 40, 80]),
        ("fibonacci", [10, 10, 20, 30]),
        ("custom", [5, 50, 50, 50]),
    ],
)
def test_backoff_strategies(conf, strategy, delays):
    conf = dataclasses.replace(conf, backoff_strategy=strategy)
    assert [retry_delay(attempt, conf) for attempt in (1, 2, 3, 4)] == delays


def test_backoff_is_capped_and_jittered(conf):
    conf = dataclasses.replace(conf, backoff_max_delay=100, backoff_jitter=0.5)
    rng = random.Random(7)
    delays = [retry_delay(30, conf, rng=rng) for _ in range(200)]
    assert all(50 <= delay <= 150 for delay in delays)
    assert max(delays) - min(delays) > 50


def test_fair_shares_add_up():
    assert _share(10, 3) == [4, 3, 3]
    assert _share(2, 5) == [1, 1, 0, 0, 0]


def _service(port: int) -> ReservedService:
    return ReservedService(
        id=1, pool_id=1, slots=1, old_next=None, sending_rate=0, kind="smtp",
        host="127.0.0.1", port=port, security="none", username="", password_encrypted="",
        from_email="a@example.com", from_name="",
    )


def test_the_sender_cache_reuses_checks_and_replaces_connections(smtp_sink, monkeypatch):
    from apps.dispatch.engine import worker

    cache = SenderCache(timeout=5)
    service = _service(smtp_sink.port)
    first = cache.acquire(service)
    cache.release(service.id)
    assert cache.acquire(service) is first, "reused while fresh"
    cache.release(service.id)
    monkeypatch.setattr(worker, "CHECK_IDLE_AFTER", -1)
    first.connection.sock.shutdown(socket.SHUT_RDWR)  # the connection is gone: NOOP fails
    second = cache.acquire(service)
    assert second is not first
    cache.release(service.id, broken=True)
    assert not cache.entries
    moved = dataclasses.replace(service, port=smtp_sink.port + 1)
    with pytest.raises(SendError) as caught:
        cache.acquire(moved)
    assert caught.value.kind == SendError.SERVICE
    cache.close_all()


@pytest.mark.django_db(transaction=True)
def test_a_message_that_cannot_be_built_fails_without_bouncing(user, make_contacts,
                                                               make_service, smtp_sink):
    contacts = make_contacts(user, 2)
    type(contacts[0]).objects.filter(pk=contacts[0].pk).update(email="bad address@x.test")
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    with ThreadedDispatcher():
        progress = wait_done(task)
    assert (progress["sent"], progress["failed"]) == (1, 1)
    failed = SubTask.objects.get(task=task, status="failed")
    assert failed.error_class == "render_error"
    assert type(contacts[0]).objects.get(pk=contacts[0].pk).status == "active"
    assert REGISTRY.get_sample_value("edm_dispatch_messages_total", {"outcome": "sent"}) >= 1


@pytest.mark.django_db(transaction=True)
def test_immediate_error_types_go_straight_to_the_dlq(user, make_contacts, make_service,
                                                      smtp_sink, set_config):
    set_config(dlq__immediate_error_types=["smtp_452"])
    contacts = make_contacts(user, 2)
    smtp_sink.handler.reject[contacts[0].email] = "452 4.2.2 mailbox full"
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    with ThreadedDispatcher():
        progress = wait_done(task)
    assert (progress["sent"], progress["dead"]) == (1, 1)
    letter = DeadLetter.objects.get()
    assert letter.error_type == "smtp_452" and letter.subtask.attempts == 1
    assert Task.objects.get(pk=task.pk).status in ("sending", "completed")


@pytest.mark.django_db(transaction=True)
def test_a_reprocessed_dead_letter_is_resolved_when_sent(user, make_contacts, make_service,
                                                         smtp_sink, set_config):
    from apps.dispatch import services

    set_config(dlq__immediate_error_types=["smtp_452"])
    contacts = make_contacts(user, 1)
    smtp_sink.handler.reject[contacts[0].email] = "452 4.2.2 mailbox full"
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    with ThreadedDispatcher():
        wait_done(task)
        letter = DeadLetter.objects.get()
        smtp_sink.handler.reject.clear()
        services.dead_letter_reprocess(dead_letter_id=letter.pk)
        progress = wait_done(task)
    assert progress["sent"] == 1
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.RESOLVED and letter.resolved_at is not None
