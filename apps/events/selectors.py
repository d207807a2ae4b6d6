"""Reads of the outbox shared by the admin, the API and the reports.

* :func:`events_for` — the audit trail of one object: the events whose subject it is.
* :func:`events_for_owner` — an owner's events (a tenant's own history).
* :func:`event_summary` — one line of an event's payload for lists.
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import QuerySet

from apps.core.tenancy import is_operator
from apps.events.models import Event
from apps.events.services import subject_of

SUMMARY_LENGTH = 160


def events_for(subject: Any, *, user=None, limit: int | None = None) -> QuerySet[Event]:
    """The events about ``subject`` (a model instance), newest first, with their actors.

    With ``user``, a tenant sees only the events of its own data (``owner`` is the user):
    an operator's change of a tenant's object is the tenant's event and stays visible to
    it, a system event about a shared object is not.
    """
    subject_type, subject_id = subject_of(subject)
    events = (
        Event.objects.filter(subject_type=subject_type, subject_id=subject_id)
        .select_related("actor")
        .order_by("-id")
    )
    if user is not None and not is_operator(user):
        events = events.filter(owner=user) if user.is_authenticated else events.none()
    return events[:limit] if limit else events


def events_for_owner(owner: Any, *, types: list[str] | None = None) -> QuerySet[Event]:
    """The events of ``owner`` (a user or id), newest first, optionally of ``types``."""
    events = Event.objects.filter(owner=getattr(owner, "pk", owner)).order_by("-id")
    if types:
        events = events.filter(type__in=types)
    return events


def event_summary(event: Event, *, length: int = SUMMARY_LENGTH) -> str:
    """The payload as one line (``key=value, …``), cut at ``length`` characters."""
    if not event.payload:
        return ""
    if isinstance(event.payload, dict):
        parts = [
            f"{key}={value if isinstance(value, str) else json.dumps(value)}"
            for key, value in event.payload.items()
        ]
        text = ", ".join(parts)
    else:
        text = json.dumps(event.payload)
    return text if len(text) <= length else text[: length - 1] + "…"
