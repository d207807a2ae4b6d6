"""Recording outcomes, fenced by attempt token: a zombie dispatcher cannot overwrite.

The subtask rows of a chunk are written twice in all: ``allocated`` by the claim and, in
bulk, their outcome when the chunk ends. What a crash must not lose lives in one small
row per chunk, :class:`~apps.dispatch.models.SendChunk`:

* :func:`chunk_start` — the chunk's subtasks in send order (one insert, committed), then
  the statuses of their tasks are read *after* that commit, waiting for a pause or cancel
  that holds the task row: such a change is either seen here or finds the chunk row and
  bumps its epoch (``services._stop_chunks``).
* :func:`chunk_advance` — one round trip per message, before it goes on the wire: the
  chunk's ``position`` moves to it, fenced by epoch and lease (a HOT update of a small
  row, a prepared statement run through libpq, ``synchronous_commit = off`` on the
  sender threads' connections). The sender threads send it before ``MAIL FROM`` and
  collect the answer after ``RCPT TO``, before the message's data. When the fence
  fails, :func:`chunk_recheck` says why: the lease is lost (stop), or a task of the chunk
  was paused or cancelled (its subtasks are handed back at once and the chunk goes on).
* :func:`record_failure` — one transaction per failed message (rare): back-off, DLQ,
  bounce, refund of the attempt for faults that are not the recipient's. Failures and
  skips are written at once, so every entry before ``position`` that is still
  ``allocated`` was accepted — which is how recovery reads a dead dispatcher's chunk.
* :func:`finish_chunk` — one transaction at the end of a chunk: the accepted subtasks
  become ``sent`` in one statement, those never put on the wire go back to pending (or
  ``cancelled``), the chunk row goes, the service's statistics and its next slot, the
  task's first-send metric, dead letters resolved.

**Trade-off of ``synchronous_commit = off``**: if the *database server* crashes, the last
few hundred milliseconds of position moves can be lost, so a message that was sent may be
found never attempted (resent after its lease: a duplicate) or an accepted one reported
``unknown``. A dispatcher crash loses nothing: the moves it made are committed.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import time
from dataclasses import dataclass, field

import psycopg
from django.db import connection, transaction

from apps.contacts.services.statuses import contacts_mark_status
from apps.core.database import PreparingCursor, behind_transaction_pooler
from apps.dispatch import queues
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine import policy
from apps.dispatch.engine.events import SUBTASK_COLUMNS, subtask_events_cte
from apps.dispatch.engine.tick import Claimed, ReservedService
from apps.monitoring.waits import task_waits_record
from apps.services.runtime import chunk_outcome_cte, service_disable_failing, service_give_back
from apps.services.senders import SendError

logger = logging.getLogger("edm.dispatch")

# Weight of the newest chunk in the services' moving averages.
ALPHA = 0.1

# Task statuses whose claimed subtasks may still be sent.
LIVE_TASK_STATUSES = ("scheduled", "queued", "sending")  # as spelled in _START

_HOSTNAME = socket.gethostname()[:48]

# The per-message statement, prepared once per connection and run through libpq
# directly (a third of the client CPU of a cursor's execute).
ADVANCE_NAME = b"edm_chunk_advance"
ADVANCE = (
    b"UPDATE dispatch_sendchunk SET position = $1 "
    b"WHERE id = $2 AND epoch = $3 AND lease_expires_at > now()"
)
# The same for many chunks at once: the shared position mover's statement.
ADVANCE_MANY_NAME = b"edm_chunk_advance_many"
ADVANCE_MANY = (
    b"UPDATE dispatch_sendchunk c SET position = u.position "
    b"FROM unnest($1::bigint[], $2::int[], $3::int[]) AS u(id, position, epoch) "
    b"WHERE c.id = u.id AND c.epoch = u.epoch AND c.lease_expires_at > now() "
    b"RETURNING c.id"
)
_PREPARED = {ADVANCE_NAME: ADVANCE, ADVANCE_MANY_NAME: ADVANCE_MANY}

# Claimed subtasks handed back: pending again, or cancelled with their task.
_RELEASE = """
UPDATE dispatch_subtask s SET
    status = CASE WHEN t.status IN ('cancelled', 'failed') THEN 'cancelled'
                  ELSE 'pending' END,
    service_id = NULL, lease_expires_at = NULL
FROM unnest(%s::bigint[], %s::int[]) AS u(id, token), dispatch_task t
WHERE s.id = u.id AND s.attempt_token = u.token AND (s.status = 'allocated') IS TRUE
  AND t.id = s.task_id
RETURNING s.task_id, s.status
"""


# Every statement of the dispatcher is a key lookup, or a join driven by an array of
# ids. Its tables churn faster than statistics follow (a task of 100,000 rows appears in a
# second; ``allocated`` rows exist only between claim and outcome), and with the
# estimates of a moment ago the planner picks hash joins over sequential scans, or drives
# a join from the handful of rows it believes ``status = 'allocated'`` has — measured at
# 350-550 ms for a 200-row outcome update that takes 2 ms by primary key. So the
# dispatcher's connections plan for key lookups, and the ``status`` tests of statements
# driven by id arrays are written ``(s.status = 'allocated') IS TRUE``, which no index
# can serve: the primary key is the only way in.
# The loop's own connection (ticks, housekeeping) keeps sequential scans for its small
# tables; it sets these for the loop's lifetime only (``engine/loop.py``). JIT is off
# too: a plan that still holds a disabled path carries a cost of 10^10, far above
# ``jit_above_cost``, and compiling it would take longer than running it.
KEY_LOOKUP_JOINS = ("enable_hashjoin", "enable_mergejoin", "jit")
KEY_LOOKUP_SETTINGS = ("enable_seqscan", *KEY_LOOKUP_JOINS)


def prepare_connection() -> None:
    """Session settings of a sender thread's connection: plans for key lookups (above)
    and ``synchronous_commit = off`` (module docstring). None behind a pooler in
    transaction mode: a session setting would stay on whichever server connection the
    statement ran on, for its other clients."""
    if behind_transaction_pooler():
        return
    with connection.cursor() as cursor:
        cursor.execute("; ".join(f"SET {name} = off" for name in KEY_LOOKUP_SETTINGS))
        cursor.execute("SET synchronous_commit = off")


def advance_connection() -> psycopg.pq.abc.PGconn:
    """The libpq connection of this thread's Django connection, with the per-message
    statement prepared (once per physical connection)."""
    connection.ensure_connection()
    raw = connection.connection
    if not getattr(raw, "_edm_advance_prepared", False):
        prepare_advance(raw.pgconn)
        raw._edm_advance_prepared = True
    return raw.pgconn


def prepare_advance(pgconn: psycopg.pq.abc.PGconn, name: bytes = ADVANCE_NAME) -> None:
    """Prepare the per-message statement (or ``ADVANCE_MANY_NAME``) on ``pgconn`` — not
    behind a pooler in transaction mode, where the next statement may run on another
    server connection (:func:`send_prepared` then sends its text each time)."""
    if behind_transaction_pooler():
        return
    result = pgconn.prepare(name, _PREPARED[name], None)
    if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
        raise psycopg.OperationalError(result.error_message.decode("utf-8", "replace"))


@dataclass
class ChunkLog:
    """A started chunk: its row and the fence the dispatcher holds."""

    id: int
    epoch: int = 0
    position: int = -1


def _release(cursor, claimed: list[Claimed]) -> int:
    """Hand ``claimed`` back (token-fenced); returns how many were."""
    if not claimed:
        return 0
    cursor.execute(_RELEASE, [[c.id for c in claimed], [c.token for c in claimed]])
    rows = cursor.fetchall()
    queues.lanes_refresh(task_ids=[task_id for task_id, status in rows if status == "pending"])
    return len(rows)


# A chunk's start in one statement: its tasks' rows read ``FOR SHARE`` (a pause or cancel
# holding one, ``FOR NO KEY UPDATE``, is waited for and its new status read; one that comes
# after waits for this statement, and then finds the chunk row), and the chunk row
# written while the claim's lease still runs: every subtask still ``allocated`` under
# this claim's token. A claim that waited past its lease may have been handed back by
# recovery and claimed again by another chunk (a new token, a new lease): it must not
# start, or both chunks would send the same messages.
_START = """
WITH tasks AS MATERIALIZED (
    SELECT t.id, t.status FROM dispatch_task t
    WHERE t.id = ANY(%(tasks)s::bigint[]) ORDER BY t.id FOR SHARE
), chunk AS (
    INSERT INTO dispatch_sendchunk (service_id, holder, subtask_ids, tokens, task_ids,
                                    position, epoch, lease_expires_at, started_at)
    SELECT %(service)s, %(holder)s, %(ids)s::bigint[], %(tokens)s::int[], %(tasks)s::bigint[],
           -1, 0, min(s.lease_expires_at), now()
    FROM unnest(%(ids)s::bigint[], %(tokens)s::int[]) AS u(id, token)
    JOIN dispatch_subtask s ON s.id = u.id AND s.attempt_token = u.token
    WHERE (s.status = 'allocated') IS TRUE
    HAVING min(s.lease_expires_at) > now() AND count(*) = cardinality(%(ids)s::bigint[])
    RETURNING id
)
SELECT (SELECT id FROM chunk),
       ARRAY(SELECT id FROM tasks WHERE status NOT IN ('scheduled', 'queued', 'sending'))
"""


def chunk_start(
    service: ReservedService, claimed: list[Claimed]
) -> tuple[ChunkLog | None, list[Claimed]]:
    """Write the chunk row; return it and the subtasks to send, in order
    (:func:`claimed_to_send`). ``(None, [])`` when the claim's lease has already run out
    or any of its subtasks is no longer ``allocated`` under its token (recovery owns
    them, or handed them back and they were claimed again)."""
    with PreparingCursor() as cursor:
        cursor.execute(
            _START,
            {
                "service": service.id,
                "holder": f"{_HOSTNAME}:{os.getpid()}",
                "ids": [c.id for c in claimed],
                "tokens": [c.token for c in claimed],
                "tasks": sorted({c.task_id for c in claimed}),
            },
        )
        chunk_id, stopped = cursor.fetchone()
    if chunk_id is None:
        return None, []
    return ChunkLog(id=chunk_id), claimed_to_send(claimed, stopped=set(stopped))


def claimed_to_send(claimed: list[Claimed], *, stopped: set[int]) -> list[Claimed]:
    """The one place where claimed recipients are checked before their chunk sends
    them: the ones that may go, in order. The subtasks of tasks paused or cancelled since
    the claim (``stopped``) go back (pending, or cancelled with their task); those whose
    contact unsubscribed or was suppressed meanwhile are skipped
    (``deliverability.subtasks_skip_unsendable``)."""
    from apps.deliverability import sending as deliverability

    if stopped:
        claimed = drop_tasks(claimed, stopped)
    return deliverability.subtasks_skip_unsendable(claimed)


def _stopped_tasks(cursor, task_ids: set[int]) -> set[int]:
    """The tasks that are no longer live. ``FOR SHARE`` waits for a pause or cancel
    holding the task row (``FOR NO KEY UPDATE``, which a ``FOR KEY SHARE`` lock would not
    wait for) and then reads its new status (a status filter in SQL would skip such a
    row without waiting)."""
    cursor.execute(
        "SELECT id, status FROM dispatch_task WHERE id = ANY(%s) ORDER BY id FOR SHARE",
        [sorted(task_ids)],
    )
    return {task_id for task_id, status in cursor.fetchall() if status not in LIVE_TASK_STATUSES}


def drop_tasks(claimed: list[Claimed], stopped: set[int]) -> list[Claimed]:
    """Hand back the subtasks of ``stopped`` tasks (pending, or cancelled with their
    task) and return the rest, in order."""
    keep = [c for c in claimed if c.task_id not in stopped]
    with transaction.atomic(), connection.cursor() as cursor:
        _release(cursor, [c for c in claimed if c.task_id in stopped])
    return keep


def chunk_advance(log: ChunkLog, position: int, pgconn: psycopg.pq.abc.PGconn) -> bool:
    """Move the chunk's position to ``position`` (the message about to go on the wire)
    through ``pgconn`` (:func:`advance_connection` of this thread, in autocommit, outside
    any transaction) and wait for the answer. ``False``: the fence failed — call
    :func:`chunk_recheck`. The sender threads split it in two (:func:`advance_begin`,
    :func:`advance_end`) around the first SMTP round trips."""
    advance_begin(log, position, pgconn)
    return advance_end(log, position, pgconn)


def advance_begin(log: ChunkLog, position: int, pgconn: psycopg.pq.abc.PGconn) -> None:
    """Send :func:`chunk_advance`'s statement without waiting for its answer: the
    thread goes on with the SMTP transaction (``MAIL``, ``RCPT``) and collects the answer
    with :func:`advance_end` right before the message's data. Nothing else may use the
    connection in between."""
    send_prepared(pgconn, ADVANCE_NAME, [b"%d" % position, b"%d" % log.id, b"%d" % log.epoch])


def advance_end(log: ChunkLog, position: int, pgconn: psycopg.pq.abc.PGconn) -> bool:
    """The answer to :func:`advance_begin`: ``True`` when the position moved."""
    moved = any(result.command_tuples == 1 for result in collect_results(pgconn))
    if moved:
        log.position = position
    return moved


def send_prepared(pgconn: psycopg.pq.abc.PGconn, name: bytes, params: list[bytes]) -> None:
    """Send a prepared statement through libpq without waiting for its answer (its text,
    unnamed, behind a pooler in transaction mode)."""
    if behind_transaction_pooler():
        pgconn.send_query_params(_PREPARED[name], params)
    else:
        pgconn.send_query_prepared(name, params)
    while pgconn.flush():
        select.select([], [pgconn.socket], [])


def collect_results(pgconn: psycopg.pq.abc.PGconn) -> list:
    """The results of the statement sent by :func:`send_prepared`; raises
    ``OperationalError`` if it failed. Waits in ``select`` (libpq's own wait would hold
    the GIL)."""
    results = []
    error = None
    while True:
        pgconn.consume_input()
        while pgconn.is_busy():
            select.select([pgconn.socket], [], [])
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        if result.status in (psycopg.pq.ExecStatus.COMMAND_OK, psycopg.pq.ExecStatus.TUPLES_OK):
            results.append(result)
        else:
            error = result.error_message.decode("utf-8", "replace")
    if error is not None:
        raise psycopg.OperationalError(error)
    return results


def chunk_recheck(log: ChunkLog, task_ids: set[int]) -> set[int] | None:
    """After a failed :func:`chunk_advance`: ``None`` when the lease is lost (the chunk
    must stop; recovery owns it), else the tasks of the chunk that are no longer live
    (the caller drops them with :func:`drop_tasks`); the new epoch is adopted."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT epoch, lease_expires_at > now() FROM dispatch_sendchunk WHERE id = %s",
            [log.id],
        )
        row = cursor.fetchone()
        if row is None or not row[1]:
            return None
        log.epoch = row[0]
        return _stopped_tasks(cursor, task_ids)


def _history_entry(exc: SendError, service: ReservedService, attempt: int) -> str:
    return json.dumps(
        [
            {
                "attempt": attempt,
                "at": time.time(),
                "service": service.id,
                "kind": exc.kind,
                "error_class": exc.error_class,
                "error": exc.message[:500],
            }
        ]
    )


@transaction.atomic
def record_failure(
    claimed: Claimed,
    exc: SendError,
    *,
    service: ReservedService,
    conf: DispatchSettings,
) -> str:
    """Record one failed attempt of ``claimed`` (``allocated`` under its token).

    Returns the outcome: ``retry`` (waiting queue, back-off), ``requeued`` (throttled or
    service fault: back at once, the attempt refunded; an ambiguous one with
    ``recovery.resend_ambiguous``: back at once, the attempt counted), ``failed``
    (permanent; the contact is marked bounced), ``dead`` (a DeadLetter row), ``unknown``
    (the message went out whole and got no answer), ``cancelled`` (the task was
    cancelled meanwhile) or ``lost`` (the token no longer matches: nothing written).
    """
    attempt = claimed.attempts + 1
    error_class = exc.error_class
    history = _history_entry(exc, service, attempt)
    decision = policy.failure_decision(exc, attempt=attempt, conf=conf)
    outcome, delay, refund = decision.outcome, decision.delay, decision.refund
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH u AS (
            UPDATE dispatch_subtask s SET
                status = CASE
                    WHEN %(outcome)s IN ('retry', 'requeued')
                         AND t.status IN ('cancelled', 'failed') THEN 'cancelled'
                    WHEN %(outcome)s = 'retry'
                         AND s.created_at < now() - make_interval(secs => %(max_age)s)
                         THEN 'dead'
                    WHEN %(outcome)s IN ('retry', 'requeued') THEN 'pending'
                    ELSE %(outcome)s END,
                attempts = CASE WHEN %(refund)s THEN s.attempts ELSE s.attempts + 1 END,
                next_attempt_at = now() + make_interval(secs => %(delay)s),
                lease_expires_at = NULL,
                service_id = CASE WHEN %(refund)s THEN NULL ELSE s.service_id END,
                last_error = %(error)s, error_class = %(error_class)s,
                history = s.history || %(history)s::jsonb
            FROM dispatch_task t
            WHERE t.id = s.task_id AND s.id = %(id)s AND s.attempt_token = %(token)s
              AND s.status = 'allocated'
            RETURNING s.status, s.history, s.created_at, """
            + SUBTASK_COLUMNS
            + ")"
            + subtask_events_cte(
                "u",
                event_type="'subtask.' || x.status",
                where="x.status IN ('failed', 'dead', 'unknown')",
                extra=", 'error_class', %(error_class)s, 'attempt', %(attempt)s",
            )
            + " SELECT status, task_id, owner_id, contact_id, history, created_at FROM u",
            {
                "outcome": outcome,
                "refund": refund,
                "delay": delay,
                "max_age": conf.dlq_max_age,
                "error": exc.message[:2000],
                "error_class": error_class,
                "history": history,
                "id": claimed.id,
                "token": claimed.token,
                "attempt": attempt,
            },
        )
        row = cursor.fetchone()
        if row is None:
            return "lost"
        status, task_id, owner_id, contact_id, full_history, _ = row
        if status == "pending":
            queues.lanes_refresh(task_ids=[task_id])
        elif status == "dead":
            cursor.execute(
                """
                INSERT INTO dispatch_deadletter (subtask_id, task_id, owner_id, error_type,
                    error_message, history, status, reprocess_count, created_at, updated_at)
                VALUES (%s, %s, %s, %s, %s, %s::jsonb, 'pending', 0, now(), now())
                ON CONFLICT (subtask_id) DO UPDATE SET error_type = EXCLUDED.error_type,
                    error_message = EXCLUDED.error_message, history = EXCLUDED.history,
                    status = 'pending', updated_at = now(), resolved_at = NULL
                """,
                [
                    claimed.id,
                    task_id,
                    owner_id,
                    error_class,
                    exc.message[:2000],
                    full_history if isinstance(full_history, str) else json.dumps(full_history),
                ],
            )
        elif status == "failed" and error_class != "render_error":
            # A permanent refusal of the recipient: the contact bounced (the contacts
            # app records it). Only an active contact changes (an unsubscribe or
            # complaint is the stronger state).
            contacts_mark_status(
                status="bounced",
                contact_ids=[contact_id],
                payload={"task": task_id, "subtask": claimed.id, "error_class": error_class},
            )
    if status == "dead":
        return "dead"
    if status == "cancelled":
        return "cancelled"
    return {"pending": "retry" if outcome == "retry" else "requeued"}.get(status, status)


@dataclass
class ChunkReport:
    """What happened in one chunk (filled by the sender, consumed by finish_chunk)."""

    log: ChunkLog | None = None
    sent: list[Claimed] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() of each
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    attempted: int = 0
    unattempted: list[Claimed] = field(default_factory=list)
    fault: SendError | None = None
    task_ids: set[int] = field(default_factory=set)
    last_commit: float | None = None  # time.monotonic() of the chunk's last final "."


# A chunk's end in one statement: its accepted subtasks ``sent`` (with their send times)
# and their ``subtask.sent`` events, its row gone, its service's next slot, quota refund
# and statistics (``policy.service_change``, written by the services app's CTE).
def _finish_sql() -> str:
    return f"""
WITH sent AS (
    UPDATE dispatch_subtask s SET status = 'sent', attempts = s.attempts + 1,
           sent_at = now() - make_interval(secs => u.ago), lease_expires_at = NULL
    FROM unnest(%(ids)s::bigint[], %(tokens)s::int[], %(ago)s::float8[]) AS u(id, token, ago)
    WHERE s.id = u.id AND s.attempt_token = u.token AND (s.status = 'allocated') IS TRUE
    RETURNING {SUBTASK_COLUMNS}
), gone AS (
    DELETE FROM dispatch_sendchunk WHERE id = %(chunk)s
), {chunk_outcome_cte(name="service")}{
        subtask_events_cte("sent", event_type="'subtask.sent'", extra=", 'service', %(service)s")
    }
SELECT (SELECT count(*) FROM sent), (SELECT consecutive_failures FROM service),
       (SELECT is_enabled FROM service)
"""


def finish_chunk(
    service: ReservedService,
    report: ChunkReport,
    *,
    conf: DispatchSettings,
    wait_recorded: set[int],
) -> None:
    """Close a chunk (see the module docstring): one statement for the accepted
    subtasks, the chunk row and the service; then, where needed, the subtasks never put
    on the wire handed back (with their lanes), the first-send metrics and reprocessed
    dead letters resolved. Each step stands alone: a crash between two of them leaves
    what recovery reads as it is (the chunk row is gone only with the ``sent`` rows; an
    ``allocated`` subtask outside any chunk goes back to pending after its lease)."""
    now = time.monotonic()
    change = _service_change(service, report, conf)
    with PreparingCursor() as cursor:
        cursor.execute(
            _finish_sql(),
            {
                "ids": [c.id for c in report.sent],
                "tokens": [c.token for c in report.sent],
                "ago": [now - at for at in report.sent_at],
                "chunk": report.log.id if report.log is not None else None,
                "next_in": change.next_in,
                "old_next": service.old_next,
                "unused": change.unused,
                "sent": change.sent,
                "failed": change.failed,
                "ratio": change.ratio,
                "latency": change.latency,
                "alpha": ALPHA,
                "is_fault": change.fault,
                "service": service.id,
            },
        )
        written, failures, enabled = cursor.fetchone()
        if written != len(report.sent):
            logger.warning(
                "%s subtasks were sent after their lease had been taken over",
                len(report.sent) - written,
            )
        if change.fault:
            _after_fault(
                service, report.fault, change, failures=failures, enabled=enabled, conf=conf
            )
        if report.unattempted:
            with transaction.atomic():
                _release(cursor, report.unattempted)
        _first_sends(report, wait_recorded, now)
        resolved = [c.id for c in report.sent if c.had_failures]
        if resolved:
            cursor.execute(
                "UPDATE dispatch_deadletter SET status = 'resolved', resolved_at = now(), "
                "updated_at = now() WHERE subtask_id = ANY(%s) AND status = 'reprocessing'",
                [resolved],
            )


def _service_change(
    service: ReservedService, report: ChunkReport, conf: DispatchSettings
) -> policy.ServiceChange:
    return policy.service_change(
        slots=service.slots,
        attempted=report.attempted,
        sent=len(report.sent),
        failed=report.failed,
        latencies=report.latencies,
        fault=report.fault,
        sending_rate=service.sending_rate,
        since_commit=None if report.last_commit is None else time.monotonic() - report.last_commit,
        conf=conf,
    )


def _after_fault(
    service: ReservedService,
    fault: SendError,
    change: policy.ServiceChange,
    *,
    failures: int | None,
    enabled: bool | None,
    conf: DispatchSettings,
) -> None:
    """A service fault: the service is disabled after ``recovery.service_failure_limit``
    in a row (audited by the services app, its reason kept), else cooled down."""
    if enabled and failures is not None and failures >= conf.service_failure_limit:
        service_disable_failing(service_id=service.id, failures=failures, last_error=fault.message)
    else:
        logger.warning(
            "email service %s cooled down for %ss: %s", service.id, change.next_in, fault.message
        )


@transaction.atomic
def chunk_abandon(service: ReservedService, claimed: list[Claimed]) -> int:
    """Give a chunk back whose sending never started (its database work failed: no
    connection could be had): its subtasks pending again at once (token-fenced, only
    those still ``allocated`` and in no chunk that moved), its chunk row if one was
    written before anything went out, the service as it was. Run on a connection that
    works (the loop's). Returns how many subtasks went back."""
    ids = [c.id for c in claimed]
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM dispatch_sendchunk WHERE subtask_ids && %s::bigint[] AND position < 0",
            [ids],
        )
        cursor.execute(
            "SELECT 1 FROM dispatch_sendchunk WHERE subtask_ids && %s::bigint[] LIMIT 1", [ids]
        )
        if cursor.fetchone() is not None:
            return 0  # a message of it may be on the wire: recovery resolves it
        released = _release(cursor, list(claimed))
    # Nothing was attempted: the service is given back as it was, its quota refunded.
    service_give_back(service_id=service.id, old_next=service.old_next, slots=service.slots)
    return released


def _first_sends(report: ChunkReport, wait_recorded: set[int], now: float) -> None:
    """TaskWaitMetric (the monitoring app's): queue entry (or scheduled time) → first
    accepted send, once per task."""
    first: dict[int, float] = {}
    for claimed, at in zip(report.sent, report.sent_at, strict=True):
        if claimed.task_id not in wait_recorded:
            first.setdefault(claimed.task_id, at)
    if not first:
        return
    tasks = sorted(first)
    task_waits_record(task_ids=tasks, sent_ago=[now - first[task] for task in tasks])
    wait_recorded.update(tasks)
