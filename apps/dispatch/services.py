"""Task lifecycle and dead-letter services (writes).

Every function runs in one transaction and either does all of its work or none. Lock
order (see :mod:`apps.dispatch.queues`): task row → subtask rows → lanes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.core.audit import actor_id, event_append
from apps.core.errors import ApplicationError
from apps.core.statistics import tables_analyze_if_grown
from apps.dispatch import queues
from apps.dispatch.compose import task_create, task_delete, task_duplicate, task_update
from apps.dispatch.models import ACTIVE_STATUSES, DeadLetter, SubTask, Task, sql_list
from apps.dispatch.selectors import RECIPIENTS_WHERE, dlq_stats, task_progress
from apps.dispatch.templates import task_validate_templates

__all__ = [
    "dead_letter_reprocess",
    "dead_letters_reprocess_all",
    "dlq_stats",
    "subtask_requeue_unknown",
    "task_cancel",
    "task_create",
    "task_delete",
    "task_duplicate",
    "task_pause",
    "task_progress",
    "task_queue",
    "task_resume",
    "task_update",
    "task_validate_templates",
    "tasks_complete_finished",
]

logger = logging.getLogger("edm.dispatch")


def _message_id_domain(task: Task) -> str:
    configured = getattr(settings, "EDM_MESSAGE_ID_DOMAIN", "")
    if configured:
        return configured
    from_email = (
        task.pool.services.order_by("pk").values_list("from_email", flat=True).first() or ""
    )
    domain = from_email.rpartition("@")[2].strip().lower()
    return domain if domain and all(c.isalnum() or c in ".-" for c in domain) else "edm.localhost"


def _materialize(task: Task, *, first_attempt_at) -> tuple[int, int]:
    """Insert one subtask per distinct recipient, inside PostgreSQL; return (total, pending).

    Recipients: contacts in an included tag and in no excluded tag, plus the explicit
    contacts. Contacts that are not ``active``, and addresses on the owner's or the
    global suppression list, are inserted ``skipped`` with the reason as their
    ``error_class`` (``unsubscribed``, ``bounced``, ``complained``, ``suppressed``). Each
    Message-ID is fixed here from the subtask id and a per-task random prefix.
    """
    from apps.deliverability.selectors import suppressed_sql, suppressions_exist

    include = list(task.include_tags.values_list("pk", flat=True))
    exclude = list(task.exclude_tags.values_list("pk", flat=True))
    explicit = list(task.contacts.values_list("pk", flat=True))
    domain = _message_id_domain(task)
    prefix = f"{task.pk}.{secrets.token_hex(6)}"
    # Without any suppression for this owner the per-row check is left out altogether.
    suppressed = (
        suppressed_sql(owner="c.owner_id", email="c.email")
        if suppressions_exist(owner_id=task.owner_id)
        else "false"
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence('dispatch_subtask', 'id')")
        sequence = cursor.fetchone()[0]
        cursor.execute("SELECT nextval(%s::regclass)", [sequence])
        task.subtask_id_floor = cursor.fetchone()[0]
        cursor.execute(
            f"""
            INSERT INTO dispatch_subtask (
                id, task_id, owner_id, contact_id, to_email, status, attempts, attempt_token,
                next_attempt_at, message_id, last_error, error_class, history, created_at)
            SELECT r.id, %(task)s, %(owner)s, r.contact_id, r.email,
                   CASE WHEN r.status = 'active' AND NOT r.suppressed THEN 'pending'
                        ELSE 'skipped' END,
                   0, 0, %(at)s, '<' || %(prefix)s || '.' || r.id || '@' || %(domain)s || '>',
                   '', CASE WHEN r.status <> 'active' THEN r.status
                            WHEN r.suppressed THEN 'suppressed' ELSE '' END,
                   '[]'::jsonb, now()
            FROM (
                SELECT nextval(%(seq)s::regclass) AS id, c.id AS contact_id, c.email, c.status,
                       {suppressed} AS suppressed
                FROM contacts_contact c
                WHERE {RECIPIENTS_WHERE}
                ORDER BY c.id
            ) r
            """,
            {
                "task": task.pk,
                "owner": task.owner_id,
                "at": first_attempt_at,
                "prefix": prefix,
                "domain": domain,
                "seq": sequence,
                "explicit": explicit,
                "include": include,
                "exclude": exclude,
            },
        )
        total = cursor.rowcount
        # The counters the insert's trigger just wrote (``progress``), not a recount.
        cursor.execute(
            "SELECT coalesce(sum(pending), 0) FROM dispatch_progressdelta WHERE task_id = %s",
            [task.pk],
        )
        pending = int(cursor.fetchone()[0])
    task.message_id_domain = domain
    return total, pending


def _refresh_planner_statistics(*, added: int) -> None:
    """A task that adds a large share of the subtask table leaves the planner's row
    estimates stale until autovacuum's next analyze (a minute later or more): the
    dispatcher's claim would meanwhile be planned for a small table — hash joins over
    sequential scans of every subtask and contact instead of key lookups, 30 to 100 times
    slower per tick. So the table is analyzed once the task commits
    (``apps.core.statistics``)."""
    transaction.on_commit(lambda: tables_analyze_if_grown(tables=["dispatch_subtask"], added=added))


def _locked(task: Task | int) -> Task:
    pk = getattr(task, "pk", task)
    try:
        return Task.objects.select_for_update(no_key=True).select_related("pool").get(pk=pk)
    except Task.DoesNotExist:
        raise ApplicationError(f"task {pk} does not exist", field="task") from None


def _task_event(event_type: str, task: Task, actor, **payload) -> None:
    event_append(event_type, owner=task.owner_id, actor=actor, subject=task, payload=payload)


def _refresh_caller(original: Task | int, locked: Task) -> Task:
    if isinstance(original, Task):
        original.refresh_from_db()
        return original
    return locked


@transaction.atomic
def task_queue(*, task: Task | int, actor=None) -> Task:
    """Materialize a draft task's recipients and hand it to the dispatchers.

    The task becomes ``scheduled`` when ``scheduled_at`` lies in the future (its subtasks
    wait until then), else ``queued``; ``completed`` at once when every recipient is
    skipped. Raises ``ApplicationError`` unless the task is a draft, or when no contact
    matches its recipients.
    """
    locked = _locked(task)
    if locked.status != Task.Status.DRAFT:
        raise ApplicationError(
            f"only a draft task can be queued (this one is {locked.status})", field="status"
        )
    now = timezone.now()
    scheduled = locked.scheduled_at is not None and locked.scheduled_at > now
    first_attempt_at = locked.scheduled_at if scheduled else now
    total, pending = _materialize(locked, first_attempt_at=first_attempt_at)
    if total == 0:
        raise ApplicationError("no contact matches this task's recipients", field="recipients")
    _refresh_planner_statistics(added=total)
    locked.total = total
    locked.queued_at = now
    if pending == 0:
        locked.status = Task.Status.COMPLETED
        locked.completed_at = now
    else:
        locked.status = Task.Status.SCHEDULED if scheduled else Task.Status.QUEUED
    locked.save(
        update_fields=[
            "total",
            "queued_at",
            "status",
            "completed_at",
            "message_id_domain",
            "subtask_id_floor",
            "updated_at",
        ]
    )
    _task_event(
        "task.queued",
        locked,
        actor,
        status=locked.status,
        total=total,
        pending=pending,
        scheduled_at=locked.scheduled_at.isoformat() if scheduled else None,
    )
    if pending == 0:
        _task_event("task.completed", locked, None, status=locked.status)
    if pending:
        queues.lane_open(
            task_id=locked.pk,
            owner_id=locked.owner_id,
            pool_id=locked.pool_id,
            priority=locked.priority,
        )
        queues.notify_new_work(task_id=locked.pk)
    logger.info("task %s queued: %s recipients, %s to send", locked.pk, total, pending)
    return _refresh_caller(task, locked)


@transaction.atomic
def task_pause(*, task: Task | int, actor=None) -> Task:
    """Stop handing out the task's subtasks. Messages on the wire finish and are
    recorded; subtasks a dispatcher has claimed but not yet sent go back to pending when
    it notices, before its next message (see :func:`_stop_chunks`). Raises
    ``ApplicationError`` unless the task is scheduled, queued or sending."""
    locked = _locked(task)
    if locked.status not in Task.LIVE_STATUSES:
        raise ApplicationError(f"a {locked.status} task cannot be paused", field="status")
    queues.lane_close(task_id=locked.pk)
    was = locked.status
    locked.status = Task.Status.PAUSED
    locked.save(update_fields=["status", "updated_at"])
    _task_event("task.paused", locked, actor, previous_status=was)
    _stop_chunks(locked.pk)
    return _refresh_caller(task, locked)


def _stop_chunks(task_id: int) -> None:
    """Tell the dispatchers sending the task's subtasks to stop: bump the epoch of the
    chunks that hold them, which fails their next position move (``engine/outcomes``).

    Claimed subtasks belong to the dispatcher that claimed them (or, once its lease has
    expired, to recovery); nobody else changes them, which is what keeps a message from
    being sent twice. The order matters: the task's new status is written first, so a
    chunk that starts after this runs reads it, and a chunk that started before is found
    here."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE dispatch_sendchunk SET epoch = epoch + 1 WHERE task_ids @> ARRAY[%s::bigint]",
            [task_id],
        )


@transaction.atomic
def task_resume(*, task: Task | int, actor=None) -> Task:
    """Hand a paused task back to the dispatchers: ``scheduled`` if its time is still to
    come, ``sending`` if it had started sending (its mail goes out again at once, and a
    dispatcher that served it before does not announce it a second time), else
    ``queued``. Raises ``ApplicationError`` unless the task is paused."""
    locked = _locked(task)
    if locked.status != Task.Status.PAUSED:
        raise ApplicationError(f"a {locked.status} task cannot be resumed", field="status")
    scheduled = locked.scheduled_at is not None and locked.scheduled_at > timezone.now()
    if scheduled:
        locked.status = Task.Status.SCHEDULED
    elif locked.started_at is not None:
        locked.status = Task.Status.SENDING
    else:
        locked.status = Task.Status.QUEUED
    locked.save(update_fields=["status", "updated_at"])
    _task_event("task.resumed", locked, actor, status=locked.status)
    queues.lane_open(
        task_id=locked.pk,
        owner_id=locked.owner_id,
        pool_id=locked.pool_id,
        priority=locked.priority,
    )
    queues.notify_new_work(task_id=locked.pk)
    tasks_complete_finished(task_ids=[locked.pk])
    return _refresh_caller(task, locked)


@transaction.atomic
def task_cancel(*, task: Task | int, actor=None) -> Task:
    """Cancel a task: its pending subtasks become ``cancelled`` at once, those a
    dispatcher has claimed when it notices (before its next message, see
    :func:`_stop_chunks`); messages already on the wire finish and are recorded. Raises
    ``ApplicationError`` for a task that is already completed, cancelled or failed."""
    locked = _locked(task)
    if locked.is_finished:
        raise ApplicationError(f"a {locked.status} task cannot be cancelled", field="status")
    cancelled = SubTask.objects.filter(task_id=locked.pk, status=SubTask.Status.PENDING).update(
        status=SubTask.Status.CANCELLED, lease_expires_at=None
    )
    queues.lane_close(task_id=locked.pk)
    was = locked.status
    locked.status = Task.Status.CANCELLED
    locked.completed_at = timezone.now()
    locked.save(update_fields=["status", "completed_at", "updated_at"])
    _task_event("task.cancelled", locked, actor, previous_status=was, cancelled=cancelled)
    _stop_chunks(locked.pk)
    return _refresh_caller(task, locked)


def tasks_complete_finished(*, task_ids: Iterable[int] | None = None) -> list[int]:
    """Mark live tasks with nothing left to send (no pending, allocated or sending
    subtask) ``completed`` and close their lanes; return their ids.

    Without ``task_ids`` every live task is checked (the dispatcher's housekeeping).
    Rows locked by someone else are skipped and picked up on the next call. Each
    completed task's ``task.completed`` is appended by the same statement.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH done AS (
            UPDATE dispatch_task t SET status = 'completed', completed_at = now(),
                   updated_at = now()
            WHERE t.id IN (
                SELECT id FROM dispatch_task
                WHERE status IN ({sql_list(Task.LIVE_STATUSES)})
                  AND (%(all)s OR id = ANY(%(ids)s))
                FOR NO KEY UPDATE SKIP LOCKED
            )
              AND NOT EXISTS (
                SELECT 1 FROM dispatch_subtask s
                WHERE s.task_id = t.id AND s.status IN ({sql_list(ACTIVE_STATUSES)})
            )
            RETURNING t.id, t.owner_id, t.total
            ), events AS ({TASK_COMPLETED_EVENTS})
            SELECT id FROM done
            """,
            {"all": task_ids is None, "ids": sorted(set(task_ids or ()))},
        )
        done = [row[0] for row in cursor.fetchall()]
        for task_id in done:
            queues.lane_close(task_id=task_id)
    if done:
        logger.info("tasks completed: %s", ", ".join(map(str, done)))
    return done


# task.completed for each row of ``done`` (id, owner_id, total), system as the actor.
TASK_COMPLETED_EVENTS = """
INSERT INTO events_event (type, owner_id, actor_id, subject_type, subject_id, payload)
SELECT 'task.completed', d.owner_id, NULL, 'dispatch.task', d.id::text,
       jsonb_build_object('status', 'completed', 'total', d.total)
FROM done d
"""


def _reopen(task_ids: Iterable[int]) -> int:
    """After subtasks of these tasks became pending again: bring finished tasks back to
    ``queued``, refresh the lanes of live ones and wake the dispatchers. Returns how many
    tasks were reopened or refreshed."""
    task_ids = sorted(set(task_ids))
    if not task_ids:
        return 0
    Task.objects.filter(pk__in=task_ids, status=Task.Status.COMPLETED).update(
        status=Task.Status.QUEUED, completed_at=None, updated_at=timezone.now()
    )
    live = Task.objects.filter(pk__in=task_ids, status__in=Task.LIVE_STATUSES).values_list(
        "pk", "owner_id", "pool_id", "priority"
    )
    for pk, owner_id, pool_id, priority in live:
        queues.lane_open(task_id=pk, owner_id=owner_id, pool_id=pool_id, priority=priority)
        queues.notify_new_work(task_id=pk)
    return len(task_ids)


@transaction.atomic
def dead_letter_reprocess(*, dead_letter_id: int, owner=None, actor=None) -> DeadLetter:
    """Send a dead-lettered message again (same Message-ID, attempts start over).

    With ``owner`` the entry must belong to that user (else it does not exist). Raises
    ``ApplicationError`` when the entry does not exist, is not ``pending`` or ``expired``,
    or its task was cancelled.
    """
    entries = DeadLetter.objects.select_for_update().select_related("task")
    if owner is not None:
        entries = entries.filter(owner=owner)
    entry = entries.filter(pk=dead_letter_id).first()
    if entry is None:
        raise ApplicationError(
            f"dead letter {dead_letter_id} does not exist", field="id", code="not_found"
        )
    if entry.status not in (DeadLetter.Status.PENDING, DeadLetter.Status.EXPIRED):
        raise ApplicationError(f"dead letter {entry.pk} is {entry.status}", field="status")
    if entry.task.status in Task.STOPPED_STATUSES:
        raise ApplicationError(f"task {entry.task_id} is {entry.task.status}", field="task")
    count = _reprocess(DeadLetter.objects.filter(pk=entry.pk), actor=actor)
    if not count:
        raise ApplicationError(f"subtask of dead letter {entry.pk} is not dead", field="status")
    entry.refresh_from_db()
    return entry


@transaction.atomic
def dead_letters_reprocess_all(
    *, owner=None, task_id: int | None = None, error_type: str | None = None, actor=None
) -> int:
    """Reprocess every ``pending`` dead letter matching the filters; return how many."""
    entries = DeadLetter.objects.filter(status=DeadLetter.Status.PENDING).exclude(
        task__status__in=Task.STOPPED_STATUSES
    )
    if owner is not None:
        entries = entries.filter(owner=owner)
    if task_id is not None:
        entries = entries.filter(task_id=task_id)
    if error_type:
        entries = entries.filter(error_type=error_type)
    return _reprocess(entries, actor=actor)


def _reprocess(entries, *, actor=None) -> int:
    """Dead letters back to pending; one ``deadletter.reprocessed`` per entry, by
    ``actor``, in the same statement."""
    ids = list(entries.values_list("pk", flat=True))
    if not ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH d AS (
                UPDATE dispatch_deadletter SET status = 'reprocessing',
                       reprocess_count = reprocess_count + 1, updated_at = now()
                WHERE id = ANY(%s) AND status IN ('pending', 'expired')
                RETURNING id AS dead_letter_id, subtask_id
            ), back AS (
                UPDATE dispatch_subtask s SET status = 'pending', attempts = 0,
                       next_attempt_at = now(), lease_expires_at = NULL, service_id = NULL
                FROM d WHERE s.id = d.subtask_id AND s.status = 'dead'
                RETURNING s.id, s.task_id, s.owner_id, d.dead_letter_id
            ), events AS (
                INSERT INTO events_event (type, owner_id, actor_id, subject_type, subject_id,
                                          payload)
                SELECT 'deadletter.reprocessed', b.owner_id, %s, 'dispatch.deadletter',
                       b.dead_letter_id::text,
                       jsonb_build_object('task', b.task_id, 'subtask', b.id)
                FROM back b
            )
            SELECT task_id FROM back
            """,
            [ids, actor_id(actor)],
        )
        task_ids = [row[0] for row in cursor.fetchall()]
    _reopen(task_ids)
    return len(task_ids)


@transaction.atomic
def subtask_requeue_unknown(
    *,
    owner=None,
    task_id: int | None = None,
    subtask_ids: Iterable[int] | None = None,
    actor=None,
) -> int:
    """Send ``unknown`` subtasks again, with their same Message-ID; return how many.

    ``unknown`` means a dispatcher died while the message was on the wire: it may or may
    not have been delivered. Only an operator (or ``recovery.resend_ambiguous``) decides
    to resend. With ``owner`` only that user's subtasks are considered.

    Raises ``ApplicationError`` and changes nothing when the request cannot be done as
    asked: ``task_id`` names a task that does not exist (for ``owner``), or is cancelled
    or failed (field ``status``); ``subtask_ids`` names subtasks that are not ``unknown``
    subtasks of that task (or, without a task, of a live or finished-but-not-cancelled
    task) — every bad id is named (field ``subtask_ids``).
    """
    tasks = Task.objects.all() if owner is None else Task.objects.filter(owner=owner)
    if task_id is not None:
        task = tasks.filter(pk=task_id).only("pk", "status").first()
        if task is None:
            raise ApplicationError(f"task {task_id} does not exist", field="task")
        if task.status in Task.STOPPED_STATUSES:
            raise ApplicationError(
                f"a {task.status} task's subtasks cannot be requeued", field="status"
            )
    subtasks = SubTask.objects.filter(status=SubTask.Status.UNKNOWN).exclude(
        task__status__in=Task.STOPPED_STATUSES
    )
    if owner is not None:
        subtasks = subtasks.filter(owner=owner)
    if task_id is not None:
        subtasks = subtasks.filter(task_id=task_id)
    if subtask_ids is not None:
        wanted = sorted({int(pk) for pk in subtask_ids})
        subtasks = subtasks.filter(pk__in=wanted)
        found = set(subtasks.values_list("pk", flat=True))
        bad = [pk for pk in wanted if pk not in found]
        if bad:
            where = f" of task {task_id}" if task_id is not None else ""
            raise ApplicationError(
                f"not unknown subtasks{where} that can be resent: {', '.join(map(str, bad[:20]))}",
                field="subtask_ids",
            )
    with connection.cursor() as cursor:
        # One statement: the resent subtasks and, per task, one ``task.unknown_requeued``
        # naming who decided to resend and how many (unknown subtasks are few; tasks fewer).
        ids_sql, params = subtasks.values("pk").query.sql_with_params()
        cursor.execute(
            f"""
            WITH s AS (
                UPDATE dispatch_subtask SET status = 'pending', next_attempt_at = now(),
                       lease_expires_at = NULL, service_id = NULL
                WHERE id IN ({ids_sql}) RETURNING task_id, owner_id
            ), events AS (
                INSERT INTO events_event (type, owner_id, actor_id, subject_type, subject_id,
                                          payload)
                SELECT 'task.unknown_requeued', owner_id, %s, 'dispatch.task', task_id::text,
                       jsonb_build_object('count', count(*))
                FROM s GROUP BY task_id, owner_id
            )
            SELECT task_id FROM s
            """,
            [*params, actor_id(actor)],
        )
        task_ids = [row[0] for row in cursor.fetchall()]
    _reopen(task_ids)
    return len(task_ids)
