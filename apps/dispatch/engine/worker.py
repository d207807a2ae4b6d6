"""Sending one chunk: one service, its connection, its messages in a row.

Runs in a sender thread with its own database connection and no open transaction while
a message is on the wire (``outcomes`` says what is written when). Rate: the next
message starts ``sending_rate`` seconds after the previous one was accepted, so two
messages of a service never reach the server closer than that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from django.db import connection

from apps.deliverability import sending as deliverability
from apps.dispatch import metrics
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine import outcomes
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
        model = EmailService(
            pk=service.id,
            kind=service.kind,
            host=service.host,
            port=service.port,
            security=service.security,
            username=service.username,
            password_encrypted=service.password_encrypted,
        )
        sender = sender_for(model, timeout=self.timeout)
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
    """Each task's templates compiled once per dispatcher loop."""

    def __init__(self) -> None:
        self._compiled: dict[int, CompiledTask] = {}
        self._lock = threading.Lock()

    def get(self, task_id: int) -> CompiledTask:
        compiled = self._compiled.get(task_id)
        if compiled is not None:
            return compiled
        compiled = compile_task(task_id)
        with self._lock:
            self._compiled[task_id] = compiled
        return compiled


def _render(claimed: Claimed, service: ReservedService, templates: TemplateCache) -> bytes:
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
    return deliverability.sign_message(
        message, service_id=service.id, from_email=service.from_email
    )


def run_chunk(
    chunk: Chunk,
    *,
    conf: DispatchSettings,
    senders: SenderCache,
    templates: TemplateCache,
    stop: threading.Event,
    wait_recorded: set[int],
) -> outcomes.ChunkReport:
    """Send a chunk and record every outcome; never raises for a send failure.

    Per message: render; send the chunk's position move (the one database round trip)
    and, while it travels, start the SMTP transaction; once the recipient is accepted,
    wait for the move's answer, then send the data — so the message is on the wire only
    after its position is written, without the round trip adding to each message's time.
    A failure is recorded at once; the accepted messages are recorded together when the
    chunk ends (``outcomes.finish_chunk``)."""
    service = chunk.service
    report = outcomes.ChunkReport(task_ids={claimed.task_id for claimed in chunk.subtasks})
    if not getattr(connection, "_edm_prepared", False):
        outcomes.prepare_connection()
        connection._edm_prepared = True
    try:
        sender = senders.acquire(service)
    except SendError as exc:
        report.fault = exc
        report.unattempted = list(chunk.subtasks)
        outcomes.finish_chunk(service, report, conf=conf, wait_recorded=wait_recorded)
        metrics.DISPATCH_MESSAGES.labels(outcome="service_fault").inc()
        return report
    position = {claimed.id: index for index, claimed in enumerate(chunk.subtasks)}
    broken = False
    last_done = 0.0
    pending: deque[Claimed] = deque()
    move: _Move | None = None
    try:
        report.log, todo = outcomes.chunk_start(service, chunk.subtasks)
        if report.log is None:
            todo = chunk.subtasks  # lease already gone: hand them back (token-fenced)
        else:
            # Contacts that unsubscribed or were suppressed since the task was queued.
            todo = deliverability.subtasks_skip_unsendable(todo)
        pending.extend(todo)
        pgconn = outcomes.advance_connection()
        while pending and report.log is not None:
            claimed = pending[0]
            if stop.is_set():
                break
            if service.sending_rate > 0 and last_done:
                wait = last_done + service.sending_rate - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    break
            try:
                message = _render(claimed, service, templates)
            except Exception as exc:  # noqa: BLE001 - a template/address error is the task's
                pending.popleft()
                _record_render_error(claimed, service, exc, report, conf)
                continue
            # The position moves while MAIL and RCPT are exchanged; the message's data
            # goes out only once the move is confirmed (``before_data``).
            move = _Move(report.log, position[claimed.id], pgconn)
            started = time.monotonic()
            try:
                sender.send(
                    from_addr=deliverability.envelope_from(claimed.id, service.from_email),
                    to_addrs=[claimed.to_email],
                    message=message,
                    before_data=move.answer,
                )
            except Withdrawn:
                # The fence failed, nothing went out: find out why.
                stopped = outcomes.chunk_recheck(report.log, report.task_ids)
                if stopped is None:
                    logger.warning("chunk %s lost its lease; stopping it", report.log.id)
                    break
                if stopped:
                    kept = outcomes.drop_tasks(list(pending), stopped)
                    pending.clear()
                    pending.extend(kept)
                continue
            except SendError as exc:
                last_done = time.monotonic()
                move.answer()  # refused before its data: the answer is still to collect
                pending.popleft()
                report.attempted += 1
                broken = exc.kind in (SendError.SERVICE, SendError.THROTTLED) or (
                    getattr(sender, "connection", True) is None
                )
                result = outcomes.record_failure(claimed, exc, service=service, conf=conf)
                metrics.DISPATCH_MESSAGES.labels(outcome=result).inc()
                if result in ("failed", "dead", "retry"):
                    report.failed += 1
                if exc.kind in (SendError.SERVICE, SendError.THROTTLED):
                    report.fault = exc
                    break
                continue
            pending.popleft()
            report.attempted += 1
            last_done = time.monotonic()
            report.latencies.append(last_done - started)
            report.sent.append(claimed)
            report.sent_at.append(last_done)
    finally:
        if move is not None:
            move.collect_quietly()
        report.unattempted = list(pending)
        senders.release(service.id, broken=broken)
        outcomes.finish_chunk(service, report, conf=conf, wait_recorded=wait_recorded)
        if report.sent:
            metrics.DISPATCH_MESSAGES.labels(outcome="sent").inc(len(report.sent))
    return report


class _Move:
    """A position move sent ahead (``outcomes.advance_begin``) and answered once."""

    __slots__ = ("log", "pgconn", "position", "result")

    def __init__(self, log: outcomes.ChunkLog, position: int, pgconn) -> None:
        self.log = log
        self.position = position
        self.pgconn = pgconn
        self.result: bool | None = None
        outcomes.advance_begin(log, position, pgconn)

    def answer(self) -> bool:
        if self.result is None:
            self.result = False  # answered, whatever happens below
            self.result = outcomes.advance_end(self.log, self.position, self.pgconn)
        return self.result

    def collect_quietly(self) -> None:
        """Leave the connection free for the chunk's end, whatever went wrong."""
        if self.result is None:
            try:
                self.answer()
            except Exception:
                logger.debug("position move of an interrupted message", exc_info=True)


def _record_render_error(
    claimed: Claimed,
    service: ReservedService,
    exc: Exception,
    report: outcomes.ChunkReport,
    conf: DispatchSettings,
) -> None:
    """A message that cannot be built (bad address, template failing for this contact)
    is a permanent failure of that recipient, never put on the wire."""
    logger.warning("subtask %s cannot be rendered: %s", claimed.id, exc)
    error = SendError(f"cannot build the message: {exc}", kind=SendError.PERMANENT)
    error.code = None
    result = outcomes.record_failure(claimed, _RenderError(error), service=service, conf=conf)
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
