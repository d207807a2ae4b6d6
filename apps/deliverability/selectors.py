"""Reads shared by the dispatcher, the contacts services, the API and the admin."""

from __future__ import annotations

import re

from django.db import connection
from django.db.models import Count, Q

from apps.deliverability.models import FeedbackEvent, Suppression, TrackingEvent


def suppressed_sql(*, owner: str, email: str) -> str:
    """A SQL condition: the address ``email`` (a SQL expression, lower-case) is on the
    suppression list of ``owner`` (a SQL expression) or on the global list, by address
    or by domain. Both branches read a partial index."""
    return (
        "EXISTS (SELECT 1 FROM deliverability_suppression x"
        f" WHERE (x.owner_id = {owner} OR x.owner_id IS NULL)"
        f" AND ((x.email <> '' AND x.email = {email})"
        f" OR (x.domain <> '' AND x.domain = split_part({email}, '@', 2))))"
    )


def new_contact_status_sql(*, owner: str, email: str) -> str:
    """A SQL expression: the status a contact created now for ``email`` starts with —
    what an address suppression of ``owner`` or the global list says (``unsubscribed``,
    ``bounced``, ``complained``), else ``active``. A re-imported address that
    unsubscribed never comes back ``active``."""
    return (
        "COALESCE((SELECT CASE x.reason WHEN 'bounced' THEN 'bounced'"
        " WHEN 'complained' THEN 'complained' ELSE 'unsubscribed' END"
        " FROM deliverability_suppression x"
        f" WHERE (x.owner_id = {owner} OR x.owner_id IS NULL)"
        f" AND x.email <> '' AND x.email = {email}"
        " AND x.reason IN ('unsubscribed', 'bounced', 'complained')"
        " ORDER BY x.owner_id NULLS LAST LIMIT 1), 'active')"
    )


def suppressions_exist(*, owner_id: int) -> bool:
    """Whether ``owner`` (or the global list) has any suppression at all: set-based
    statements skip the per-row check when there is none."""
    return Suppression.objects.filter(Q(owner_id=owner_id) | Q(owner__isnull=True)).exists()


def suppression_for(*, owner_id: int, email: str) -> Suppression | None:
    """The suppression that keeps ``email`` from ``owner``'s mail (address first, then
    domain; the owner's own before the global one), or None."""
    email = (email or "").strip().lower()
    domain = email.rpartition("@")[2]
    rows = Suppression.objects.filter(Q(owner_id=owner_id) | Q(owner__isnull=True)).filter(
        Q(email=email) | Q(domain=domain, email="")
    )
    found = sorted(rows, key=lambda s: (s.email == "", s.owner_id is None))
    return found[0] if found else None


def suppressions_visible_to(user):
    """The suppressions a user may read: an operator every one, a tenant their own and
    the global ones (read-only for them)."""
    from apps.monitoring.access import is_operator

    rows = Suppression.objects.all()
    if is_operator(user):
        return rows
    return rows.filter(Q(owner=user) | Q(owner__isnull=True))


def task_stats(*, task_id: int, sent: int) -> dict:
    """``{sent, opens, unique_opens, machine_opens, clicks, unique_clicks, links: [{url,
    clicks, unique_clicks}], unsubscribes, bounces, soft_bounces, complaints}`` of one
    task. Machine opens (proxy prefetches) are counted apart and not in ``opens``; a
    click implies an open, so ``unique_opens`` counts contacts that opened or clicked."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FILTER (WHERE kind = 'open' AND NOT is_machine),
                   count(*) FILTER (WHERE kind = 'open' AND is_machine),
                   count(DISTINCT contact_id) FILTER (WHERE kind = 'click' OR NOT is_machine),
                   count(*) FILTER (WHERE kind = 'click'),
                   count(DISTINCT contact_id) FILTER (WHERE kind = 'click')
            FROM deliverability_trackingevent WHERE task_id = %s
            """,
            [task_id],
        )
        opens, machine_opens, unique_opens, clicks, unique_clicks = cursor.fetchone()
        cursor.execute(
            """
            SELECT url, count(*), count(DISTINCT contact_id) FROM deliverability_trackingevent
            WHERE task_id = %s AND kind = 'click' GROUP BY url ORDER BY 2 DESC, 1 LIMIT 500
            """,
            [task_id],
        )
        links = [
            {"url": url, "clicks": count, "unique_clicks": unique}
            for url, count, unique in cursor.fetchall()
        ]
    feedback = dict.fromkeys(FeedbackEvent.Kind.values, 0)
    for kind, count in (
        FeedbackEvent.objects.filter(task_id=task_id).values_list("kind").annotate(n=Count("id"))
    ):
        feedback[kind] = count
    return {
        "sent": sent,
        "opens": opens,
        "unique_opens": unique_opens,
        "machine_opens": machine_opens,
        "clicks": clicks,
        "unique_clicks": unique_clicks,
        "links": links,
        "unsubscribes": feedback[FeedbackEvent.Kind.UNSUBSCRIBE],
        "bounces": feedback[FeedbackEvent.Kind.HARD_BOUNCE],
        "soft_bounces": feedback[FeedbackEvent.Kind.SOFT_BOUNCE],
        "complaints": feedback[FeedbackEvent.Kind.COMPLAINT],
    }


def tracking_events_of(*, task_id: int):
    return TrackingEvent.objects.filter(task_id=task_id)


# Our Message-IDs, with or without the angle brackets (some providers drop them).
OUR_MESSAGE_ID = re.compile(r"<?((\d+)\.[0-9a-f]+\.(\d+)@[A-Za-z0-9.-]+)>?")


def message_ref(*, message_id: str = "", subtask_id: int | None = None):
    """The :class:`~apps.deliverability.services.MessageRef` of one of our messages, by
    its Message-ID (``<task.random.subtask@domain>``: the subtask's key is in it, so no
    index on Message-IDs is needed, and the whole id must match) or by the subtask id of
    a verified VERP address; None when it is not ours or its task is gone."""
    from apps.deliverability.services import MessageRef
    from apps.dispatch.models import SubTask

    if message_id:
        match = OUR_MESSAGE_ID.search(message_id)
        if match is None:
            return None
        subtask_id = int(match[3])
    if subtask_id is None:
        return None
    row = (
        SubTask.objects.filter(pk=subtask_id)
        .values("owner_id", "contact_id", "task_id", "to_email", "message_id")
        .first()
    )
    if row is None or (message_id and row["message_id"] != f"<{match[1]}>"):
        return None
    return MessageRef(
        owner_id=row["owner_id"],
        contact_id=row["contact_id"],
        task_id=row["task_id"],
        subtask_id=subtask_id,
        email=row["to_email"],
    )
