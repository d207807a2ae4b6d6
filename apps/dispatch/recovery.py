"""Stuck-work recovery, by leases (never by bare age).

* A chunk (``models.SendChunk``) whose lease expired: its dispatcher died. The messages
  before its position were accepted → ``sent``; the one at its position may have been on
  the wire and SMTP cannot tell whether the final "." was accepted → ``unknown`` (or
  ``pending``, same Message-ID, when ``recovery.resend_ambiguous`` is on); the rest were
  never attempted → ``pending``.
* ``allocated`` with an expired lease outside any chunk (claimed, never started): never
  on the wire → back to ``pending``.
* The progress counters' rows are folded (``progress.compact``).
* A live task with ready work whose lane was not served for ``recovery.stuck_threshold``
  (or has no lane) is re-queued (its lanes rebuilt, the dispatchers woken) and reported.

A singleton: the whole run holds ``pg_try_advisory_xact_lock`` — transaction-scoped, so
it is released at commit and works behind a pooler in transaction mode. A second run
started meanwhile on any node returns at once.
"""

from __future__ import annotations

import logging

from django.db import connection, transaction

from apps.dispatch import metrics, progress, queues
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine.events import SUBTASK_COLUMNS, subtask_events_cte
from apps.dispatch.models import Task, sql_list
from apps.dispatch.services import tasks_complete_finished

logger = logging.getLogger("edm.dispatch")

# An arbitrary constant naming "the recovery job" among advisory locks.
RECOVERY_LOCK_KEY = 0x45444D_5245  # "EDM" "RE"

# The task status groups (``models.Task``) as SQL lists.
_LIVE = sql_list(Task.LIVE_STATUSES)
_OPEN = sql_list(Task.OPEN_STATUSES)
_STOPPED = sql_list(Task.STOPPED_STATUSES)


def recover_stuck(*, stuck_threshold: float | None = None) -> dict:
    """Run one recovery pass; return what it did (``{"skipped": True}`` when another
    pass holds the lock)."""
    from apps.config.selectors import config_get

    conf = DispatchSettings.load()
    threshold = float(
        stuck_threshold if stuck_threshold is not None else config_get("recovery.stuck_threshold")
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [RECOVERY_LOCK_KEY])
        if not cursor.fetchone()[0]:
            return {"skipped": True}
        # In this order: the chunks are gone once resolved, and the last statement
        # takes every allocated subtask with an expired lease that no chunk holds.
        sent, in_flight, never = _resolve_dead_chunks(cursor)
        cursor.execute(
            f"""
            WITH a AS (
            UPDATE dispatch_subtask s SET
                status = CASE WHEN %s AND t.status NOT IN ({_STOPPED})
                              THEN 'pending' ELSE 'unknown' END,
                lease_expires_at = NULL, next_attempt_at = now(),
                attempts = s.attempts + 1,
                error_class = 'ambiguous',
                last_error = 'the dispatcher stopped while the message was on the wire',
                history = s.history || jsonb_build_array(jsonb_build_object(
                    'attempt', s.attempts + 1, 'service', s.service_id, 'kind', 'ambiguous',
                    'error', 'dispatcher lost while sending'))
            FROM dispatch_task t, unnest(%s::bigint[], %s::int[]) AS u(id, token)
            WHERE t.id = s.task_id AND s.id = u.id AND s.attempt_token = u.token
              AND (s.status = 'allocated') IS TRUE
            RETURNING s.status, {SUBTASK_COLUMNS}
            )"""
            + subtask_events_cte("a", event_type="'subtask.unknown'", where="x.status = 'unknown'")
            + " SELECT task_id, status FROM a",
            [conf.resend_ambiguous, [i for i, _ in in_flight], [t for _, t in in_flight]],
        )
        ambiguous = cursor.fetchall()
        resent = [task_id for task_id, status in ambiguous if status == "pending"]
        unknown = len(ambiguous) - len(resent)
        release = (
            "UPDATE dispatch_subtask s SET"
            f" status = CASE WHEN t.status IN ({_STOPPED}) THEN 'cancelled' ELSE 'pending' END,"
            " service_id = NULL, lease_expires_at = NULL"
            " FROM dispatch_task t{join}"
            " WHERE t.id = s.task_id AND {where}"
            " RETURNING s.task_id"
        )
        cursor.execute(
            release.format(
                join=", unnest(%s::bigint[], %s::int[]) AS u(id, token)",
                where="s.id = u.id AND s.attempt_token = u.token "
                "AND (s.status = 'allocated') IS TRUE",
            ),
            [[i for i, _ in never], [t for _, t in never]],
        )
        released = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            release.format(
                join="",
                where=f"""s.status = 'allocated' AND s.lease_expires_at < now()
                    AND s.task_id IN (SELECT id FROM dispatch_task
                                      WHERE status IN ({_OPEN})
                                         OR completed_at > now() - interval '1 day')
                    AND NOT EXISTS (SELECT 1 FROM dispatch_sendchunk c
                                    WHERE c.subtask_ids @> ARRAY[s.id])""",
            )
        )
        released += [row[0] for row in cursor.fetchall()]
        if released or resent:
            queues.lanes_refresh(task_ids=released + resent)

        cursor.execute(
            f"""
            SELECT t.id, t.owner_id, t.pool_id, t.priority FROM dispatch_task t
            LEFT JOIN dispatch_taskqueue q ON q.task_id = t.id
            WHERE t.status IN ({_LIVE})
              AND (q.task_id IS NULL OR q.ready_at IS NULL
                   OR COALESCE(q.served_at, t.queued_at)
                      < now() - make_interval(secs => %s))
              AND EXISTS (SELECT 1 FROM dispatch_subtask s WHERE s.task_id = t.id
                          AND s.status = 'pending' AND s.next_attempt_at <= now())
            """,
            [threshold],
        )
        stuck = cursor.fetchall()
        for task_id, owner_id, pool_id, priority in stuck:
            queues.lane_open(task_id=task_id, owner_id=owner_id, pool_id=pool_id, priority=priority)
            queues.notify_new_work(task_id=task_id)
    completed = tasks_complete_finished()
    progress.compact()  # also where no dispatcher loop runs
    result = {
        "skipped": False,
        "sent": sent,
        "released": len(released),
        "unknown": unknown,
        "resent": len(resent),
        "requeued_tasks": [row[0] for row in stuck],
        "completed_tasks": completed,
    }
    if released:
        metrics.DISPATCH_RECOVERED.labels(to="pending").inc(len(released) + len(resent))
    if unknown:
        metrics.DISPATCH_RECOVERED.labels(to="unknown").inc(unknown)
    if stuck:
        logger.warning("re-queued stuck tasks: %s", ", ".join(str(r[0]) for r in stuck))
    if released or ambiguous or sent:
        logger.warning(
            "recovered %s sent, %s allocated and %s in-flight subtasks (%s unknown)",
            sent,
            len(released),
            len(ambiguous),
            unknown,
        )
    return result


def _resolve_dead_chunks(cursor) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
    """Read the chunks whose lease expired (their dispatcher is gone) as
    ``models.SendChunk`` documents them: the entries before ``position`` still
    ``allocated`` were accepted and become ``sent`` here; the entry at ``position`` may
    have been on the wire; the rest were never attempted. Returns (how many became sent,
    the in-flight and the never-attempted (id, token) pairs), and deletes the chunks.

    ``FOR UPDATE`` waits for a position move in progress, so the position read is the
    last one; a move after this fails (the row is gone)."""
    cursor.execute(
        """
        SELECT id, subtask_ids, tokens, position FROM dispatch_sendchunk
        WHERE lease_expires_at < now() ORDER BY id FOR UPDATE SKIP LOCKED
        """
    )
    chunks = cursor.fetchall()
    done_ids: list[int] = []
    done_tokens: list[int] = []
    in_flight: list[tuple[int, int]] = []
    never: list[tuple[int, int]] = []
    for _, ids, tokens, position in chunks:
        done_ids += ids[: max(position, 0)]
        done_tokens += tokens[: max(position, 0)]
        if position >= 0:
            in_flight.append((ids[position], tokens[position]))
        never += zip(ids[position + 1 :], tokens[position + 1 :], strict=True)
    sent = 0
    if done_ids:
        cursor.execute(
            f"""
            WITH sent AS (
            UPDATE dispatch_subtask s SET status = 'sent', attempts = s.attempts + 1,
                   sent_at = now(), lease_expires_at = NULL
            FROM unnest(%s::bigint[], %s::int[]) AS u(id, token)
            WHERE s.id = u.id AND s.attempt_token = u.token AND (s.status = 'allocated') IS TRUE
            RETURNING {SUBTASK_COLUMNS}
            )"""
            + subtask_events_cte("sent", event_type="'subtask.sent'", extra=", 'recovered', true")
            + " SELECT count(*) FROM sent",
            [done_ids, done_tokens],
        )
        sent = cursor.fetchone()[0]
    if chunks:
        cursor.execute(
            "DELETE FROM dispatch_sendchunk WHERE id = ANY(%s)", [[row[0] for row in chunks]]
        )
    return sent, in_flight, never
