"""Appending events: the one way a state change is recorded for integrations and reports.

Call :func:`event_append` inside the transaction of the change it describes (the caller's
``transaction.atomic()``), with the acting user (``None`` for the system). For many changes made
by one statement, :func:`events_append_sql` gives the ``INSERT … SELECT`` to run in the same
transaction.
"""

from __future__ import annotations

from typing import Any

from django.db import connection

from apps.events.models import Event
from apps.events.types import check_type


def subject_of(obj: Any) -> tuple[str, str]:
    """``("app_label.model", "pk")`` of a model instance, the way events name their subject."""
    if obj is None:
        return "", ""
    return obj._meta.label_lower, str(obj.pk)


def event_append(
    event_type: str,
    *,
    owner: Any = None,
    actor: Any = None,
    subject: Any = None,
    payload: dict | None = None,
) -> Event:
    """Append one event in the current transaction and return it.

    ``owner`` and ``actor`` are users or user ids (``None``: the system); ``subject`` is the
    model instance the event is about. ``payload`` must be JSON-serialisable.
    """
    if not connection.in_atomic_block:
        raise RuntimeError(
            "event_append() must run inside the transaction of the change it records"
        )
    subject_type, subject_id = subject_of(subject)
    return Event.objects.create(
        type=check_type(event_type),
        owner_id=getattr(owner, "pk", owner),
        actor_id=getattr(actor, "pk", actor),
        subject_type=subject_type,
        subject_id=subject_id,
        payload=payload or {},
    )


def events_append_sql(select_sql: str) -> str:
    """The statement that appends one event per row of ``select_sql``.

    ``select_sql`` must yield the columns ``type, owner_id, actor_id, subject_type,
    subject_id, payload`` in that order (payload a ``jsonb``); ``uid`` and ``occurred_at``
    take their database defaults. Use it as a data-modifying CTE or on its own, in the
    transaction of the change.
    """
    return (
        "INSERT INTO events_event (type, owner_id, actor_id, subject_type, subject_id, payload) "
        + select_sql
    )
