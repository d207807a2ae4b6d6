"""The dispatcher's events, appended set-based by the statements that make the changes.

A chunk's outcome statement appends one ``subtask.sent`` per accepted message as a
data-modifying CTE of that same statement (no extra round trip, no loop); a failure's
statement appends its ``subtask.failed`` / ``subtask.dead`` / ``subtask.unknown`` the same
way, recovery its ``subtask.unknown`` and ``subtask.sent``, the tick its ``task.started``.
The actor of all of them is the system.

``EDM_EVENTS_ENABLED=0`` leaves these CTEs out: a switch for operations and for the
benchmark that measures what they cost (``bench/bench_dispatch.py --part events``);
every other event (an operator's change, a task's completion) is always recorded.
"""

from __future__ import annotations

from apps.core.audit import events_enabled
from apps.events.services import events_append_sql

# The columns a subtask CTE must return for its events.
SUBTASK_COLUMNS = "s.id, s.task_id, s.owner_id, s.contact_id, s.message_id"

_PAYLOAD = (
    "jsonb_build_object('task', x.task_id, 'contact', x.contact_id,"
    " 'message_id', x.message_id{extra})"
)


def subtask_events_cte(
    source: str, *, event_type: str, where: str = "", extra: str = "", name: str = "events"
) -> str:
    """``, <name> AS (INSERT INTO events_event … SELECT … FROM <source> x)`` — one event
    per row of ``source`` (a CTE returning :data:`SUBTASK_COLUMNS`), or ``""`` when
    events are switched off. ``event_type`` is an SQL expression (a quoted type, or a
    CASE over ``x``); ``where`` filters the rows; ``extra`` adds payload pairs
    (``", 'service', x.service_id"``)."""
    if not events_enabled():
        return ""
    select = (
        f"SELECT {event_type}, x.owner_id, NULL, 'dispatch.subtask', x.id::text, "
        + _PAYLOAD.format(extra=extra)
        + f" FROM {source} x"
        + (f" WHERE {where}" if where else "")
    )
    return f", {name} AS ({events_append_sql(select)})"


def task_started_cte(source: str, *, name: str = "started_events") -> str:
    """``, <name> AS (…)`` — ``task.started`` per row of ``source`` (``id, owner_id`` of
    tasks that started now), or ``""`` when events are switched off."""
    if not events_enabled():
        return ""
    select = (
        "SELECT 'task.started', x.owner_id, NULL, 'dispatch.task', x.id::text, '{}'::jsonb"
        f" FROM {source} x"
    )
    return f", {name} AS ({events_append_sql(select)})"
