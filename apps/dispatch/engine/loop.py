"""The dispatcher loop: tick, hand chunks to sender threads, sleep until work is ready.

* The main thread runs ticks (short transactions) and housekeeping; sender threads (one
  per open SMTP connection) send chunks; their database work goes through a few
  connections (``database``); no thread holds a transaction while a message is on the
  wire.
* How many connections: ``queue.concurrency`` when set, else one per ready service of
  the pools, up to ``queue.max_connections`` across the cluster (each of the
  ``queue.dispatchers`` loops takes its share). When this machine runs out of file
  descriptors (or the database of connections), the loop opens fewer and hands the
  claimed work back at once.
* Between ticks the loop sleeps until the next moment anything becomes ready (at most
  1 s), or until a ``NOTIFY`` on :data:`apps.dispatch.queues.NOTIFY_CHANNEL` (sent once
  per queued task) or a finished chunk wakes it.
* Configuration is re-read every second, so changes apply without a restart.
* Every ``COMPACT_EVERY`` seconds the loop folds the progress counters' rows
  (``progress.compact``).
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import psycopg
from django.db import DatabaseError, connection, connections

from apps.core.database import behind_transaction_pooler
from apps.dispatch import metrics, progress
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine import outcomes
from apps.dispatch.engine import slots as slot_lib
from apps.dispatch.engine.aio import EventSenders
from apps.dispatch.engine.database import DIRECT_UP_TO, DatabaseWork, Moves
from apps.dispatch.engine.tick import Chunk, next_ready_in, tick
from apps.dispatch.engine.worker import (
    Abandoned,
    SenderCache,
    TemplateCache,
    collect_reports,
    run_chunk,
)
from apps.dispatch.queues import NOTIFY_CHANNEL
from apps.services.senders import SendError

logger = logging.getLogger("edm.dispatch")

MAX_SLEEP = 1.0
# A loop that lost its LISTEN connection tries to open it again this often (seconds).
RELISTEN_EVERY = 5.0
# Waits are cut into pieces this long so that a stop request is seen quickly.
STOP_CHECK = 0.2
MIN_SLEEP = 0.01
HOUSEKEEPING_EVERY = 1.0
COMPACT_EVERY = 10.0
# With many sender threads, a tick waits until an eighth of them are free or this long
# after the previous tick: one tick for many finished chunks.
TICK_GATHER = 0.02
# After a local shortage (file descriptors), the loop keeps to fewer connections this long.
SHORTAGE_HOLD = 60.0
# Sender threads block in socket reads: a small stack each, so that thousands fit.
SENDER_STACK = 512 * 1024


@dataclass
class LoopStats:
    ticks: int = 0
    claimed: int = 0
    sent: int = 0
    chunks: int = 0
    tick_seconds: list[float] = field(default_factory=list)


class _SenderPool:
    """Sender threads fed from a queue (they hold no database connection)."""

    def __init__(self, run) -> None:
        self._run = run
        self.jobs: queue.Queue = queue.Queue()
        self.done: queue.Queue = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.in_flight = 0

    def submit(self, chunk: Chunk, *, size: int) -> None:
        idle = len(self.threads) - self.in_flight
        if idle <= 0 and len(self.threads) < size:
            previous = threading.stack_size(SENDER_STACK)
            try:
                thread = threading.Thread(
                    target=self._work, name=f"edm-sender-{len(self.threads)}", daemon=True
                )
                thread.start()
            finally:
                threading.stack_size(previous)
            self.threads.append(thread)
        self.in_flight += 1
        self.jobs.put(chunk)

    def _work(self) -> None:
        try:
            while True:
                chunk = self.jobs.get()
                if chunk is None:
                    return
                try:
                    report = self._run(chunk)
                except Exception as exc:  # noqa: BLE001 - the loop hands the chunk back
                    logger.warning("chunk of service %s could not run: %s", chunk.service.id, exc)
                    report = Abandoned(chunk, exc)
                self.done.put(report)
        finally:
            connections.close_all()

    def collect(self, timeout: float) -> list:
        """Reports of finished chunks, waiting up to ``timeout`` for the first."""
        reports = collect_reports(self.done, timeout)
        self.in_flight -= len(reports)
        return reports

    def shutdown(self) -> list:
        """Wait for the chunks in flight; stop the threads; return the last reports."""
        reports = []
        while self.in_flight > 0:
            reports += self.collect(1.0)
        self.in_flight = 0
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join(timeout=10)
        return reports


def _listen_connection() -> psycopg.Connection | None:
    """A separate autocommit connection that LISTENs for new work (``None`` if it cannot
    be opened, or behind a pooler in transaction mode, which does not carry
    notifications: the loop then only polls, at most a second late)."""
    if behind_transaction_pooler():
        return None
    params = connection.get_connection_params()
    wanted = {
        key: params[key]
        for key in ("dbname", "user", "password", "host", "port")
        if params.get(key)
    }
    try:
        listener = psycopg.connect(autocommit=True, **wanted)
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
    except psycopg.Error:
        logger.warning("cannot LISTEN for new work; polling instead", exc_info=True)
        return None
    return listener


def _plan_for_key_lookups(on: bool) -> None:
    """Join planning of the loop's connection for its lifetime (``outcomes``: why); reset
    afterwards, since a q2 worker reuses the connection for other work. Not behind a
    pooler in transaction mode (the setting would land on another client's server
    connection)."""
    if behind_transaction_pooler():
        return
    names = outcomes.KEY_LOOKUP_JOINS
    sql = "; ".join(f"SET {n} = off" if on else f"RESET {n}" for n in names)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    except DatabaseError:
        if on:
            raise
        logger.debug("could not reset the planner settings", exc_info=True)


class Dispatcher:
    """One dispatcher loop. ``run()`` returns when ``stop`` is set, ``seconds`` elapsed,
    its slot was lost, or (``once``) after the first tick's chunks are done."""

    def __init__(
        self,
        *,
        stop: threading.Event | None = None,
        seconds: float | None = None,
        once: bool = False,
        use_slot: bool = True,
    ) -> None:
        self.stop = stop or threading.Event()
        self.seconds = seconds
        self.once = once
        self.use_slot = use_slot
        self.stats = LoopStats()
        self.slot: tuple[int, str] | None = None
        self.slot_lost = False

        self.wait_recorded: set[int] = set()
        self.known_sending: set[int] = set()
        self.touched_tasks: set[int] = set()
        self.conf = DispatchSettings.load()
        self.senders = SenderCache(timeout=self.conf.smtp_timeout)
        self.pool: _SenderPool | EventSenders = _SenderPool(self._run_chunk)
        self._shortage_cap: int | None = None
        self._shortage_until = 0.0
        self._last_tick = 0.0
        self.db = DatabaseWork()
        self.templates = TemplateCache(self.db)
        self.events = self.on_events()
        self.moves = Moves(direct=self._moves_direct())
        self._next_completion_check = 0.0
        self._next_compaction = 0.0
        self.listener: psycopg.Connection | None = None
        self._relisten_at = 0.0

    def _run_chunk(self, chunk: Chunk):
        return run_chunk(
            chunk,
            conf=self.conf,
            senders=self.senders,
            templates=self.templates,
            stop=self.stop,
            wait_recorded=self.wait_recorded,
            db=self.db,
            moves=self.moves,
        )

    def on_events(self) -> bool:
        """Whether this loop's SMTP connections are carried by an event loop
        (``queue.sender``; ``auto``: beyond ``DIRECT_UP_TO`` connections, where threads
        would cost more than their messages)."""
        mode = self.conf.sender
        return mode == "events" or (mode == "auto" and self.configured_limit() > DIRECT_UP_TO)

    def _event_pool(self) -> EventSenders:
        return EventSenders(
            conf=lambda: self.conf,
            db=self.db,
            moves=self.moves,
            templates=self.templates,
            stop=self.stop,
            wait_recorded=self.wait_recorded,
            run_threaded=self._run_chunk,
            timeout=self.conf.smtp_timeout,
        )

    def _moves_direct(self) -> bool:
        """A connection of its own per sender thread for the position moves (few
        threads), else the shared mover (always on the event loop)."""
        return not self.events and self.configured_limit() <= DIRECT_UP_TO

    def configured_limit(self) -> int:
        """``queue.concurrency``, or the loop's share of ``queue.max_connections``."""
        return self.conf.concurrency or max(
            1, self.conf.max_connections // max(1, self.conf.dispatchers)
        )

    def connections_limit(self) -> int:
        """How many SMTP connections (sender threads) this loop may have open: the
        configured limit, less for a while after this machine ran short of file
        descriptors."""
        limit = self.configured_limit()
        if self._shortage_cap is not None:
            if time.monotonic() < self._shortage_until:
                return min(limit, self._shortage_cap)
            self._shortage_cap = None
        return limit

    def acquire_slot(self) -> bool:
        if not self.use_slot:
            return True
        self.slot = slot_lib.slot_acquire(limit=self.conf.dispatchers)
        return self.slot is not None

    def run(self) -> LoopStats:
        if self.slot is None and not self.acquire_slot():
            logger.info("no free dispatcher slot (queue.dispatchers=%s)", self.conf.dispatchers)
            return self.stats
        deadline = None if self.seconds is None else time.monotonic() + self.seconds
        # What the process holds by now (Django, the apps, the settings) is kept out of
        # the collector's full passes: with hundreds of sender threads each pass would
        # stop them all for tens of milliseconds.
        gc.freeze()
        if self.events:
            self.pool = self._event_pool()
        self.listener = _listen_connection()
        # The senders' database connections first: the SMTP connections may then take
        # every file descriptor this process has left.
        self.db.start()
        self.moves.start()
        self._relisten_at = time.monotonic() + RELISTEN_EVERY
        next_tick = 0.0
        next_housekeeping = 0.0
        _plan_for_key_lookups(True)
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_housekeeping:
                    if not self._housekeeping():
                        break
                    next_housekeeping = now + HOUSEKEEPING_EVERY
                limit = self.connections_limit()
                free = limit - self.pool.in_flight
                if free > 0 and now >= next_tick and self._tick_due(free, limit, now):
                    claimed = self._tick(free)
                    if claimed:
                        next_tick = now
                    else:
                        next_tick = now + self._sleep_for()
                    if self.once and not self.pool.in_flight:
                        break
                now = time.monotonic()
                free = limit - self.pool.in_flight
                # Block until a chunk finishes when every sender is busy; otherwise until
                # the next tick is due. Never spin: a due tick runs on the next iteration.
                due = max(next_tick, self._last_tick + TICK_GATHER) if free > 0 else now
                wait = STOP_CHECK if free <= 0 else min(max(0.0, due - now), STOP_CHECK)
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - now))
                if self.pool.in_flight:
                    reports = self.pool.collect(wait)
                    if reports:
                        next_tick = min(next_tick, time.monotonic())
                        self._collected(reports)
                        if self.once and not self.pool.in_flight:
                            break
                    if self._drain(0.0):
                        next_tick = time.monotonic()
                elif wait > 0 and self._drain(wait):
                    next_tick = time.monotonic()
        finally:
            self.stop.set()  # sender threads stop before their next message
            self._collected(self.pool.shutdown(), finishing=True)
            self.db.close()
            self.moves.close()
            self.senders.close_all()
            if self.listener is not None:
                self.listener.close()
                self.listener = None
            if self.slot is not None:
                slot_lib.slot_release(*self.slot)
                self.slot = None
            _plan_for_key_lookups(False)
        return self.stats

    def _tick_due(self, free: int, limit: int, now: float) -> bool:
        """A tick now? Always with a few sender threads; with many, once an eighth of them
        are free or ``TICK_GATHER`` after the previous tick (one tick claims for many
        finished chunks instead of one tick each). Never while the senders' database
        connections are down: nothing claimed could be sent."""
        if not self.db.healthy:
            return False
        return free >= max(1, limit // 8) or now - self._last_tick >= TICK_GATHER

    def _collected(self, reports: list, *, finishing: bool = False) -> None:
        self.stats.chunks += len(reports)
        for report in reports:
            if isinstance(report, Abandoned):
                self._abandon(report)
            else:
                self.stats.sent += len(report.sent)
                self.touched_tasks.update(report.task_ids)
                if report.fault is not None and report.fault.kind == SendError.LOCAL:
                    self._short_of_descriptors()
        if finishing:
            return
        now = time.monotonic()
        if self.touched_tasks and now >= self._next_completion_check:
            # A task whose last messages were just recorded completes now rather than at
            # the next housekeeping (at most every 0.2 s, only the tasks just served).
            from apps.dispatch.services import tasks_complete_finished

            tasks_complete_finished(task_ids=self.touched_tasks)
            self.touched_tasks.clear()
            self._next_completion_check = now + 0.2

    def _abandon(self, abandoned: Abandoned) -> None:
        """Hand a chunk back at once through the loop's own connection (it claimed the
        chunk, so it works) rather than holding it for the lease."""
        chunk = abandoned.chunk
        try:
            released = outcomes.chunk_abandon(chunk.service, chunk.subtasks)
        except DatabaseError:
            logger.exception("could not hand back the chunk of service %s", chunk.service.id)
            return
        logger.warning(
            "handed back %s subtasks of service %s: %s", released, chunk.service.id, abandoned.error
        )

    def _short_of_descriptors(self) -> None:
        """Open no more SMTP connections than are open now, for ``SHORTAGE_HOLD``
        seconds (then try more again)."""
        cap = max(1, self.senders.open_count() + getattr(self.pool, "open_count", int)())
        if cap != self._shortage_cap:
            logger.warning("out of file descriptors: keeping to %s SMTP connections", cap)
            self._shortage_cap = cap
        self._shortage_until = time.monotonic() + SHORTAGE_HOLD

    def _tick(self, free: int) -> int:
        self._last_tick = time.monotonic()
        started = time.perf_counter()
        chunks = tick(self.conf, free=free, known_sending=self.known_sending)
        elapsed = time.perf_counter() - started
        metrics.DISPATCH_TICK_SECONDS.observe(elapsed)
        self.stats.ticks += 1
        if len(self.stats.tick_seconds) < 100_000:
            self.stats.tick_seconds.append(elapsed)
        claimed = sum(len(chunk.subtasks) for chunk in chunks)
        self.stats.claimed += claimed
        if claimed:
            metrics.DISPATCH_CLAIMED.inc(claimed)
        for chunk in chunks:
            self.pool.submit(chunk, size=self.connections_limit())
        return claimed

    def _sleep_for(self) -> float:
        ready_in = next_ready_in()
        if ready_in is None:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(MIN_SLEEP, ready_in))

    def _housekeeping(self) -> bool:
        """Re-read configuration, renew the slot, finish tasks; ``False``: stop the loop."""
        from apps.dispatch.services import tasks_complete_finished

        self.conf = DispatchSettings.load()
        self.senders.timeout = self.conf.smtp_timeout
        self.moves.direct = self._moves_direct()
        if self.slot is not None and not slot_lib.slot_heartbeat(
            *self.slot, limit=self.conf.dispatchers
        ):
            logger.info("dispatcher slot %s given up", self.slot[0])
            self.slot = None
            self.slot_lost = True
            return False
        tasks_complete_finished()
        self.senders.close_idle()
        if isinstance(self.pool, EventSenders):
            self.pool.housekeeping(self.conf.smtp_timeout)
        now = time.monotonic()
        if now >= self._next_compaction:
            # On a database worker: under load a compaction can take a while, and the
            # ticks must go on meanwhile.
            self.db.submit(progress.compact)
            self._next_compaction = now + COMPACT_EVERY
        return True

    def _drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for notifications; drain them all; True if any came.

        Without a LISTEN connection (none could be opened, or it broke: a database
        restart, a network cut) the loop polls — it waits ``timeout`` and ticks, at most
        a second late — and tries to listen again every ``RELISTEN_EVERY`` seconds."""
        if self.listener is None:
            if time.monotonic() >= self._relisten_at:
                self.listener = _listen_connection()
                self._relisten_at = time.monotonic() + RELISTEN_EVERY
            if self.listener is None:
                if timeout > 0:
                    self.stop.wait(timeout)
                return False
        got = False
        try:
            for _ in self.listener.notifies(timeout=timeout, stop_after=1):
                got = True
            if got:  # debounce: everything already queued counts as one wake-up
                for _ in self.listener.notifies(timeout=0.0):
                    pass
        except psycopg.Error as exc:
            logger.warning("lost the LISTEN connection (%s); polling instead", exc)
            self.listener.close()
            self.listener = None
            self._relisten_at = time.monotonic() + RELISTEN_EVERY
            return True  # something may have been missed: tick now
        return got
