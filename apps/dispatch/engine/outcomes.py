"""Recording outcomes, fenced by attempt token: a zombie dispatcher cannot overwrite.

* :func:`mark_sending` — one round trip per message: the previous message of the chunk
  becomes ``sent`` and the next one ``sending`` (just before it goes on the wire). It runs
  with ``synchronous_commit = off`` on the sender threads' connections: PostgreSQL
  acknowledges without waiting for the WAL flush. The trade-off: if the *database server*
  crashes, the last few hundred milliseconds of these marks can be lost, so a message
  that was sent may be found ``allocated`` (resent after its lease: a duplicate) or
  ``sending`` (reported ``unknown``). A dispatcher crash loses nothing: the marks it made
  are committed.
* :func:`record_failure` — one transaction per failed message (rare): back-off, DLQ,
  bounce, refund of the attempt for faults that are not the recipient's.
* :func:`finish_chunk` — one transaction at the end of a chunk: the last ``sent``, the
  subtasks never put on the wire go back to pending, the service's statistics and its
  next slot, the task's first-send metric, dead letters resolved.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from django.db import connection, transaction

from apps.dispatch import queues
from apps.dispatch.backoff import retry_delay
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine.tick import Claimed, ReservedService
from apps.services.senders import SendError

logger = logging.getLogger("edm.dispatch")

# Weight of the newest chunk in the services' moving averages.
ALPHA = 0.1

_MARK = """
UPDATE dispatch_subtask s
SET status = CASE WHEN s.id = %(next)s THEN 'sending' ELSE 'sent' END,
    attempts = CASE WHEN s.id = %(next)s THEN s.attempts + 1 ELSE s.attempts END,
    sent_at = CASE WHEN s.id = %(next)s THEN s.sent_at ELSE now() END
WHERE (s.id = %(prev)s AND s.attempt_token = %(prev_token)s AND s.status = 'sending')
   OR (s.id = %(next)s AND s.attempt_token = %(token)s AND s.status = 'allocated'
       AND s.lease_expires_at > now())
RETURNING s.id
"""


def prepare_connection() -> None:
    """Session settings of a sender thread's connection (see the module docstring)."""
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")


def _raw_cursor() -> psycopg.Cursor:
    """A plain psycopg cursor on Django's connection of this thread (same session, same
    transaction): server-side binding and a prepared statement for the per-message
    round trip, without Django's cursor wrapper (and its DEBUG query log)."""
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def mark_sending(*, prev: Claimed | None, next_: Claimed | None) -> tuple[bool, bool]:
    """Record ``prev`` as sent and mark ``next_`` as on the wire; return (prev recorded,
    next marked). ``next_`` is not marked when the task was paused or cancelled, or its
    lease expired, since it was claimed: the caller must then skip it."""
    if prev is None and next_ is None:
        return False, False
    with _raw_cursor() as cursor:
        cursor.execute(_MARK, {
            "prev": prev.id if prev else -1, "prev_token": prev.token if prev else -1,
            "next": next_.id if next_ else -1, "token": next_.token if next_ else -1,
        }, prepare=True)
        done = {row[0] for row in cursor.fetchall()}
    prev_ok = prev is not None and prev.id in done
    if prev is not None and not prev_ok:
        logger.warning("subtask %s was sent but its lease had been taken over", prev.id)
    return prev_ok, next_ is not None and next_.id in done


def _history_entry(exc: SendError, service: ReservedService, attempt: int) -> str:
    return json.dumps([{
        "attempt": attempt, "at": time.time(), "service": service.id, "kind": exc.kind,
        "error_class": exc.error_class, "error": exc.message[:500],
    }])


@transaction.atomic
def record_failure(
    claimed: Claimed, exc: SendError, *, service: ReservedService, conf: DispatchSettings,
) -> str:
    """Record one failed attempt of ``claimed`` (which is ``sending`` under its token).

    Returns the outcome: ``retry`` (waiting queue, back-off), ``requeued`` (throttled or
    service fault: back at once, the attempt refunded), ``failed`` (permanent; the
    contact is marked bounced), ``dead`` (a DeadLetter row), ``cancelled`` (the task was
    cancelled meanwhile) or ``lost`` (the token no longer matches: nothing written).
    """
    attempt = claimed.attempts + 1
    error_class = exc.error_class
    history = _history_entry(exc, service, attempt)
    refund = exc.kind in (SendError.THROTTLED, SendError.SERVICE)
    if refund:
        outcome, delay = "requeued", 0.0
    elif error_class in conf.dlq_immediate_error_types or exc.kind in (
        conf.dlq_immediate_error_types
    ):
        outcome, delay = "dead", 0.0
    elif exc.kind == SendError.PERMANENT:
        outcome, delay = "failed", 0.0
    elif attempt > conf.max_retries:
        outcome, delay = "dead", 0.0
    else:
        outcome, delay = "retry", retry_delay(attempt, conf)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE dispatch_subtask s SET
                status = CASE
                    WHEN %(outcome)s IN ('retry', 'requeued')
                         AND t.status IN ('cancelled', 'failed') THEN 'cancelled'
                    WHEN %(outcome)s = 'retry'
                         AND s.created_at < now() - make_interval(secs => %(max_age)s)
                         THEN 'dead'
                    WHEN %(outcome)s IN ('retry', 'requeued') THEN 'pending'
                    ELSE %(outcome)s END,
                attempts = CASE WHEN %(refund)s THEN GREATEST(0, s.attempts - 1)
                                ELSE s.attempts END,
                next_attempt_at = now() + make_interval(secs => %(delay)s),
                lease_expires_at = NULL,
                service_id = CASE WHEN %(refund)s THEN NULL ELSE s.service_id END,
                last_error = %(error)s, error_class = %(error_class)s,
                history = s.history || %(history)s::jsonb
            FROM dispatch_task t
            WHERE t.id = s.task_id AND s.id = %(id)s AND s.attempt_token = %(token)s
              AND s.status = 'sending'
            RETURNING s.status, s.task_id, s.owner_id, s.contact_id, s.history, s.created_at
            """,
            {
                "outcome": outcome, "refund": refund, "delay": delay,
                "max_age": conf.dlq_max_age, "error": exc.message[:2000],
                "error_class": error_class, "history": history, "id": claimed.id,
                "token": claimed.token,
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
                [claimed.id, task_id, owner_id, error_class, exc.message[:2000],
                 full_history if isinstance(full_history, str) else json.dumps(full_history)],
            )
        elif status == "failed" and error_class != "render_error":
            # A permanent refusal of the recipient: the contact bounced. Only an active
            # contact changes (an unsubscribe or complaint is the stronger state).
            cursor.execute(
                "UPDATE contacts_contact SET status = 'bounced', updated_at = now() "
                "WHERE id = %s AND status = 'active'",
                [contact_id],
            )
    if status == "dead":
        return "dead"
    if status == "cancelled":
        return "cancelled"
    return {"pending": "retry" if outcome == "retry" else "requeued"}.get(status, status)


@dataclass
class ChunkReport:
    """What happened in one chunk (filled by the sender, consumed by finish_chunk)."""

    last_sent: Claimed | None = None
    sent: list[Claimed] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    attempted: int = 0
    unattempted: list[Claimed] = field(default_factory=list)
    fault: SendError | None = None
    first_sent_ago: float | None = None  # seconds between the first accepted send and now
    task_ids: set[int] = field(default_factory=set)


@transaction.atomic
def finish_chunk(service: ReservedService, report: ChunkReport, *,
                 conf: DispatchSettings, wait_recorded: set[int]) -> None:
    """Close a chunk in one transaction (see the module docstring)."""
    with connection.cursor() as cursor:
        if report.last_sent is not None:
            mark_sending(prev=report.last_sent, next_=None)
        if report.unattempted:
            cursor.execute(
                """
                UPDATE dispatch_subtask s SET status = 'pending', service_id = NULL,
                       lease_expires_at = NULL
                FROM unnest(%s::bigint[], %s::int[]) AS u(id, token)
                WHERE s.id = u.id AND s.attempt_token = u.token AND s.status = 'allocated'
                RETURNING s.task_id
                """,
                [[c.id for c in report.unattempted], [c.token for c in report.unattempted]],
            )
            queues.lanes_refresh(task_ids=[row[0] for row in cursor.fetchall()])
        _service_after_chunk(cursor, service, report, conf)
        _first_sends(cursor, report, wait_recorded)
        resolved = [c.id for c in report.sent if c.had_failures]
        if resolved:
            cursor.execute(
                "UPDATE dispatch_deadletter SET status = 'resolved', resolved_at = now(), "
                "updated_at = now() WHERE subtask_id = ANY(%s) AND status = 'reprocessing'",
                [resolved],
            )


def _service_after_chunk(cursor, service: ReservedService, report: ChunkReport,
                         conf: DispatchSettings) -> None:
    sent = len(report.sent)
    unused = max(0, service.slots - report.attempted)
    fault = report.fault
    if fault is not None and fault.kind == SendError.SERVICE:
        push = conf.service_cooldown
    elif fault is not None and fault.kind == SendError.THROTTLED:
        push = max(conf.throttle_delay, service.sending_rate)
    else:
        push = service.sending_rate
    ratio = (sent / report.attempted) if report.attempted else None
    latency = (sum(report.latencies) / len(report.latencies)) if report.latencies else None
    is_fault = fault is not None and fault.kind == SendError.SERVICE
    cursor.execute(
        """
        UPDATE services_emailservice SET
            next_available_at = CASE WHEN %(attempted)s = 0 AND NOT %(faulted)s
                                     THEN LEAST(next_available_at, %(old_next)s)
                                     ELSE now() + make_interval(secs => %(push)s) END,
            used_quota = GREATEST(0, used_quota - %(unused)s),
            total_sent = total_sent + %(sent)s,
            total_failed = total_failed + %(failed)s,
            last_sent_at = CASE WHEN %(sent)s > 0 THEN now() ELSE last_sent_at END,
            success_rate = CASE WHEN %(ratio)s::float IS NULL THEN success_rate
                                ELSE success_rate * (1 - %(alpha)s) + %(alpha)s * %(ratio)s END,
            avg_response_time = CASE WHEN %(latency)s::float IS NULL THEN avg_response_time
                                     WHEN avg_response_time = 0 THEN %(latency)s
                                     ELSE avg_response_time * (1 - %(alpha)s)
                                          + %(alpha)s * %(latency)s END,
            consecutive_failures = CASE WHEN %(is_fault)s THEN consecutive_failures + 1
                                        WHEN %(sent)s > 0 THEN 0
                                        ELSE consecutive_failures END
        WHERE id = %(id)s
        RETURNING consecutive_failures, is_enabled
        """,
        {
            "attempted": report.attempted, "faulted": fault is not None,
            "old_next": service.old_next, "push": push, "unused": unused, "sent": sent,
            "failed": report.failed, "ratio": ratio, "latency": latency, "alpha": ALPHA,
            "is_fault": is_fault, "id": service.id,
        },
    )
    row = cursor.fetchone()
    if is_fault and row and row[1] and row[0] >= conf.service_failure_limit:
        reason = f"{row[0]} consecutive faults; last: {fault.message}"[:255]
        cursor.execute(
            "UPDATE services_emailservice SET is_enabled = false, disabled_reason = %s "
            "WHERE id = %s AND is_enabled",
            [reason, service.id],
        )
        logger.warning("email service %s disabled: %s", service.id, reason)
    elif is_fault:
        logger.warning("email service %s cooled down for %ss: %s", service.id, push,
                       fault.message)


def _first_sends(cursor, report: ChunkReport, wait_recorded: set[int]) -> None:
    """TaskWaitMetric: queue entry (or scheduled time) → first accepted send, once."""
    tasks = sorted({c.task_id for c in report.sent} - wait_recorded)
    if not tasks:
        return
    cursor.execute(
        """
        INSERT INTO monitoring_taskwaitmetric (task_id, owner_id, queued_at, first_sent_at,
                                               wait_seconds)
        SELECT t.id, t.owner_id, GREATEST(t.queued_at, t.scheduled_at), f.at,
               GREATEST(0, EXTRACT(EPOCH FROM f.at - GREATEST(t.queued_at, t.scheduled_at)))
        FROM dispatch_task t,
             LATERAL (SELECT now() - make_interval(secs => %s) AS at) f
        WHERE t.id = ANY(%s) AND t.queued_at IS NOT NULL
        ON CONFLICT (task_id) DO NOTHING
        """,
        [report.first_sent_ago or 0.0, tasks],
    )
    wait_recorded.update(tasks)


def release_unsent(claimed: Iterable[Claimed]) -> None:
    """Give claimed subtasks back (used when a chunk cannot start at all)."""
    claimed = list(claimed)
    if not claimed:
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE dispatch_subtask s SET status = 'pending', service_id = NULL,
                   lease_expires_at = NULL
            FROM unnest(%s::bigint[], %s::int[]) AS u(id, token)
            WHERE s.id = u.id AND s.attempt_token = u.token AND s.status = 'allocated'
            RETURNING s.task_id
            """,
            [[c.id for c in claimed], [c.token for c in claimed]],
        )
        queues.lanes_refresh(task_ids=[row[0] for row in cursor.fetchall()])
