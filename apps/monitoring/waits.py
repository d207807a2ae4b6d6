"""Task wait metrics (queue entry → first accepted send), written by the dispatcher
through :func:`task_waits_record`: one statement for a chunk's tasks."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection


def task_waits_record(*, task_ids: Sequence[int], sent_ago: Sequence[float]) -> None:
    """Record the first send of each task in ``task_ids``, ``sent_ago`` seconds ago
    (same order), measured from its queue entry or its scheduled time, whichever is
    later. A task that has its metric already keeps it (the first send is once)."""
    if not task_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO monitoring_taskwaitmetric (task_id, owner_id, queued_at, first_sent_at,
                                                   wait_seconds)
            SELECT t.id, t.owner_id, GREATEST(t.queued_at, t.scheduled_at), f.at,
                   GREATEST(0, EXTRACT(EPOCH FROM f.at - GREATEST(t.queued_at, t.scheduled_at)))
            FROM unnest(%s::bigint[], %s::float8[]) AS u(task_id, ago)
            JOIN dispatch_task t ON t.id = u.task_id,
                 LATERAL (SELECT now() - make_interval(secs => u.ago) AS at) f
            WHERE t.queued_at IS NOT NULL
            ON CONFLICT (task_id) DO NOTHING
            """,
            [list(task_ids), list(sent_ago)],
        )
