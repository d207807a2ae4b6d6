"""Sending one chunk: one service, its connection, its messages in a row.

Runs in a sender thread (one per open SMTP connection) with no open transaction while a
message is on the wire; its database work goes through the loop's few connections
(``database``; ``outcomes`` says what is written when). Rate: a message is committed (its
final ".") no earlier than ``sending_rate`` after the previous commit of the service
(``policy.commit_at``), and its transaction starts only after the previous one was
answered — so two messages of a service never reach the server closer than that, while
the next message's MAIL, RCPT and DATA go ahead of its slot.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from apps.deliverability import dkim
from apps.deliverability import sending as deliverability
from apps.dispatch import metrics
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine import outcomes, policy
from apps.dispatch.engine.database import DatabaseWork, Move, Moves
from apps.dispatch.engine.tick import Chunk, Claimed, ReservedService
from apps.dispatch.mime import build_message
from apps.dispatch.templates import CompiledTask, compile_task
from apps.services.models import EmailService
from apps.services.senders import SendError, Withdrawn, sender_for

logger = logging.getLogger("edm.dispatch")

# A cached connection idle for longer than this is checked with NOOP before reuse.
CHECK_IDLE_AFTER = 2.0
# Cached connections idle for longer than this are closed by the loop's housekeeping.
CLOSE_IDLE_AFTER = 60.0
# A rate-limited message's transaction starts this much earlier than it took last time.
PREPARE_MARGIN = 0.01


@dataclass
class _CachedSender:
    sender: object
    fingerprint: tuple
    last_used: float
    busy: bool = False


@dataclass
class SenderCache:
    """Open connections kept per service across chunks (one chunk per service at a time:
    the reservation holds the service)."""

    timeout: float = 30.0
    entries: dict[int, _CachedSender] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The quickest answer to a final "." each server gave (``_Pace``), kept across chunks.
    answers: dict[tuple, float] = field(default_factory=dict)

    def acquire(self, service: ReservedService):
        """An open sender for ``service``; raises SendError when it cannot connect."""
        with self.lock:
            entry = self.entries.get(service.id)
            if entry is not None and entry.fingerprint != service.fingerprint:
                self.entries.pop(service.id)
                _close(entry.sender)
                entry = None
            if entry is not None:
                entry.busy = True
        if entry is not None:
            if time.monotonic() - entry.last_used > CHECK_IDLE_AFTER and not _alive(entry):
                _close(entry.sender)
                entry = None
                with self.lock:
                    self.entries.pop(service.id, None)
            else:
                return entry.sender
        sender = sender_for(service_model(service), timeout=self.timeout)
        sender.open()
        with self.lock:
            self.entries[service.id] = _CachedSender(
                sender=sender,
                fingerprint=service.fingerprint,
                last_used=time.monotonic(),
                busy=True,
            )
        return sender

    def release(self, service_id: int, *, broken: bool = False) -> None:
        with self.lock:
            entry = self.entries.get(service_id)
            if entry is None:
                return
            if broken:
                self.entries.pop(service_id)
            else:
                entry.busy = False
                entry.last_used = time.monotonic()
        if broken:
            _close(entry.sender)

    def open_count(self) -> int:
        """How many connections are open (or being used) now."""
        with self.lock:
            return len(self.entries)

    def close_idle(self, *, older_than: float = CLOSE_IDLE_AFTER) -> None:
        now = time.monotonic()
        with self.lock:
            idle = [
                key
                for key, entry in self.entries.items()
                if not entry.busy and now - entry.last_used > older_than
            ]
            closing = [self.entries.pop(key) for key in idle]
        for entry in closing:
            _close(entry.sender)

    def close_all(self) -> None:
        self.close_idle(older_than=-1)


def service_model(service: ReservedService) -> EmailService:
    """The reserved service as an (unsaved) model: what the senders are built from."""
    return EmailService(
        pk=service.id,
        kind=service.kind,
        host=service.host,
        port=service.port,
        security=service.security,
        username=service.username,
        password_encrypted=service.password_encrypted,
    )


def collect_reports(done: queue.Queue, timeout: float) -> list:
    """The reports in ``done``, waiting up to ``timeout`` for the first (the sender
    pools' ``collect``)."""
    reports = []
    try:
        reports.append(done.get(timeout=max(0.0, timeout)))
    except queue.Empty:
        return reports
    while True:
        try:
            reports.append(done.get_nowait())
        except queue.Empty:
            return reports


def _alive(entry: _CachedSender) -> bool:
    smtp = getattr(entry.sender, "connection", None)
    if smtp is None:
        return True  # not an SMTP sender (console/file), or it reconnects lazily
    try:
        return smtp.noop()[0] == 250
    except Exception:  # noqa: BLE001 - any failure means: open a new connection
        return False


def _close(sender) -> None:
    try:
        sender.close()
    except Exception:
        logger.debug("closing a sender failed", exc_info=True)


class TemplateCache:
    """Each task's templates compiled once per dispatcher loop. ``db`` runs the read of
    a task's templates (the sender threads hold no database connection)."""

    def __init__(self, db: DatabaseWork | None = None) -> None:
        self._compiled: dict[int, CompiledTask] = {}
        self._lock = threading.Lock()
        self.db = db

    def has(self, task_id: int) -> bool:
        return task_id in self._compiled

    def get(self, task_id: int) -> CompiledTask:
        compiled = self._compiled.get(task_id)
        if compiled is not None:
            return compiled
        compiled = self.db.run(compile_task, task_id) if self.db else compile_task(task_id)
        with self._lock:
            self._compiled[task_id] = compiled
        return compiled


def message_bytes(
    claimed: Claimed,
    service: ReservedService,
    templates: TemplateCache,
    *,
    signer: dkim.Signer | None = None,
) -> bytes:
    """The one place where a message's bytes are built: the task's templates rendered
    for the recipient's contact with the task's headers, assembled by
    :func:`apps.dispatch.mime.build_message` with the subtask's own Message-ID (the same
    on every attempt), DKIM-signed by ``signer`` (``dkim.signer_for`` of the service, cached
    for a minute, read through the database workers). Raises on a template or an address
    that cannot be used for this recipient."""
    compiled = templates.get(claimed.task_id)
    subject, text, html = compiled.render(claimed.contact)
    contact = claimed.contact
    to_name = f"{contact['first_name']} {contact['last_name']}".strip()
    message = build_message(
        from_email=service.from_email,
        from_name=compiled.from_name or service.from_name,
        to=claimed.to_email,
        to_name=to_name,
        subject=subject,
        text=text,
        html=html,
        message_id=claimed.message_id,
        headers=compiled.headers(contact),
    )
    return message if signer is None else signer.sign(message)


@dataclass
class _Pace:
    """The spacing of a rate-limited service's messages within a chunk
    (``policy.commit_at``): when the next one may be committed, and when to start its
    transaction so that it is ready by then (its MAIL, RCPT and DATA go ahead; only the
    final "." waits).

    The spacing counts from the moment the server may have noted the previous message,
    not only from its commit: the server notes it between the final "." and its answer,
    and a server that answers later than it does at best (busy, a thousand messages
    landing at once) may note it that much later. ``late`` is that delay, counted from
    the quickest answer any service on the same server (host and port) ever gave this
    process (``answers``, the sender cache's, kept across chunks): a server busy through
    a whole chunk, or all of a service's few messages, answers each one late, and taking
    that for its best let a stall before the server noted a message go unseen. For the
    server's first message, with nothing to compare, the whole wait counts. The next
    commit (and the service's next slot, through ``last_commit`` of the report) moves by
    ``late``."""

    sending_rate: float
    not_before: float
    prepare: float  # seconds a message takes up to its final "."
    last_commit: float | None = None
    held: float = 0.0
    late: float = 0.0  # how much later than the quickest the last answer came
    # The shortest wait for an answer to a final "." by server (shared across chunks).
    answers: dict[tuple, float] = field(default_factory=dict)
    server: tuple = ()

    @property
    def noted(self) -> float | None:
        """The latest moment the server may have noted the last committed message."""
        return None if self.last_commit is None else self.last_commit + self.late

    def commit_at(self) -> float:
        return policy.commit_at(
            previous=self.noted, not_before=self.not_before, sending_rate=self.sending_rate
        )

    def answered(self, at: float) -> None:
        """The server answered the last commit at ``at`` (``time.monotonic()``)."""
        if self.last_commit is None:
            return
        wait = max(0.0, at - self.last_commit)
        quickest = self.answers.get(self.server)
        if quickest is None:
            self.answers[self.server] = self.late = wait  # the first: all of its wait
        else:
            self.answers[self.server] = quickest = min(quickest, wait)
            self.late = wait - quickest

    def start_at(self) -> float:
        return self.commit_at() - self.prepare

    def commit(self, send: Callable[[], object]) -> None:
        """The sender's ``commit``: wait until the message may be committed (a short
        wait, not cut short by a stop request: its data is already on the wire), commit
        it, and note when — after the commit went out, so that a thread kept waiting for
        the processor between the two only spaces the next commit further."""
        wait = self.commit_at() - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.held = max(0.0, wait)
        send()
        self.last_commit = time.monotonic()

    async def commit_soon(self, send: Callable[[], object]) -> None:
        """:meth:`commit` on an event loop (the wait lets the other connections go on)."""
        wait = self.commit_at() - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.held = max(0.0, wait)
        send()
        self.last_commit = time.monotonic()

    @classmethod
    def of(cls, service: ReservedService, answers: dict[tuple, float]) -> _Pace:
        return cls(
            sending_rate=service.sending_rate,
            not_before=service.not_before,
            prepare=min(service.sending_rate, service.avg_response_time or policy.FIRST_GUESS),
            answers=answers,
            server=(service.host, service.port),
        )


@dataclass
class Abandoned:
    """A chunk whose sending could not start (its database work failed)."""

    chunk: Chunk
    error: BaseException


def run_chunk(
    chunk: Chunk,
    *,
    conf: DispatchSettings,
    senders: SenderCache,
    templates: TemplateCache,
    stop: threading.Event,
    wait_recorded: set[int],
    db: DatabaseWork,
    moves: Moves,
) -> outcomes.ChunkReport:
    """Send a chunk and record every outcome; never raises for a send failure.

    In one direction: open the service's connection; start the chunk (its row, and the
    check of its recipients: ``outcomes.chunk_start``); per message, render it, send its
    position move (the one database round trip) and, while that travels, start the
    SMTP transaction — once the recipient is accepted, wait for the move's answer, then
    send the data, so the message is on the wire only after its position is written,
    without the round trip adding to its time; a rate-limited service holds the final
    "." until its slot; a failure is recorded at once; the end writes the accepted
    messages, hands the rest back and updates the service (``outcomes.finish_chunk``).
    Every database call goes through ``db`` (a few connections for all the threads).
    Raises only when the database cannot be reached at the start (``NoDatabase`` or a
    ``DatabaseError``): nothing was sent, and the caller hands the chunk back."""
    service = chunk.service
    report = outcomes.ChunkReport(task_ids={claimed.task_id for claimed in chunk.subtasks})
    try:
        sender = senders.acquire(service)
    except SendError as exc:
        report.fault = exc
        report.unattempted = list(chunk.subtasks)
        db.run(outcomes.finish_chunk, service, report, conf=conf, wait_recorded=wait_recorded)
        local = exc.kind == SendError.LOCAL
        metrics.DISPATCH_MESSAGES.labels(outcome="local" if local else "service_fault").inc()
        return report
    try:
        report.log, todo = db.run(outcomes.chunk_start, service, chunk.subtasks)
    except BaseException:
        senders.release(service.id)
        raise
    if report.log is None:
        todo = chunk.subtasks  # lease already gone: hand them back (token-fenced)
    signer = dkim.signer_for(service_id=service.id, from_email=service.from_email, run=db.run)
    position = {claimed.id: index for index, claimed in enumerate(chunk.subtasks)}
    rated = service.sending_rate > 0
    pace = _Pace.of(service, senders.answers)
    broken = False
    pending: deque[Claimed] = deque(todo)
    move: Move | None = None
    try:
        while pending and report.log is not None:
            claimed = pending[0]
            if stop.is_set():
                break
            if not policy.may_commit_in_time(
                commit_at=max(pace.commit_at(), time.monotonic()),
                per_message=pace.prepare if rated else service.avg_response_time,
                deadline=service.deadline,
            ):
                break  # the rest goes back: this chunk's lease ends soon
            wait = pace.start_at() - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            try:
                message = message_bytes(claimed, service, templates, signer=signer)
            except Exception as exc:  # noqa: BLE001 - a template/address error is the task's
                pending.popleft()
                failure = render_failure(claimed, exc)
                result = db.run(
                    outcomes.record_failure, claimed, failure, service=service, conf=conf
                )
                render_failure_counted(report, result)
                continue
            # The position moves while MAIL and RCPT are exchanged; the message's data
            # goes out only once the move is confirmed (``before_data``).
            move = moves.begin(report.log, position[claimed.id])
            started = time.monotonic()
            pace.held = 0.0
            try:
                sender.send(
                    from_addr=deliverability.envelope_from(claimed.id, service.from_email),
                    to_addrs=[claimed.to_email],
                    message=message,
                    before_data=move.answer,
                    commit=pace.commit if rated else None,
                )
            except Withdrawn:
                # The fence failed, nothing went out: find out why.
                stopped = db.run(outcomes.chunk_recheck, report.log, report.task_ids)
                if stopped is None:
                    logger.warning("chunk %s lost its lease; stopping it", report.log.id)
                    break
                if stopped:
                    kept = db.run(outcomes.drop_tasks, list(pending), stopped)
                    pending.clear()
                    pending.extend(kept)
                continue
            except SendError as exc:
                move.answer()  # refused before its data: the answer is still to collect
                pending.popleft()
                broken = refused(report, exc, pace=pace, started=started, sender=sender)
                result = db.run(outcomes.record_failure, claimed, exc, service=service, conf=conf)
                failure_counted(report, result)
                if exc.kind in (SendError.SERVICE, SendError.THROTTLED):
                    report.fault = exc
                    break
                continue
            pending.popleft()
            accepted(report, claimed, pace=pace, started=started)
    finally:
        if move is not None:
            move.collect_quietly()
        report.unattempted = list(pending)
        senders.release(service.id, broken=broken)
        db.run(outcomes.finish_chunk, service, report, conf=conf, wait_recorded=wait_recorded)
        if report.sent:
            metrics.DISPATCH_MESSAGES.labels(outcome="sent").inc(len(report.sent))
    return report


def refused(
    report: outcomes.ChunkReport, exc: SendError, *, pace: _Pace, started: float, sender
) -> bool:
    """A message refused (or lost) on the wire: counted as attempted, its "." noted when
    it went out; ``True`` when the connection must not be reused."""
    report.attempted += 1
    rated = pace.sending_rate > 0
    if rated and pace.last_commit is not None and pace.last_commit >= started:
        report.last_commit = pace.last_commit  # refused after its "."
    return exc.kind in (SendError.SERVICE, SendError.THROTTLED) or (
        getattr(sender, "connection", True) is None
    )


def failure_counted(report: outcomes.ChunkReport, result: str) -> None:
    """The outcome ``record_failure`` wrote for a refused message, in the metrics and
    the chunk's failure count (what the service's health reads)."""
    metrics.DISPATCH_MESSAGES.labels(outcome=result).inc()
    if result in ("failed", "dead", "retry", "unknown"):
        report.failed += 1


def accepted(
    report: outcomes.ChunkReport, claimed: Claimed, *, pace: _Pace, started: float
) -> None:
    """A message accepted by the server: its time (not its wait for the slot) for the
    service's average, the spacing of the next one, the chunk's sent list."""
    report.attempted += 1
    done = time.monotonic()
    elapsed = done - started - pace.held  # the message's own time, not its wait
    if pace.sending_rate > 0:
        pace.answered(done)
        report.last_commit = pace.noted
        pace.prepare = min(pace.sending_rate, elapsed + PREPARE_MARGIN)
    else:
        report.last_commit = done
    report.latencies.append(elapsed)
    report.sent.append(claimed)
    report.sent_at.append(done)


def render_failure(claimed: Claimed, exc: Exception) -> SendError:
    """A message that cannot be built (bad address, template failing for this contact)
    is a permanent failure of that recipient, never put on the wire."""
    logger.warning("subtask %s cannot be rendered: %s", claimed.id, exc)
    error = SendError(f"cannot build the message: {exc}", kind=SendError.PERMANENT)
    error.code = None
    return _RenderError(error)


def render_failure_counted(report: outcomes.ChunkReport, result: str) -> None:
    if result == "failed":
        report.failed += 1
    metrics.DISPATCH_MESSAGES.labels(outcome=result).inc()


class _RenderError(SendError):
    """A permanent failure labelled ``render_error`` (the contact is not bounced)."""

    def __init__(self, error: SendError) -> None:
        super().__init__(error.message, kind=SendError.PERMANENT)

    @property
    def error_class(self) -> str:
        return "render_error"
