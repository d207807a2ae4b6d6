"""Reporting projections: read models built only from events, and rebuildable from them.

Two projections, each with its checkpoint (:class:`~apps.events.models.Projection`):

* ``owner_daily`` → :class:`~apps.events.models.OwnerDailyCount` (owner, day), and
* ``task_daily`` → :class:`~apps.events.models.TaskDailyCount` (task, day),

counting per UTC day ``queued``, ``sent``, ``failed``, ``bounced``, ``unsubscribed``,
``complained``, ``opened`` and ``clicked`` from the event types of :data:`COUNTERS`. An
event adds its payload's ``count`` when that is a number (``recipients`` or ``total``
for ``task.queued``), else 1. Its task is the subject of a ``task.*`` event, else the
payload's ``task_id`` or ``task``.

**Reading in commit order.** Event ids come from a sequence when the row is inserted,
but a transaction commits later, so ids become visible out of order: a checkpoint
"everything up to id N" would skip an event that commits after a higher id was read.
Each event records its transaction id (``txid``), and a round reads, in ``(txid, id)``
order past its checkpoint, only events of transactions older than the oldest one still
running (``pg_snapshot_xmin(pg_current_snapshot())``). Those transactions are all
finished, so nothing can ever appear behind the checkpoint; a long transaction anywhere
in the cluster holds the projections back (their lag shows it) rather than letting
them skip.

**Counting once.** A round is one transaction: it records each counted event in
:class:`~apps.events.models.ProcessedEvent` (unique per projection and event, ``ON
CONFLICT DO NOTHING``), adds only the events it recorded, and moves the checkpoint. An
event read twice (a checkpoint restored, two consumers) counts once. Two relays never
run a projection at once (its row is locked ``FOR UPDATE SKIP LOCKED``).

**Operations** (services, with the acting user and a ``projection.reset`` event for a
reset): :func:`projection_pause`, :func:`projection_resume`, :func:`projection_reset`
(clear and rebuild from the retained events — retention, ``events.retention``, never
deletes an event a projection has not passed) and :func:`projections_status` (lag).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from apps.core.errors import ApplicationError
from apps.events.models import (
    DailyCounts,
    OwnerDailyCount,
    ProcessedEvent,
    Projection,
    TaskDailyCount,
)
from apps.events.services import event_append

BATCH = 5000

# Event type → the counter it adds to.
COUNTERS: dict[str, str] = {
    "task.queued": "queued",
    "subtask.sent": "sent",
    "subtask.failed": "failed",
    "subtask.dead": "failed",
    "contact.bounced": "bounced",
    "contact.unsubscribed": "unsubscribed",
    "contact.complained": "complained",
    "subtask.opened": "opened",
    "subtask.clicked": "clicked",
}


@dataclass(frozen=True)
class Spec:
    name: str
    model: type[DailyCounts]
    key: str  # the column besides the day that identifies a row
    description: str


PROJECTIONS: dict[str, Spec] = {
    "owner_daily": Spec("owner_daily", OwnerDailyCount, "owner_id", "per owner and day"),
    "task_daily": Spec("task_daily", TaskDailyCount, "task_id", "per task and day"),
}

_AMOUNT = """CASE
    WHEN e.type = 'task.queued' AND jsonb_typeof(e.payload->'recipients') = 'number'
        THEN (e.payload->>'recipients')::numeric::bigint
    WHEN e.type = 'task.queued' AND jsonb_typeof(e.payload->'total') = 'number'
        THEN (e.payload->>'total')::numeric::bigint
    WHEN jsonb_typeof(e.payload->'count') = 'number'
        THEN (e.payload->>'count')::numeric::bigint
    ELSE 1 END"""

_TASK = r"""CASE
    WHEN e.subject_type = 'dispatch.task' AND e.subject_id ~ '^\d{1,18}$'
        THEN e.subject_id::bigint
    WHEN jsonb_typeof(e.payload->'task_id') = 'number'
        THEN (e.payload->>'task_id')::numeric::bigint
    WHEN e.payload->>'task_id' ~ '^\d{1,18}$' THEN (e.payload->>'task_id')::bigint
    WHEN jsonb_typeof(e.payload->'task') = 'number'
        THEN (e.payload->>'task')::numeric::bigint
    WHEN e.payload->>'task' ~ '^\d{1,18}$' THEN (e.payload->>'task')::bigint
    END"""


def _counter_case() -> str:
    whens = " ".join(f"WHEN '{t}' THEN '{c}'" for t, c in COUNTERS.items())
    return f"CASE e.type {whens} END"


def _consume_sql(spec: Spec) -> str:
    table = spec.model._meta.db_table
    counters = DailyCounts.COUNTERS
    sums = ", ".join(
        f"coalesce(sum(r.amount) FILTER (WHERE r.counter = '{c}'), 0) AS {c}" for c in counters
    )
    if spec.key == "owner_id":
        key_select, key_cols, conflict = "r.owner_id", "owner_id", "(owner_id, day)"
        keep = "r.owner_id IS NOT NULL"
        group = "r.owner_id"
    else:
        # A task has one owner; max() keeps one row per (task, day) whatever the events say.
        key_select, key_cols = "r.task_id, max(r.owner_id)", "task_id, owner_id"
        conflict = "(task_id, day)"
        keep = "r.task_id IS NOT NULL AND r.owner_id IS NOT NULL"
        group = "r.task_id"
    updates = ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in counters)
    if spec.key == "task_id":
        updates += ", owner_id = EXCLUDED.owner_id"
    return f"""
WITH horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin
), batch AS (
    SELECT e.id, e.txid, e.type, e.owner_id, e.occurred_at, e.payload,
           e.subject_type, e.subject_id
    FROM events_event e, horizon h
    WHERE (e.txid, e.id) > (%(txid)s, %(id)s) AND e.txid < h.xmin
    ORDER BY e.txid, e.id
    LIMIT %(limit)s
), relevant AS (
    SELECT e.id, e.owner_id, (e.occurred_at AT TIME ZONE 'UTC')::date AS day,
           {_counter_case()} AS counter, {_AMOUNT} AS amount, {_TASK} AS task_id
    FROM batch e
    WHERE e.type = ANY(%(types)s)
), kept AS (
    SELECT r.* FROM relevant r WHERE {keep}
), fresh AS (
    INSERT INTO events_processedevent (projection, event_id)
    SELECT %(name)s, r.id FROM kept r
    ON CONFLICT (projection, event_id) DO NOTHING
    RETURNING event_id
), counted AS (
    INSERT INTO {table} ({key_cols}, day, {", ".join(counters)})
    SELECT {key_select}, r.day, {sums}
    FROM kept r JOIN fresh f ON f.event_id = r.id
    GROUP BY {group}, r.day
    ON CONFLICT {conflict} DO UPDATE SET {updates}
    RETURNING 1
), last AS (
    SELECT txid, id, occurred_at FROM batch ORDER BY txid DESC, id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM batch), (SELECT txid FROM last), (SELECT id FROM last),
       (SELECT occurred_at FROM last), (SELECT count(*) FROM fresh)
"""


def _spec(name: str) -> Spec:
    try:
        return PROJECTIONS[name]
    except KeyError:
        raise ApplicationError(f"no projection named {name!r}", field="name") from None


def projections_ensure() -> None:
    """Create the checkpoint rows that are missing (idempotent, one statement)."""
    Projection.objects.bulk_create(
        [Projection(name=name) for name in PROJECTIONS], ignore_conflicts=True
    )


@dataclass
class RoundResult:
    read: int = 0
    counted: int = 0
    skipped: bool = False


def projection_run(*, name: str, limit: int = BATCH) -> RoundResult:
    """One round of ``name``: read up to ``limit`` events past its checkpoint, count the
    new ones, move the checkpoint. Skipped when paused or another consumer holds it."""
    spec = _spec(name)
    with transaction.atomic():
        projection = _locked(name)
        if projection is None and not Projection.objects.filter(name=name).exists():
            projections_ensure()  # a fresh database: checked only when the row is missing
            projection = _locked(name)
        if projection is None or projection.status == Projection.Status.PAUSED:
            return RoundResult(skipped=True)
        with connection.cursor() as cursor:
            cursor.execute(
                _consume_sql(spec),
                {
                    "txid": projection.position_txid,
                    "id": projection.position_id,
                    "limit": limit,
                    "types": list(COUNTERS),
                    "name": name,
                },
            )
            read, txid, last_id, last_at, counted = cursor.fetchone()
        fields = {"last_run_at": timezone.now()}
        if read:
            fields.update(
                position_txid=txid,
                position_id=last_id,
                last_event_at=last_at,
                consumed=projection.consumed + counted,
            )
        Projection.objects.filter(name=name).update(**fields)
    return RoundResult(read=int(read), counted=int(counted))


def _locked(name: str) -> Projection | None:
    """The projection's row locked for this round; None when another consumer has it."""
    return Projection.objects.select_for_update(skip_locked=True).filter(name=name).first()


def projection_catch_up(*, name: str, limit: int = BATCH, max_rounds: int = 10_000) -> int:
    """Run rounds until one reads nothing; returns the events counted."""
    counted = 0
    for _ in range(max_rounds):
        result = projection_run(name=name, limit=limit)
        counted += result.counted
        if result.skipped or result.read < limit:
            break
    return counted


def projection_lag_seconds(projection: Projection) -> float:
    """Seconds since the oldest event the projection has not consumed occurred (0 when
    it is up to date)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM now() - occurred_at) FROM events_event "
            "WHERE (txid, id) > (%s, %s) ORDER BY txid, id LIMIT 1",
            [projection.position_txid, projection.position_id],
        )
        row = cursor.fetchone()
    return max(0.0, float(row[0])) if row else 0.0


def projections_status() -> list[dict]:
    """Every projection with its checkpoint, status and lag."""
    projections_ensure()
    rows = []
    for projection in Projection.objects.order_by("name"):
        rows.append(
            {
                "name": projection.name,
                "description": PROJECTIONS[projection.name].description
                if projection.name in PROJECTIONS
                else "",
                "status": projection.status,
                "lag_seconds": round(projection_lag_seconds(projection), 3),
                "consumed": projection.consumed,
                "position": {"txid": projection.position_txid, "id": projection.position_id},
                "last_event_at": projection.last_event_at,
                "last_run_at": projection.last_run_at,
                "reset_at": projection.reset_at,
            }
        )
    return rows


def _set_status(name: str, status: str, actor, event_type: str) -> Projection:
    _spec(name)
    projections_ensure()
    with transaction.atomic():
        projection = Projection.objects.select_for_update().get(name=name)
        if projection.status != status:
            projection.status = status
            projection.save(update_fields=["status"])
            event_append(event_type, actor=actor, subject=projection, payload={"name": name})
    return projection


def projection_pause(*, name: str, actor) -> Projection:
    """Stop consuming (the checkpoint stays; events wait, retained)."""
    return _set_status(name, Projection.Status.PAUSED, actor, "projection.paused")


def projection_resume(*, name: str, actor) -> Projection:
    return _set_status(name, Projection.Status.RUNNING, actor, "projection.resumed")


def projection_reset(*, name: str, actor) -> Projection:
    """Clear the read model and its processed events and move the checkpoint to the
    start: the relay rebuilds it from the retained events (running; a paused one is
    resumed). Waits for a round in progress (the row lock)."""
    spec = _spec(name)
    projections_ensure()
    with transaction.atomic():
        projection = Projection.objects.select_for_update().get(name=name)
        spec.model.objects.all().delete()
        ProcessedEvent.objects.filter(projection=name).delete()
        projection.position_txid = 0
        projection.position_id = 0
        projection.consumed = 0
        projection.last_event_at = None
        projection.status = Projection.Status.RUNNING
        projection.reset_at = timezone.now()
        projection.save()
        event_append(
            "projection.reset", owner=None, actor=actor, subject=projection, payload={"name": name}
        )
    return projection
