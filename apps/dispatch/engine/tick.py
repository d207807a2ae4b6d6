"""One tick: reserve ready services and pick subtasks fairly, in one short transaction.

Statements (one transaction, database clock only, no statement ever waits for a lock):

1. **Reserve** services whose pool has a ready owner lane: ``SKIP LOCKED``,
   earliest ``next_available_at`` first (then success rate, response time). Each gets a
   number of *slots* (1 s worth at its ``sending_rate``, capped by the batch and by the
   quota left for today; ``used_quota`` restarts when ``quota_day`` is not today) and is
   *held*: ``next_available_at = now() + lease``. The dispatcher that holds a service is
   the only one sending through it; when its chunk ends it sets ``next_available_at =
   now() + sending_rate`` (after the last message was accepted), which is what makes "never
   twice within ``sending_rate``" hold across dispatchers and crashes.
2. **Pick owners** per pool: the least recently served lanes (``served`` round numbers
   stamped at write time, an index read), and for each its best task lane (priority
   first, then least recently served).
3. **Claim** up to a fair share of subtasks per owner from the ready queue of the chosen
   task (partial index, ``SKIP LOCKED``): ``allocated``, service assigned, a fresh attempt
   token, a lease.
4. **Stamp** the owners and tasks served; recompute the lanes that ran dry (rows we hold).
5. **Give back** slots nobody needed (quota and ``next_available_at`` restored).

Row locks are ``FOR NO KEY UPDATE``: they do not block the ``KEY SHARE`` locks that
foreign-key checks take (a dead letter or a wait metric inserted for a task or subtask
this tick holds), which keeps lock waits one-directional.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from apps.dispatch import queues
from apps.dispatch.conf import DispatchSettings

# A rate-limited service is given this much sending time per chunk.
CHUNK_SECONDS = 1.0


@dataclass
class ReservedService:
    id: int
    pool_id: int
    slots: int
    old_next: datetime
    sending_rate: float
    kind: str
    host: str
    port: int
    security: str
    username: str
    password_encrypted: str
    from_email: str
    from_name: str

    @property
    def fingerprint(self) -> tuple:
        return (self.kind, self.host, self.port, self.security, self.username,
                self.password_encrypted)


@dataclass
class Claimed:
    id: int
    task_id: int
    owner_id: int
    token: int
    to_email: str
    message_id: str
    attempts: int
    created_at: datetime
    had_failures: bool
    contact: dict[str, Any]


@dataclass
class Chunk:
    """The messages one service sends in a row, on one connection."""

    service: ReservedService
    subtasks: list[Claimed] = field(default_factory=list)


_RESERVE = """
WITH candidates AS (
    SELECT s.id, s.next_available_at AS old_next,
           CASE WHEN s.quota_day = current_date THEN s.used_quota ELSE 0 END AS used
    FROM services_emailservice s
    WHERE s.is_enabled AND s.next_available_at <= now()
      AND (s.daily_quota = 0 OR s.quota_day IS DISTINCT FROM current_date
           OR s.used_quota < s.daily_quota)
      AND s.pool_id = ANY(ARRAY(
            SELECT p.id FROM services_pool p
            WHERE EXISTS (SELECT 1 FROM dispatch_ownerqueue q
                          WHERE q.pool_id = p.id AND q.ready_at <= now())))
    ORDER BY s.next_available_at, s.success_rate DESC, s.avg_response_time, s.id
    LIMIT %(services)s
    FOR NO KEY UPDATE OF s SKIP LOCKED
), sized AS (
    SELECT c.id, c.old_next, c.used, LEAST(
        CASE WHEN s.sending_rate > 0
             THEN GREATEST(1, floor(%(horizon)s / s.sending_rate))::int
             ELSE %(cap)s END,
        %(cap)s,
        CASE WHEN s.daily_quota = 0 THEN %(cap)s ELSE s.daily_quota - c.used END
    ) AS slots
    FROM candidates c JOIN services_emailservice s ON s.id = c.id
)
UPDATE services_emailservice s
SET used_quota = z.used + z.slots, quota_day = current_date,
    next_available_at = now() + make_interval(secs => %(hold)s)
FROM sized z
WHERE s.id = z.id
RETURNING s.id, s.pool_id, z.slots, z.old_next, s.sending_rate, s.kind, s.host, s.port,
          s.security, s.username, s.password_encrypted, s.from_email, s.from_name
"""

_PICK = """
SELECT o.pool_id, o.owner_id, t.task_id
FROM unnest(%(pools)s::bigint[], %(limits)s::int[]) AS p(pool_id, n)
CROSS JOIN LATERAL (
    SELECT q.pool_id, q.owner_id FROM dispatch_ownerqueue q
    WHERE q.pool_id = p.pool_id AND q.ready_at IS NOT NULL AND q.ready_at <= now()
    ORDER BY q.served
    LIMIT p.n
    FOR NO KEY UPDATE SKIP LOCKED
) o
LEFT JOIN LATERAL (
    SELECT tq.task_id FROM dispatch_taskqueue tq
    WHERE tq.owner_id = o.owner_id AND tq.pool_id = o.pool_id
      AND tq.ready_at IS NOT NULL AND tq.ready_at <= now()
    ORDER BY tq.priority DESC, tq.served
    LIMIT 1
    FOR NO KEY UPDATE SKIP LOCKED
) t ON true
"""

_CLAIM_IDS = """
SELECT x.task_id, x.id, x.contact_id
FROM unnest(%(tasks)s::bigint[], %(quotas)s::int[]) AS w(task_id, n)
CROSS JOIN LATERAL (
    SELECT s.task_id, s.id, s.contact_id FROM dispatch_subtask s
    WHERE s.task_id = w.task_id AND s.status = 'pending' AND s.next_attempt_at <= now()
    ORDER BY s.next_attempt_at, s.id
    LIMIT w.n
    FOR NO KEY UPDATE SKIP LOCKED
) x
"""

# Mark the claimed rows (already locked) and stamp the served lanes in one statement. The
# update is driven by the id array, one primary-key lookup per row.
_CLAIM = """
WITH claimed AS (
    UPDATE dispatch_subtask s
    SET status = 'allocated', service_id = a.service_id,
        attempt_token = s.attempt_token + 1,
        lease_expires_at = now() + make_interval(secs => %(lease)s)
    FROM unnest(%(ids)s::bigint[], %(services)s::bigint[]) AS a(id, service_id)
    WHERE s.id = a.id
    RETURNING s.id, s.task_id, s.owner_id, s.attempt_token, s.to_email, s.message_id,
              s.attempts, s.created_at, s.history <> '[]'::jsonb AS had_failures,
              a.service_id, s.contact_id
), served_tasks AS (
    UPDATE dispatch_taskqueue q
    SET served = nextval('dispatch_served_seq'), served_at = now()
    WHERE q.task_id = ANY(%(served_tasks)s::bigint[])
    RETURNING q.pool_id, q.owner_id
), served_owners AS (
    UPDATE dispatch_ownerqueue o SET served = nextval('dispatch_served_seq')
    FROM (SELECT DISTINCT pool_id, owner_id FROM served_tasks) t
    WHERE o.pool_id = t.pool_id AND o.owner_id = t.owner_id
    RETURNING 1
)
SELECT k.id, k.task_id, k.owner_id, k.attempt_token, k.to_email, k.message_id, k.attempts,
       k.created_at, k.had_failures, k.service_id,
       c.first_name, c.last_name, c.email, c.attributes
FROM claimed k
LEFT JOIN contacts_contact c ON c.id = k.contact_id
"""

_GIVE_BACK = """
UPDATE services_emailservice s
SET used_quota = GREATEST(0, s.used_quota - g.unused),
    next_available_at = CASE WHEN g.used = 0 THEN g.old_next ELSE s.next_available_at END
FROM unnest(%(ids)s::bigint[], %(unused)s::int[], %(used)s::int[], %(old)s::timestamptz[])
         AS g(id, unused, used, old_next)
WHERE s.id = g.id
"""


def _contact(row: tuple) -> dict[str, Any]:
    first_name, last_name, email, attributes = row
    if isinstance(attributes, str):
        attributes = json.loads(attributes)
    return {
        "first_name": first_name or "",
        "last_name": last_name or "",
        "email": email or "",
        "attributes": attributes or {},
    }


def _share(slots: int, owners: int) -> list[int]:
    """Split ``slots`` over ``owners`` as evenly as possible (earlier owners get the rest)."""
    base, extra = divmod(slots, owners)
    return [base + (1 if index < extra else 0) for index in range(owners)]


def tick(conf: DispatchSettings, *, free: int, known_sending: set[int] | None = None) -> (
    list[Chunk]
):
    """Reserve up to ``free`` services and claim their slots' worth of subtasks fairly.

    Returns the chunks to send (one per service that got work), committed: the services
    are held and the subtasks ``allocated`` to this dispatcher under fresh tokens. Tasks
    served for the first time become ``sending`` (``known_sending`` caches the ones
    already seen, to skip that update).
    """
    if free <= 0:
        return []
    cap = max(1, conf.batch_size // max(1, conf.concurrency))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_RESERVE, {
            "services": min(free, conf.batch_size), "horizon": CHUNK_SECONDS, "cap": cap,
            "hold": conf.lease_seconds,
        })
        services = [ReservedService(*row) for row in cursor.fetchall()]
        if not services:
            return []
        slots_by_pool: dict[int, int] = defaultdict(int)
        for service in services:
            slots_by_pool[service.pool_id] += service.slots
        pools = sorted(slots_by_pool)
        cursor.execute(_PICK, {"pools": pools, "limits": [slots_by_pool[p] for p in pools]})
        picked = cursor.fetchall()

        # Fair shares: each owner picked in a pool gets an equal part of its slots.
        owners_by_pool: dict[int, list[tuple[int, int]]] = defaultdict(list)
        dry_owners: list[tuple[int, int]] = []
        for pool_id, owner_id, task_id in picked:
            if task_id is None:
                dry_owners.append((pool_id, owner_id))
            else:
                owners_by_pool[pool_id].append((owner_id, task_id))
        tasks, quotas, task_pool = [], [], {}
        for pool_id, entries in owners_by_pool.items():
            for (owner_id, task_id), share in zip(
                entries, _share(slots_by_pool[pool_id], len(entries)), strict=True
            ):
                if share:
                    tasks.append(task_id)
                    quotas.append(share)
                    task_pool[task_id] = (pool_id, owner_id)
        claimed_ids: list[tuple[int, int, int]] = []
        if tasks:
            cursor.execute(_CLAIM_IDS, {"tasks": tasks, "quotas": quotas})
            claimed_ids = cursor.fetchall()
        got: dict[int, int] = defaultdict(int)
        for task_id, _, _ in claimed_ids:
            got[task_id] += 1

        # Assign the claimed subtasks to the reserved services of their pool, in order.
        free_slots: dict[int, list[list]] = defaultdict(list)
        for service in services:
            free_slots[service.pool_id].append([service, service.slots])
        ids, service_ids = [], []
        for task_id, subtask_id, _ in claimed_ids:
            pool_slots = free_slots[task_pool[task_id][0]]
            ids.append(subtask_id)
            service_ids.append(pool_slots[0][0].id)
            pool_slots[0][1] -= 1
            if pool_slots[0][1] == 0:
                pool_slots.pop(0)

        chunks: dict[int, Chunk] = {}
        if ids:
            cursor.execute(_CLAIM, {
                "ids": ids, "services": service_ids, "lease": conf.lease_seconds,
                "served_tasks": sorted(got),
            })
            by_id = {service.id: service for service in services}
            for row in cursor.fetchall():
                service_id = row[9]
                chunk = chunks.setdefault(service_id, Chunk(service=by_id[service_id]))
                chunk.subtasks.append(Claimed(
                    id=row[0], task_id=row[1], owner_id=row[2], token=row[3], to_email=row[4],
                    message_id=row[5], attempts=row[6], created_at=row[7],
                    had_failures=row[8], contact=_contact(row[10:14]),
                ))
            for chunk in chunks.values():
                chunk.subtasks.sort(key=lambda claimed: claimed.id)

        # Lanes that ran dry (fewer ready rows than their share) are recomputed; every
        # lane touched here was locked by this transaction's pick, so a writer adding
        # work to one of them is waiting for us and re-applies its rows after we commit.
        dry_tasks = [task_id for task_id, quota in zip(tasks, quotas, strict=True)
                     if got[task_id] < quota]
        if dry_tasks:
            queues.lanes_refresh(task_ids=dry_tasks)
        if dry_owners:
            queues.owners_refresh(lanes=dry_owners)
        _give_back(cursor, services, chunks)
        _mark_tasks_sending(cursor, set(got), known_sending)
    return list(chunks.values())


def _mark_tasks_sending(cursor, task_ids: set[int], known: set[int] | None) -> None:
    """queued/scheduled → sending for tasks served now. A task row locked by an operator
    action (pause, cancel) is skipped rather than waited for: the tick never waits."""
    new = sorted(task_ids - known) if known is not None else sorted(task_ids)
    if not new:
        return
    cursor.execute(
        """
        UPDATE dispatch_task t SET status = 'sending',
               started_at = COALESCE(t.started_at, now()), updated_at = now()
        FROM (SELECT id FROM dispatch_task WHERE id = ANY(%s)
              AND status IN ('queued', 'scheduled') FOR NO KEY UPDATE SKIP LOCKED) x
        WHERE t.id = x.id
        """,
        [new],
    )
    if known is not None:
        known.update(new)


def _give_back(cursor, services: list[ReservedService], chunks: dict[int, Chunk]) -> None:
    """Return the slots of reserved services that got fewer subtasks than reserved."""
    rows = []
    for service in services:
        used = len(chunks[service.id].subtasks) if service.id in chunks else 0
        if used < service.slots:
            rows.append((service.id, service.slots - used, used, service.old_next))
    if not rows:
        return
    cursor.execute(_GIVE_BACK, {
        "ids": [row[0] for row in rows], "unused": [row[1] for row in rows],
        "used": [row[2] for row in rows], "old": [row[3] for row in rows],
    })
    for service in services:
        if service.id in chunks:
            service.slots = len(chunks[service.id].subtasks)


def next_ready_in() -> float | None:
    """Seconds until some pool has both a ready owner lane and a ready service (≤ 0: now;
    ``None``: nothing queued anywhere)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT EXTRACT(EPOCH FROM min(GREATEST(o.ready, s.ready)) - now())
            FROM (SELECT pool_id, min(ready_at) AS ready FROM dispatch_ownerqueue
                  WHERE ready_at IS NOT NULL GROUP BY pool_id) o
            JOIN (SELECT pool_id, min(next_available_at) AS ready FROM services_emailservice
                  WHERE is_enabled AND (daily_quota = 0 OR quota_day IS DISTINCT FROM current_date
                                        OR used_quota < daily_quota)
                  GROUP BY pool_id) s USING (pool_id)
            """
        )
        row = cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])
