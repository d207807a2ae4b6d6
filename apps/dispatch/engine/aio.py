"""Sending on an event loop: every SMTP connection of a dispatcher loop in one thread.

With hundreds of connections, one sender thread each spends more of the processor on
waking threads and handing the interpreter between them than on the messages (at 500
threads, about three times the CPU per message of 4). Here one asyncio loop, in its own
thread, carries all of them (:class:`EventSenders`, the dispatcher's pool when
``queue.sender`` says so, :mod:`~apps.dispatch.engine.loop`):

* a chunk runs as a coroutine, :func:`run_chunk_soon` — the same steps, in the same
  order, with the same outcome bookkeeping (``worker.refused``, ``worker.accepted``,
  ``outcomes``) as the threaded :func:`~apps.dispatch.engine.worker.run_chunk`;
* its database work still goes through the loop's few connections: a chunk's start,
  its failures and its end run on the database workers (``DatabaseWork.run_then``) and
  each message's position move on the shared mover (``Moves.send_many``), which answers
  all the moves waiting at that moment in one statement. The moves of one turn of the
  loop are handed over together (one wake-up of the mover for all of them), and their
  answers come back through an :class:`_Inbox` (one wake-up of the event loop for many
  answers), so no thread waits;
* the per-message guarantee is the threaded path's: a message's data goes out only once
  its position move is confirmed, so after a SIGKILL at most one message per open
  connection is ``unknown`` and none is sent twice;
* a chunk the event loop does not carry — a service that is not SMTP (console, file), or
  an envelope that is not plain ASCII with one recipient (quoting, SMTPUTF8) — runs the
  threaded ``run_chunk`` on a few threads beside it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from apps.deliverability import dkim
from apps.deliverability import sending as deliverability
from apps.dispatch import metrics
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine import outcomes, policy
from apps.dispatch.engine.database import DatabaseWork, Moves
from apps.dispatch.engine.tick import Chunk, Claimed, ReservedService
from apps.dispatch.engine.worker import (
    CHECK_IDLE_AFTER,
    CLOSE_IDLE_AFTER,
    Abandoned,
    TemplateCache,
    _Pace,
    accepted,
    collect_reports,
    failure_counted,
    message_bytes,
    refused,
    render_failure,
    render_failure_counted,
    service_model,
)
from apps.services.aio_senders import AsyncSMTPSender, takes
from apps.services.senders import SendError, Withdrawn, smtp_settings

logger = logging.getLogger("edm.dispatch")

# Threads for the chunks the event loop does not carry (non-SMTP services, envelopes
# that need smtplib's quoting).
THREADED_CHUNKS = 16
# A stop request is noticed within this while a rate-limited chunk waits for its slot.
STOP_CHECK = 0.2


class _Inbox:
    """Calls handed to the event loop from other threads, with one wake-up of the loop
    for all those that arrive while it is busy (``call_soon_threadsafe`` writes to the
    loop's wake-up pipe each time)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: list[tuple[Callable, object]] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, fn: Callable[[object], None], arg: object) -> None:
        with self._lock:
            self._items.append((fn, arg))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nothing waits any more
            pass

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        for fn, arg in items:
            fn(arg)


def _resolve(pair: tuple[asyncio.Future, object]) -> None:
    future, value = pair
    if not future.done():
        future.set_result(value)


@dataclass
class _Cached:
    sender: AsyncSMTPSender
    fingerprint: tuple
    last_used: float
    busy: bool = False


@dataclass
class AsyncSenderCache:
    """Open connections kept per service across chunks, on the event loop (one chunk per
    service at a time: the reservation holds the service)."""

    timeout: float = 30.0
    entries: dict[int, _Cached] = field(default_factory=dict)
    # The quickest answer to a final "." each server gave (``_Pace``), kept across chunks.
    answers: dict[tuple, float] = field(default_factory=dict)

    async def acquire(self, service: ReservedService) -> AsyncSMTPSender:
        """An open sender for ``service``; raises SendError when it cannot connect."""
        entry = self.entries.get(service.id)
        if entry is not None and entry.fingerprint != service.fingerprint:
            del self.entries[service.id]
            await entry.sender.close()
            entry = None
        if entry is not None:
            entry.busy = True
            idle = time.monotonic() - entry.last_used
            if idle <= CHECK_IDLE_AFTER or await entry.sender.alive():
                return entry.sender
            entry.sender._drop()
            self.entries.pop(service.id, None)
        sender = _sender_for(service, timeout=self.timeout)
        await sender.open()
        self.entries[service.id] = _Cached(
            sender=sender, fingerprint=service.fingerprint, last_used=time.monotonic(), busy=True
        )
        return sender

    def release(self, service_id: int, *, broken: bool = False) -> None:
        entry = self.entries.get(service_id)
        if entry is None:
            return
        if broken or entry.sender.connection is None:
            del self.entries[service_id]
            entry.sender._drop()
        else:
            entry.busy = False
            entry.last_used = time.monotonic()

    def open_count(self) -> int:
        return len(self.entries)

    async def close_idle(self, *, older_than: float = CLOSE_IDLE_AFTER) -> None:
        now = time.monotonic()
        idle = [
            key
            for key, entry in self.entries.items()
            if not entry.busy and now - entry.last_used > older_than
        ]
        closing = [self.entries.pop(key) for key in idle]
        if closing:
            await asyncio.gather(*(entry.sender.close() for entry in closing))


def _sender_for(service: ReservedService, *, timeout: float) -> AsyncSMTPSender:
    return AsyncSMTPSender(**smtp_settings(service_model(service)), timeout=timeout)


def carries(chunk: Chunk) -> bool:
    """Whether the event loop sends ``chunk`` (else a thread, with smtplib)."""
    service = chunk.service
    if service.kind != "smtp":
        return False
    sender = service.from_email
    return all(
        takes(deliverability.envelope_from(c.id, sender), [c.to_email]) for c in chunk.subtasks
    )


class EventSenders:
    """The dispatcher's sender pool on one event loop (module docstring): ``submit``
    chunks, ``collect`` their reports, ``shutdown`` — the interface of the threaded
    pool, so the dispatcher loop is the same for both."""

    def __init__(
        self,
        *,
        conf: Callable[[], DispatchSettings],
        db: DatabaseWork,
        moves: Moves,
        templates: TemplateCache,
        stop: threading.Event,
        wait_recorded: set[int],
        run_threaded: Callable[[Chunk], object],
        timeout: float,
    ) -> None:
        self._conf = conf
        self.db = db
        self.moves = moves
        self.templates = templates
        self.stop = stop
        self.wait_recorded = wait_recorded
        self._run_threaded = run_threaded
        self.done: queue.Queue = queue.Queue()
        self.in_flight = 0
        self.cache = AsyncSenderCache(timeout=timeout)
        self.loop = asyncio.new_event_loop()
        self.inbox = _Inbox(self.loop)
        self._tasks: set[asyncio.Task] = set()
        self._loading: dict[tuple, asyncio.Future] = {}
        self._moves_out: list[tuple[outcomes.ChunkLog, int, Callable]] = []
        self._pauses: set[asyncio.Future] = set()
        self._stop_watch: asyncio.TimerHandle | None = None
        self._threaded = ThreadPoolExecutor(THREADED_CHUNKS, thread_name_prefix="edm-sender")
        self.thread = threading.Thread(target=self._main, name="edm-smtp-loop", daemon=True)
        self.thread.start()
        self.threads = [self.thread]

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    # -- the dispatcher's side (its main thread) ------------------------------------

    def submit(self, chunk: Chunk, *, size: int) -> None:
        self.in_flight += 1
        if carries(chunk):
            self.inbox.put(self._start, chunk)
        else:
            self._threaded.submit(self._threaded_chunk, chunk)

    def collect(self, timeout: float) -> list:
        """Reports of finished chunks, waiting up to ``timeout`` for the first."""
        reports = collect_reports(self.done, timeout)
        self.in_flight -= len(reports)
        return reports

    def open_count(self) -> int:
        return self.cache.open_count()

    def housekeeping(self, timeout: float) -> None:
        """Connections idle for a minute closed; the send timeout followed."""
        self.cache.timeout = timeout
        self.inbox.put(self._close_idle, CLOSE_IDLE_AFTER)

    def shutdown(self) -> list:
        """Wait for the chunks in flight; close the connections; stop the loop."""
        reports = []
        while self.in_flight > 0:
            reports += self.collect(1.0)
        self.in_flight = 0
        closed = threading.Event()
        self.inbox.put(self._close_all, closed)
        closed.wait(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self._threaded.shutdown(wait=True)
        return reports

    def _threaded_chunk(self, chunk: Chunk) -> None:
        try:
            report = self._run_threaded(chunk)
        except Exception as exc:  # noqa: BLE001 - the loop hands the chunk back
            logger.warning("chunk of service %s could not run: %s", chunk.service.id, exc)
            report = Abandoned(chunk, exc)
        self.done.put(report)

    # -- the event loop's side ------------------------------------------------------

    def _start(self, chunk: Chunk) -> None:
        task = self.loop.create_task(self._one(chunk))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, chunk: Chunk) -> None:
        try:
            report = await run_chunk_soon(chunk, self)
        except Exception as exc:  # noqa: BLE001 - the loop hands the chunk back
            logger.warning("chunk of service %s could not run: %s", chunk.service.id, exc)
            report = Abandoned(chunk, exc)
        self.done.put(report)

    def _close_idle(self, older_than: float) -> None:
        self.loop.create_task(self.cache.close_idle(older_than=older_than))

    def _close_all(self, closed: threading.Event) -> None:
        async def close() -> None:
            try:
                await self.cache.close_idle(older_than=-1)
            finally:
                closed.set()

        self.loop.create_task(close())

    async def database(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` on a database worker, awaited."""
        future = self.loop.create_future()
        self.db.run_then(lambda call: self.inbox.put(_resolve, (future, call)), fn, *args, **kwargs)
        call = await future
        if call.error is not None:
            raise call.error
        return call.result

    async def once(self, key: tuple, fn: Callable, *args, **kwargs):
        """A blocking call that is rare (a cache miss: a task's templates, a service's
        DKIM key) on a thread beside the event loop; the chunks that miss the same key
        meanwhile wait for the same call (a wave of 1,000 first chunks reads once)."""
        future = self._loading.get(key)
        if future is None:
            future = self.loop.run_in_executor(self._threaded, lambda: fn(*args, **kwargs))
            self._loading[key] = future
            future.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(future)

    def move(self, log: outcomes.ChunkLog, position: int) -> asyncio.Future:
        """Queue a position move; the future gets its answered ticket. The moves queued in
        one turn of the loop go to the mover together, at the start of the next."""
        future = self.loop.create_future()
        if not self._moves_out:
            self.loop.call_soon(self._send_moves)
        self._moves_out.append(
            (log, position, lambda ticket: self.inbox.put(_resolve, (future, ticket)))
        )
        return future

    def _send_moves(self) -> None:
        moves, self._moves_out = self._moves_out, []
        self.moves.send_many(moves)

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; ``True`` if a stop request came meanwhile. One timer per
        pause (a rate-limited message waits most of its interval: a thousand services
        pause a thousand times a second); one loop-wide check every ``STOP_CHECK`` ends
        them all at a stop request."""
        if self.stop.is_set():
            return True
        future = self.loop.create_future()
        timer = self.loop.call_later(seconds, _resolve, (future, False))
        self._pauses.add(future)
        if self._stop_watch is None:
            self._stop_watch = self.loop.call_later(STOP_CHECK, self._watch_stop)
        try:
            return await future
        finally:
            timer.cancel()
            self._pauses.discard(future)

    def _watch_stop(self) -> None:
        self._stop_watch = None
        if self.stop.is_set():
            for future in self._pauses:
                _resolve((future, True))
        elif self._pauses:
            self._stop_watch = self.loop.call_later(STOP_CHECK, self._watch_stop)


async def run_chunk_soon(chunk: Chunk, pool: EventSenders) -> outcomes.ChunkReport:
    """:func:`~apps.dispatch.engine.worker.run_chunk` on the event loop: open the
    service's connection; start the chunk; per message, render it, send its position
    move and, while that travels, MAIL and RCPT; the data only once the move is
    confirmed; a rate-limited service holds the final "." until its slot; the end writes
    the accepted messages, hands the rest back and updates the service. Raises only
    when the database cannot be reached at the start (nothing was sent)."""
    conf = pool._conf()
    service = chunk.service
    report = outcomes.ChunkReport(task_ids={claimed.task_id for claimed in chunk.subtasks})
    finish = (outcomes.finish_chunk, service, report)
    options = {"conf": conf, "wait_recorded": pool.wait_recorded}
    try:
        sender = await pool.cache.acquire(service)
    except SendError as exc:
        report.fault = exc
        report.unattempted = list(chunk.subtasks)
        await pool.database(*finish, **options)
        local = exc.kind == SendError.LOCAL
        metrics.DISPATCH_MESSAGES.labels(outcome="local" if local else "service_fault").inc()
        return report
    try:
        report.log, todo = await pool.database(outcomes.chunk_start, service, chunk.subtasks)
        for task_id in report.task_ids:
            if not pool.templates.has(task_id):
                await pool.once(("templates", task_id), pool.templates.get, task_id)
        known, signer = dkim.signer_cached(service_id=service.id, from_email=service.from_email)
        if not known:
            signer = await pool.once(
                ("dkim", service.id, service.from_email),
                dkim.signer_for,
                service_id=service.id,
                from_email=service.from_email,
                run=pool.db.run,
            )
    except BaseException:
        if report.log is None:
            pool.cache.release(service.id)
            raise
        todo, signer = [], None  # started: the end below hands everything back
    if report.log is None:
        todo = chunk.subtasks  # lease already gone: hand them back (token-fenced)
    pending: deque[Claimed] = deque(todo)
    broken = False
    try:
        broken = await _send_all(chunk, pending, sender, report, pool, signer=signer, conf=conf)
    finally:
        report.unattempted = list(pending)
        pool.cache.release(service.id, broken=broken)
        await pool.database(*finish, **options)
        if report.sent:
            metrics.DISPATCH_MESSAGES.labels(outcome="sent").inc(len(report.sent))
    return report


async def _send_all(
    chunk: Chunk,
    pending: deque[Claimed],
    sender: AsyncSMTPSender,
    report: outcomes.ChunkReport,
    pool: EventSenders,
    *,
    signer,
    conf: DispatchSettings,
) -> bool:
    """The chunk's messages in a row (``pending`` keeps what was not attempted);
    ``True`` when the connection must not be reused."""
    service = chunk.service
    position = {claimed.id: index for index, claimed in enumerate(chunk.subtasks)}
    rated = service.sending_rate > 0
    pace = _Pace.of(service, pool.cache.answers)
    broken = False
    while pending and report.log is not None:
        claimed = pending[0]
        if pool.stop.is_set():
            break
        if not policy.may_commit_in_time(
            commit_at=max(pace.commit_at(), time.monotonic()),
            per_message=pace.prepare if rated else service.avg_response_time,
            deadline=service.deadline,
        ):
            break  # the rest goes back: this chunk's lease ends soon
        wait = pace.start_at() - time.monotonic()
        if wait > 0 and await pool.pause(wait):
            break
        try:
            message = message_bytes(claimed, service, pool.templates, signer=signer)
        except Exception as exc:  # noqa: BLE001 - a template/address error is the task's
            pending.popleft()
            failure = render_failure(claimed, exc)
            result = await pool.database(
                outcomes.record_failure, claimed, failure, service=service, conf=conf
            )
            render_failure_counted(report, result)
            continue
        # The position moves while MAIL and RCPT are exchanged; the message's data goes
        # out only once the move is confirmed (``before_data``).
        move = _Move(pool, report.log, position[claimed.id])
        started = time.monotonic()
        pace.held = 0.0
        try:
            await sender.send(
                from_addr=deliverability.envelope_from(claimed.id, service.from_email),
                to_addrs=[claimed.to_email],
                message=message,
                before_data=move.answer,
                commit=pace.commit_soon if rated else None,
            )
        except Withdrawn:
            # The fence failed, nothing went out: find out why.
            stopped = await pool.database(outcomes.chunk_recheck, report.log, report.task_ids)
            if stopped is None:
                logger.warning("chunk %s lost its lease; stopping it", report.log.id)
                break
            if stopped:
                kept = await pool.database(outcomes.drop_tasks, list(pending), stopped)
                pending.clear()
                pending.extend(kept)
            continue
        except SendError as exc:
            await move.settled()  # refused before its data: the answer is still to come
            pending.popleft()
            broken = refused(report, exc, pace=pace, started=started, sender=sender)
            result = await pool.database(
                outcomes.record_failure, claimed, exc, service=service, conf=conf
            )
            failure_counted(report, result)
            if exc.kind in (SendError.SERVICE, SendError.THROTTLED):
                report.fault = exc
                break
            continue
        pending.popleft()
        accepted(report, claimed, pace=pace, started=started)
    return broken


class _Move:
    """A message's position move, sent at once and answered once (its ``answer`` is the
    sender's ``before_data``)."""

    __slots__ = ("future", "log", "position")

    def __init__(self, pool: EventSenders, log: outcomes.ChunkLog, position: int) -> None:
        self.log, self.position = log, position
        self.future = pool.move(log, position)

    async def answer(self) -> bool:
        moved = (await self.future).outcome()
        if moved:
            self.log.position = self.position
        return moved

    async def settled(self) -> None:
        """Wait for the answer whatever it is (the chunk goes on after a refusal)."""
        try:
            await self.answer()
        except Exception:
            logger.debug("position move of a refused message", exc_info=True)
