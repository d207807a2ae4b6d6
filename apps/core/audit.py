"""Recording who changed what: the owning apps' side of the event outbox.

Every service function that changes state takes the acting user (``actor``, ``None`` for
the system) and appends its event in the same transaction through
``apps.events.services.event_append``. A change of many rows at once appends its events
with one statement (:func:`events_append_ids`), never with a loop of inserts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import connection

from apps.events.services import event_append, events_append_sql
from apps.events.types import check_type

__all__ = ["actor_id", "event_append", "events_append_ids", "events_enabled"]


def actor_id(actor: Any) -> int | None:
    """The id of an acting user (a user, an id, or ``None``/anonymous for the system)."""
    if actor is None:
        return None
    if isinstance(actor, int):
        return actor
    if not getattr(actor, "is_authenticated", True):
        return None
    return actor.pk


def events_enabled() -> bool:
    """``EDM_EVENTS_ENABLED`` (default on): off only to measure what the high-volume
    events of the dispatcher cost (``bench/bench_dispatch.py --part events``)."""
    return bool(getattr(settings, "EDM_EVENTS_ENABLED", True))


def events_append_ids(
    event_type: str,
    *,
    subject_type: str,
    ids: Sequence[int],
    owner: Any = None,
    actor: Any = None,
    payload: dict | None = None,
) -> int:
    """One event per id of ``subject_type`` (``"app_label.model"``), all with the same
    owner, actor and payload, in one statement of the current transaction. Returns how
    many were appended."""
    if not ids:
        return 0
    if not connection.in_atomic_block:
        raise RuntimeError("events must be appended inside the transaction of their change")
    statement = events_append_sql(
        "SELECT %s, %s, %s, %s, u.id::text, %s::jsonb FROM unnest(%s::bigint[]) AS u(id)"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            statement,
            [
                check_type(event_type),
                getattr(owner, "pk", owner),
                actor_id(actor),
                subject_type,
                json.dumps(payload or {}),
                list(ids),
            ],
        )
        return cursor.rowcount
