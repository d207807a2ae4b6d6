"""The database connections of a dispatcher's sender threads: a few, whatever their number.

SMTP connections are many (one sender thread each, up to thousands per process); the
database work of all of them goes through a handful of PostgreSQL connections:

* :class:`DatabaseWork` — the short transactions of a chunk (its start, a failure, its
  end; :mod:`~apps.dispatch.engine.outcomes`) run on :data:`WORKERS` threads that each
  hold one Django connection; a sender thread hands its call over and waits for the
  result. A worker that cannot connect ("too many clients") goes away and the rest
  carry on; with none left the calls fail at once and the loop hands the work back.
* :class:`Moves` — the per-message position move (one round trip each, sent before
  ``MAIL FROM`` and awaited before ``DATA``): a thread gets a connection of its own while
  the loop has at most :data:`DIRECT_UP_TO` sender threads (the move then costs one
  libpq round trip, no hand-off: the zero-latency throughput); beyond that, every move
  goes to one mover thread, which writes all the moves waiting at that moment in one
  statement (no waiting window: a move sent while the previous statement runs joins the
  next one), in chunk-id order (the same order ``services._stop_chunks`` locks, so the
  two cannot deadlock).

So a loop uses at most ``WORKERS + DIRECT_UP_TO`` connections for its senders (or
``WORKERS + 1`` beyond), plus its own and its LISTEN connection: ≤ 16.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from django.db import DatabaseError, InterfaceError, OperationalError, connection, connections

from apps.core.database import behind_transaction_pooler
from apps.dispatch.engine import outcomes

logger = logging.getLogger("edm.dispatch")

WORKERS = 6
DIRECT_UP_TO = 8


# Errors after which a worker's connection is closed (the next call opens a new one).
_BROKEN = (psycopg.OperationalError, InterfaceError, OperationalError)


def _nothing() -> None:
    pass


class NoDatabase(DatabaseError):
    """No database worker can reach PostgreSQL: the caller hands its work back."""


def connect_raw() -> psycopg.Connection:
    """A new autocommit psycopg connection to Django's database, with the sender
    threads' session settings (``outcomes.prepare_connection``; none behind a pooler in
    transaction mode, where psycopg prepares nothing either)."""
    params = connection.get_connection_params()
    wanted = {
        key: params[key]
        for key in ("dbname", "user", "password", "host", "port")
        if params.get(key)
    }
    if behind_transaction_pooler():
        return psycopg.connect(autocommit=True, prepare_threshold=None, **wanted)
    raw = psycopg.connect(autocommit=True, **wanted)
    raw.execute("; ".join(f"SET {name} = off" for name in outcomes.KEY_LOOKUP_SETTINGS))
    raw.execute("SET synchronous_commit = off")
    return raw


class _Answer:
    """Something a caller waits for: on ``done`` (a thread), or through ``then``, called
    with it on the thread that answers (an event loop's callback)."""

    __slots__ = ("done", "then")

    def __init__(self, then: Callable | None) -> None:
        self.done = threading.Event() if then is None else None
        self.then = then

    def finish(self) -> None:
        then, self.then = self.then, None
        if then is None:
            if self.done is not None:
                self.done.set()
        else:
            # Let go of the callback first: it holds what waits for this answer (an event
            # loop's future, which will hold the answer), and the cycle would leave both
            # to the collector, whose full passes stop every connection of the loop.
            then(self)


class _Call(_Answer):
    __slots__ = ("args", "error", "fn", "kwargs", "result")

    def __init__(
        self, fn: Callable, args: tuple, kwargs: dict, then: Callable | None = None
    ) -> None:
        super().__init__(then)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.error: BaseException | None = None


class DatabaseWork:
    """Runs a sender thread's database calls on a few threads with a connection each."""

    def __init__(self, workers: int = WORKERS) -> None:
        self.size = workers
        self._calls: queue.Queue[_Call | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._alive = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def healthy(self) -> bool:
        """At least one worker holds a working connection (or none was needed yet)."""
        return not self._threads or self._alive > 0

    def run(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` on a worker's connection; its result, or its exception.
        Raises :class:`NoDatabase` when no worker can connect."""
        self._start()
        if not self._alive:
            raise NoDatabase("no database connection for the sender threads")
        call = _Call(fn, args, kwargs)
        self._calls.put(call)
        while not call.done.wait(1.0):
            if not self._alive:
                raise NoDatabase("no database connection for the sender threads")
        if call.error is not None:
            raise call.error
        return call.result

    def run_then(self, then: Callable[[_Call], None], fn: Callable, *args, **kwargs) -> None:
        """``fn(*args, **kwargs)`` on a worker; ``then(call)`` is called on that worker
        once it is done, with ``call.result`` or ``call.error`` set (the event-loop
        senders' way to wait without a thread). Raises :class:`NoDatabase` when no
        worker can connect."""
        self._start()
        if not self._alive:
            raise NoDatabase("no database connection for the sender threads")
        self._calls.put(_Call(fn, args, kwargs, then))

    def start(self) -> None:
        """Open the workers' connections now (before the SMTP connections take the
        process's file descriptors); waits until each worker has tried."""
        self._start()
        for _ in range(self.size):
            self.run(_nothing)

    def submit(self, fn: Callable, *args, **kwargs) -> None:
        """``fn(*args, **kwargs)`` on a worker without waiting (housekeeping that must not
        hold up the loop); an error is logged."""
        self._start()

        def logged() -> None:
            try:
                fn(*args, **kwargs)
            except Exception:
                logger.exception("background database work failed")

        self._calls.put(_Call(logged, (), {}))

    def _start(self) -> None:
        if self._threads or self._closed:
            return
        with self._lock:
            if self._threads:
                return
            self._alive = self.size
            for number in range(self.size):
                thread = threading.Thread(target=self._work, name=f"edm-db-{number}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        try:
            try:
                connection.ensure_connection()
                outcomes.prepare_connection()
            except DatabaseError as exc:
                logger.warning("a database worker cannot connect (%s); going on with fewer", exc)
                with self._lock:
                    self._alive -= 1
                self._fail_waiting_if_alone()
                return
            while True:
                call = self._calls.get()
                if call is None:
                    return
                try:
                    call.result = call.fn(*call.args, **call.kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    call.error = exc
                    if isinstance(exc, _BROKEN):
                        connection.close()  # the next call opens a new one
                finally:
                    call.finish()
        finally:
            connections.close_all()

    def _fail_waiting_if_alone(self) -> None:
        """With no worker left, calls already queued would wait for ever: fail them."""
        if self._alive > 0:
            return
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            if call is not None:
                call.error = NoDatabase("no database connection for the sender threads")
                call.finish()

    def close(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()


class Move:
    """A position move sent ahead and answered once (``answer`` is the sender's
    ``before_data``: ``False`` withdraws the message)."""

    __slots__ = ("_ticket", "log", "position", "result")

    def __init__(self, log: outcomes.ChunkLog, position: int, ticket: Callable[[], bool]) -> None:
        self.log = log
        self.position = position
        self._ticket = ticket
        self.result: bool | None = None

    def answer(self) -> bool:
        if self.result is None:
            self.result = False  # answered, whatever happens below
            self.result = self._ticket()
            if self.result:
                self.log.position = self.position
        return self.result

    def collect_quietly(self) -> None:
        """Leave the connection free for what follows, whatever went wrong."""
        if self.result is None:
            try:
                self.answer()
            except Exception:
                logger.debug("position move of an interrupted message", exc_info=True)


class _Ticket(_Answer):
    """A position move's answer: a sender thread waits on ``done``; an event-loop move is
    answered by ``then`` (called with the ticket on the mover) and needs no event."""

    __slots__ = ("error", "moved")

    def __init__(self, then: Callable[[_Ticket], None] | None = None) -> None:
        super().__init__(then)
        self.moved = False
        self.error: str | None = None

    def outcome(self) -> bool:
        """The answer of a finished ticket; raises if the move could not be written."""
        if self.error is not None:
            raise psycopg.OperationalError(self.error)
        return self.moved

    def __call__(self) -> bool:
        self.done.wait()
        return self.outcome()


class Moves:
    """Position moves of a loop's sender threads (module docstring)."""

    def __init__(self, *, direct: bool) -> None:
        self.direct = direct
        self._local = threading.local()
        self._owned: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._pending: list[tuple[int, int, int, _Ticket]] = []
        self._wake = threading.Condition(self._lock)
        self._mover: threading.Thread | None = None
        self._waiting = False  # the mover waits for moves (under the lock)
        self._closed = False

    def begin(self, log: outcomes.ChunkLog, position: int) -> Move:
        """Send the move of ``log`` to ``position``; the returned :class:`Move` answers
        whether it was written."""
        pgconn = self._own() if self.direct else None
        if pgconn is not None:
            outcomes.advance_begin(log, position, pgconn)
            return Move(log, position, lambda: outcomes.advance_end(log, position, pgconn))
        ticket = _Ticket()
        with self._lock:
            self._start_mover()
            self._pending.append((log.id, position, log.epoch, ticket))
            if self._waiting:
                self._wake.notify()
        return Move(log, position, ticket)

    def send_many(
        self, moves: list[tuple[outcomes.ChunkLog, int, Callable[[_Ticket], None]]]
    ) -> None:
        """Queue moves (``log``, ``position``, ``then``) for the shared mover; each
        ``then(ticket)`` is called on the mover once its move is answered
        (``ticket.outcome()``). The event-loop senders' way: no thread waits for them, and
        the moves of one turn of the loop wake the mover once."""
        entries = [(log.id, position, log.epoch, _Ticket(then)) for log, position, then in moves]
        with self._lock:
            self._start_mover()
            self._pending.extend(entries)
            if self._waiting:  # else it takes these moves with the batch it is writing
                self._wake.notify()

    def _own(self):
        """This thread's own connection (libpq handle), opened on first use; ``None``
        when it cannot be opened (the shared mover takes the move then)."""
        pgconn = getattr(self._local, "pgconn", None)
        if pgconn is not None or getattr(self._local, "failed", False):
            return pgconn
        try:
            raw = connect_raw()
            outcomes.prepare_advance(raw.pgconn)
        except psycopg.Error as exc:
            logger.warning("no connection of its own for a sender thread (%s)", exc)
            self._local.failed = True
            return None
        with self._lock:
            self._owned.append(raw)
        self._local.pgconn = raw.pgconn
        return raw.pgconn

    def start(self) -> None:
        """Open the shared mover's connection now (before the SMTP connections)."""
        if not self.direct:
            with self._lock:
                self._start_mover()

    def _start_mover(self) -> None:
        if self._mover is None and not self._closed:
            self._mover = threading.Thread(target=self._move_all, name="edm-mover", daemon=True)
            self._mover.start()

    def _move_all(self) -> None:
        raw: psycopg.Connection | None = None
        try:
            raw = _mover_connection()
        except psycopg.Error as exc:
            logger.warning("the position mover cannot connect yet (%s)", exc)
            raw = None
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._waiting = True
                    self._wake.wait()
                    self._waiting = False
                if not self._pending and self._closed:
                    break
                batch, self._pending = self._pending, []
            batch.sort(key=lambda entry: entry[0])
            try:
                if raw is None or raw.closed:
                    raw = _mover_connection()
                moved = _write_batch(raw.pgconn, batch)
            except Exception as exc:
                if isinstance(exc, psycopg.Error):
                    logger.warning("position moves failed: %s", exc)
                else:
                    logger.exception("position moves failed")
                for *_, ticket in batch:
                    ticket.error = str(exc)
                    ticket.finish()
                if raw is not None:
                    raw.close()
                    raw = None
                continue
            for chunk_id, _, _, ticket in batch:
                ticket.moved = chunk_id in moved
                ticket.finish()
        if raw is not None:
            raw.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._mover is not None:
            self._mover.join(timeout=10)
        for raw in self._owned:
            try:
                raw.close()
            except psycopg.Error:
                pass
        self._owned.clear()


def _mover_connection() -> psycopg.Connection:
    """The shared mover's connection, its statement prepared."""
    raw = connect_raw()
    outcomes.prepare_advance(raw.pgconn, outcomes.ADVANCE_MANY_NAME)
    return raw


def _write_batch(pgconn, batch: list[tuple[int, int, int, _Ticket]]) -> set[int]:
    """One statement for all the moves of ``batch``; the ids of the chunks that moved."""
    ids = b"{" + b",".join(b"%d" % entry[0] for entry in batch) + b"}"
    positions = b"{" + b",".join(b"%d" % entry[1] for entry in batch) + b"}"
    epochs = b"{" + b",".join(b"%d" % entry[2] for entry in batch) + b"}"
    outcomes.send_prepared(pgconn, outcomes.ADVANCE_MANY_NAME, [ids, positions, epochs])
    return {
        int(result.get_value(row, 0))
        for result in outcomes.collect_results(pgconn)
        for row in range(result.ntuples)
    }
