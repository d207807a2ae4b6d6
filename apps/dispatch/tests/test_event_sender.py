"""The event-loop sending path (``queue.sender``, ``engine/aio.py``): which loops take it,
and what it sends (``test_engine`` runs every engine test on both paths)."""

from __future__ import annotations

from collections import Counter

import pytest

from apps.dispatch.engine.aio import EventSenders
from apps.dispatch.engine.loop import Dispatcher, _SenderPool
from apps.dispatch.models import SubTask
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("sender", "concurrency", "events"),
    [
        ("auto", 8, False),
        ("auto", 9, True),
        ("threads", 200, False),
        ("events", 1, True),
    ],
)
def test_the_mode_follows_queue_sender_and_the_connections(sender, concurrency, events, set_config):
    set_config(queue__sender=sender, queue__concurrency=concurrency)
    dispatcher = Dispatcher(use_slot=False)
    assert dispatcher.on_events() is events
    # the position moves of an event loop always go through the shared mover
    assert dispatcher.moves.direct is (not events and concurrency <= 8)


def test_many_connections_on_one_event_loop_send_each_recipient_once(
    user, make_contacts, make_service, smtp_sink, set_config
):
    set_config(
        queue__sender="auto", queue__concurrency=0, queue__max_connections=24, queue__dispatchers=1
    )
    make_contacts(user, 60)
    for _ in range(12):
        make_service(port=smtp_sink.port)
    task = queue_task(user)

    with ThreadedDispatcher() as running:
        progress = wait_done(task)
        pool = running.dispatcher.pool
        assert isinstance(pool, EventSenders) and not isinstance(pool, _SenderPool)
        wait_until(lambda: pool.open_count() > 1, timeout=5, message="several connections")

    assert progress["sent"] == 60
    recipients = Counter(m.rcpt_tos[0] for m in smtp_sink.handler.messages)
    assert len(recipients) == 60 and set(recipients.values()) == {1}
    served = set(SubTask.objects.filter(task=task).values_list("service_id", flat=True))
    assert len(served) > 1


@pytest.mark.parametrize("sender", ["threads", "events"])
def test_the_shared_position_mover_sends_behind_a_transaction_pooler(
    sender, settings, user, make_contacts, make_service, smtp_sink, set_config
):
    # Behind PgBouncer in transaction mode nothing is prepared: the shared mover (threads
    # beyond 8 connections, every event loop) sends its statement's text each time.
    settings.EDM_DATABASE_POOLER = "transaction"
    set_config(queue__sender=sender, queue__concurrency=12, queue__dispatchers=1)
    make_contacts(user, 40)
    for _ in range(6):
        make_service(port=smtp_sink.port)
    task = queue_task(user)

    with ThreadedDispatcher() as running:
        assert running.dispatcher.moves.direct is False
        progress = wait_done(task)

    assert progress["sent"] == 40
    recipients = Counter(m.rcpt_tos[0] for m in smtp_sink.handler.messages)
    assert len(recipients) == 40 and set(recipients.values()) == {1}


@pytest.mark.parametrize("kind", ["call", "ticket"])
def test_an_answer_through_a_callback_leaves_no_reference_cycle(kind):
    """The event loop waits for a database call (or a position move) on a future that
    the answer's callback resolves with the call: once answered, the call lets go of
    the callback, so nothing is left for the collector, whose full passes stop every
    connection of the loop at once."""
    import gc
    import weakref

    from apps.dispatch.engine.database import _Call, _Ticket

    class Waiter:  # an event loop's future: it will hold the call that answers it
        pass

    gc.disable()
    try:
        waiter = Waiter()

        def then(done, waiter=waiter):
            waiter.result = done

        answer = _Call(lambda: None, (), {}, then) if kind == "call" else _Ticket(then)
        answer.finish()
        assert waiter.result is answer
        gone = weakref.ref(waiter)
        del waiter, then, answer
        assert gone() is None  # freed by reference counting alone
    finally:
        gc.enable()


def test_a_pause_ends_at_its_time_or_soon_after_a_stop_request():
    """A rate-limited chunk's wait for its slot is one timer; a stop request ends every
    pause within ``STOP_CHECK``, whatever is left of it."""
    import asyncio
    import threading
    import time

    from apps.dispatch.engine.aio import STOP_CHECK

    stop = threading.Event()
    pool = EventSenders(
        conf=lambda: None,
        db=None,
        moves=None,
        templates=None,
        stop=stop,
        wait_recorded=set(),
        run_threaded=lambda chunk: None,
        timeout=1.0,
    )
    try:
        started = time.monotonic()
        short = asyncio.run_coroutine_threadsafe(pool.pause(0.3), pool.loop)
        assert short.result(timeout=5) is False
        assert 0.29 <= time.monotonic() - started < 0.3 + STOP_CHECK
        long = [asyncio.run_coroutine_threadsafe(pool.pause(60), pool.loop) for _ in range(50)]
        time.sleep(0.1)
        stopped = time.monotonic()
        stop.set()
        assert all(future.result(timeout=5) is True for future in long)
        assert time.monotonic() - stopped <= 2 * STOP_CHECK
        assert not pool._pauses
        late = asyncio.run_coroutine_threadsafe(pool.pause(60), pool.loop)
        assert late.result(timeout=1) is True  # asked after the stop: no wait at all
    finally:
        pool.shutdown()
