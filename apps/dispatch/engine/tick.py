"""One tick: reserve ready services and pick subtasks fairly, in one short transaction.

Three statements (one transaction, database clock only, no statement ever waits for a
lock), each a single round trip — and at most once a second per process a fourth, what is
left to send in the pools (:func:`_fair_shares`: no chunk gets more than an equal share of
it among the pool's services):

1. **Reserve** services whose pool has a ready owner lane: ``SKIP LOCKED``,
   earliest ``next_available_at`` first (then success rate, response time). Each gets a
   number of *slots*: what it sends in the next few seconds at its rate and its measured
   time per message (``policy.chunk_size``), within the quota left for today
   (``used_quota`` counts only when ``quota_day`` is today); the slots are laid out one
   round across the services at a time, at most ``queue.batch_size`` in all. A
   rate-limited service may be reserved a little before its ``next_available_at``
   (``policy.claim_lead``): its first message is then prepared ahead and committed at
   that time. The rows are only locked here; step 3 writes the ones that got work.
2. **Pick owners** per pool: the least recently served lanes (``ORDER BY served``: round
   numbers stamped at write time on a table of one row per owner, never a ranking of the
   pending set), and for each its best task lane (priority first, then least recently
   served). Each picked owner gets an equal share of its pool's slots.
3. **Claim** up to its share of subtasks per owner from the ready queue of the chosen
   task (partial index, ``SKIP LOCKED``): ``allocated``, service assigned, a fresh attempt
   token, a lease. The same statement **stamps** the task and owner lanes served (one
   round number per tick) and **holds** the services that got work:
   ``next_available_at = now() + lease + sending_rate``, ``used_quota`` charged with
   what they got.
   Slots nobody needed are thereby never taken: a service that got nothing is left as it
   was. The dispatcher that holds a service is the only one sending through it; when its
   chunk ends it sets ``next_available_at`` to ``sending_rate`` after its last commit,
   and the next holder commits nothing before that: "never twice within
   ``sending_rate``" holds across dispatchers and crashes (a dead holder committed
   nothing after its lease).

Then the lanes that ran dry are recomputed (rows we hold) and tasks served for the first
time become ``sending``.

Row locks are ``FOR NO KEY UPDATE``: they do not block the ``KEY SHARE`` locks that
foreign-key checks take (a dead letter or a wait metric inserted for a task or subtask
this tick holds), which keeps lock waits one-directional. Every write is driven by an
array of primary keys, so the plans stay key lookups whatever the statistics say, and
JIT is off for the transaction (the planner's estimate of a per-task ``LIMIT`` grows with
the average task size, and compiling would cost more than the tick). Its statements are
prepared once per connection (``PreparingCursor``): planning them anew took longer than
running them.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from django.db import transaction

from apps.core.database import PreparingCursor
from apps.dispatch import queues
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine import policy
from apps.dispatch.engine.events import task_started_cte


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
    avg_response_time: float = 0.0
    # time.monotonic() before which this service commits nothing (its next_available_at)
    not_before: float = 0.0
    # time.monotonic() after which the chunk commits nothing: well before the claim's
    # lease ends (the service is held until then, plus its rate).
    deadline: float = float("inf")

    @property
    def fingerprint(self) -> tuple:
        return (
            self.kind,
            self.host,
            self.port,
            self.security,
            self.username,
            self.password_encrypted,
        )


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


# Lock the earliest-ready services of pools with a ready lane and size their slots. Nothing
# is written here: the claim statement charges (and holds) only the services that got work,
# so a service nobody needed is left exactly as it was.
_RESERVE = """
SELECT s.id, s.pool_id,
       CASE WHEN s.daily_quota = 0 THEN NULL
            WHEN s.quota_day = current_date THEN s.daily_quota - s.used_quota
            ELSE s.daily_quota END AS quota_left,
       s.next_available_at, s.sending_rate, s.kind, s.host, s.port, s.security, s.username,
       s.password_encrypted, s.from_email, s.from_name, s.avg_response_time,
       EXTRACT(EPOCH FROM s.next_available_at - now())::float8 AS wait
FROM services_emailservice s
WHERE s.is_enabled
  AND s.next_available_at <= now() + make_interval(secs => CASE WHEN s.sending_rate > 0
        THEN LEAST(s.sending_rate, GREATEST(s.avg_response_time, 0) + %(lead)s) ELSE 0 END)
  AND (s.daily_quota = 0 OR s.quota_day IS DISTINCT FROM current_date
       OR s.used_quota < s.daily_quota)
  AND s.pool_id = ANY(ARRAY(
        SELECT p.id FROM services_pool p
        WHERE EXISTS (SELECT 1 FROM dispatch_ownerqueue q
                      WHERE q.pool_id = p.id AND q.ready_at <= now())))
ORDER BY s.next_available_at, s.success_rate DESC, s.avg_response_time, s.id
LIMIT %(services)s::int
FOR NO KEY UPDATE SKIP LOCKED
"""

# The least recently served ready owner lanes of each pool (as many as it has slots), each
# with its best ready task lane. The ordering reads 2 × slots candidates without locking
# them (a bounded sort), then locks them in that order, skipping any another tick holds.
_PICK = """
SELECT o.id, p.pool_id, o.owner_id, t.task_id
FROM unnest(%(pools)s::bigint[], %(limits)s::int[]) AS p(pool_id, n)
CROSS JOIN LATERAL (
    SELECT l.id, l.owner_id
    FROM (SELECT q.id, q.served FROM dispatch_ownerqueue q
          WHERE q.pool_id = p.pool_id AND q.ready_at IS NOT NULL AND q.ready_at <= now()
          ORDER BY q.served
          LIMIT 2 * p.n) c
    CROSS JOIN LATERAL (
        SELECT q.id, q.owner_id FROM dispatch_ownerqueue q
        WHERE q.id = c.id AND q.ready_at IS NOT NULL AND q.ready_at <= now()
        FOR NO KEY UPDATE SKIP LOCKED
    ) l
    ORDER BY c.served
    LIMIT p.n
) o
LEFT JOIN LATERAL (
    SELECT tq.task_id FROM dispatch_taskqueue tq
    WHERE tq.owner_id = o.owner_id AND tq.pool_id = p.pool_id
      AND tq.ready_at IS NOT NULL AND tq.ready_at <= now()
    ORDER BY tq.priority DESC, tq.served
    LIMIT 1
    FOR NO KEY UPDATE SKIP LOCKED
) t ON true
"""

# Claim each picked task's share from its ready queue and write it all in one statement:
# the subtasks (each seated on a reserved slot of its pool: ``seats`` lays the pool's slots
# out service after service, ``base`` is where the pool starts), the served task and owner
# lanes (one round number for the tick: they were served together), and the services that
# got work (held and charged for what they got; the others are left as they were). Every
# write is driven by an array of keys, so the plan is primary-key lookups whatever the
# planner believes about the rows claimed (and with hash joins off).
_CLAIM = """
WITH picked AS (
    SELECT w.task_id, w.lane_id, x.id,
           (%(seats)s::bigint[])[w.base + row_number() OVER (
               PARTITION BY w.pool_id ORDER BY w.ord, x.next_attempt_at, x.id)] AS service_id
    FROM unnest(%(tasks)s::bigint[], %(quotas)s::int[], %(lanes)s::bigint[],
                %(pools)s::bigint[], %(bases)s::int[])
         WITH ORDINALITY AS w(task_id, n, lane_id, pool_id, base, ord)
    CROSS JOIN LATERAL (
        SELECT s.id, s.next_attempt_at FROM dispatch_subtask s
        WHERE s.task_id = w.task_id AND s.status = 'pending' AND s.next_attempt_at <= now()
        ORDER BY s.next_attempt_at, s.id
        LIMIT w.n
        FOR NO KEY UPDATE SKIP LOCKED
    ) x
), claimed AS (
    UPDATE dispatch_subtask s
    SET status = 'allocated', service_id = a.service_id,
        attempt_token = s.attempt_token + 1,
        lease_expires_at = now() + make_interval(secs => %(lease)s::float8)
    FROM unnest(ARRAY(SELECT id FROM picked ORDER BY id),
                ARRAY(SELECT service_id FROM picked ORDER BY id)) AS a(id, service_id)
    WHERE s.id = a.id
    RETURNING s.id, s.task_id, s.owner_id, s.attempt_token, s.to_email, s.message_id,
              s.attempts, s.created_at, s.history <> '[]'::jsonb AS had_failures,
              s.service_id, s.contact_id
), round AS (
    SELECT nextval('dispatch_served_seq') AS served
), served_tasks AS (
    UPDATE dispatch_taskqueue q SET served = r.served, served_at = now()
    FROM round r
    WHERE q.task_id = ANY(ARRAY(SELECT task_id FROM picked))
), served_owners AS (
    UPDATE dispatch_ownerqueue o SET served = r.served
    FROM round r
    WHERE o.id = ANY(ARRAY(SELECT lane_id FROM picked))
), charged AS (
    -- The service rows are locked since the reservation: used_quota is still what it read.
    UPDATE services_emailservice s
    SET used_quota = CASE WHEN s.quota_day = current_date THEN s.used_quota ELSE 0 END + c.n,
        quota_day = current_date,
        next_available_at = now() + make_interval(secs => %(hold)s::float8 + s.sending_rate)
    FROM unnest(ARRAY(SELECT service_id FROM picked GROUP BY 1 ORDER BY 1),
                ARRAY(SELECT count(*)::int FROM picked GROUP BY service_id
                      ORDER BY service_id)) AS c(id, n)
    WHERE s.id = c.id
)
SELECT k.id, k.task_id, k.owner_id, k.attempt_token, k.to_email, k.message_id, k.attempts,
       k.created_at, k.had_failures, k.service_id,
       c.first_name, c.last_name, c.email, c.attributes, k.contact_id
FROM claimed k
LEFT JOIN contacts_contact c ON c.id = k.contact_id
"""


# What is left to send in each pool, for each of its services: the pending subtasks of its
# live tasks (their progress counters) over its enabled services. Read at most once per
# ``BACKLOG_EVERY`` seconds per process, in the tick's transaction.
_BACKLOG = """
SELECT p.id,
       (SELECT COALESCE(sum(d.pending), 0)::bigint FROM dispatch_taskqueue q
        JOIN dispatch_progressdelta d ON d.task_id = q.task_id
        WHERE q.pool_id = p.id),
       (SELECT count(*) FROM services_emailservice s WHERE s.pool_id = p.id AND s.is_enabled)
FROM unnest(%(pools)s::bigint[]) AS p(id)
"""
BACKLOG_EVERY = 1.0
# pool id -> (time.monotonic() of the reading, pending subtasks, enabled services)
_shares: dict[int, tuple[float, int, int]] = {}


def _fair_shares(
    cursor: psycopg.Cursor, pool_ids: Iterable[int], *, connections: int
) -> dict[int, int]:
    """The most messages one chunk of each pool gets: an equal share of what is left to
    send among the pool's services — or among the cluster's ``connections`` when there are
    fewer of them (8 connections over 200 services send at most 8 chunks at a time) — at
    least 1. Early in a task the share is far above any chunk; near its end it shrinks the
    chunks, so the last messages spread over every connection instead of leaving most of
    them idle while a few send their long chunks (the tail of a slow pool, where a chunk
    holds seconds of work)."""
    now = time.monotonic()
    pool_ids = set(pool_ids)
    stale = [
        p for p in pool_ids if now - _shares.get(p, (-BACKLOG_EVERY, 0, 0))[0] >= BACKLOG_EVERY
    ]
    if stale:
        cursor.execute(_BACKLOG, {"pools": _ints(sorted(stale))})
        for pool_id, pending, services in cursor.fetchall():
            _shares[pool_id] = (now, pending, services)
    shares = {}
    for pool_id in pool_ids:
        _, pending, services = _shares[pool_id]
        senders = max(1, min(services, connections))
        shares[pool_id] = max(1, -(-pending // senders))
    return shares


def _cluster_connections(conf: DispatchSettings) -> int:
    """How many SMTP connections the cluster's dispatcher loops may have open at once."""
    if conf.concurrency:
        return conf.concurrency * max(1, conf.dispatchers)
    return conf.max_connections


def _contact(row: tuple) -> dict[str, Any]:
    first_name, last_name, email, attributes, contact_id = row
    if isinstance(attributes, str):
        attributes = json.loads(attributes)
    return {
        "first_name": first_name or "",
        "last_name": last_name or "",
        "email": email or "",
        "attributes": attributes or {},
        "id": contact_id,
    }


def _ints(values: Iterable[int]) -> str:
    """An integer array as one literal (cast in SQL): cheaper to send than a list."""
    return "{" + ",".join(map(str, values)) + "}"


def _share(slots: int, owners: int) -> list[int]:
    """Split ``slots`` over ``owners`` as evenly as possible (earlier owners get the rest)."""
    base, extra = divmod(slots, owners)
    return [base + (1 if index < extra else 0) for index in range(owners)]


def tick(
    conf: DispatchSettings, *, free: int, known_sending: set[int] | None = None
) -> list[Chunk]:
    """Reserve up to ``free`` services and claim their slots' worth of subtasks fairly.

    Returns the chunks to send (one per service that got work), committed: the services
    are held and the subtasks ``allocated`` to this dispatcher under fresh tokens. Tasks
    served for the first time become ``sending`` (``known_sending`` caches the ones
    already seen, to skip that update).
    """
    if free <= 0:
        return []
    with transaction.atomic(), PreparingCursor() as cursor:
        cursor.execute("SET LOCAL jit = off", prepare=False)  # see the module docstring
        cursor.execute(
            _RESERVE,
            {"services": min(free, conf.batch_size), "lead": policy.LEAD_MARGIN},
            binary=True,
        )
        rows = cursor.fetchall()
        if not rows:
            return []
        clock = time.monotonic()  # the database's now() was read before this
        shares = _fair_shares(
            cursor, (row[1] for row in rows), connections=_cluster_connections(conf)
        )
        services = []
        for row in rows:
            service_id, pool_id, quota_left, *fields, avg_response_time, wait = row
            services.append(
                ReservedService(
                    service_id,
                    pool_id,
                    min(
                        shares[pool_id],
                        policy.chunk_size(
                            sending_rate=fields[1],
                            avg_response_time=avg_response_time,
                            quota_left=quota_left,
                            horizon=min(policy.CHUNK_SECONDS, conf.lease_seconds / 3),
                            longest=min(policy.LONGEST_CHUNK_SECONDS, conf.lease_seconds / 3),
                            spread=random.random(),
                        ),
                    ),
                    *fields,
                    avg_response_time=avg_response_time,
                    not_before=clock + max(0.0, wait),
                    deadline=clock + policy.commit_deadline(conf.lease_seconds),
                )
            )
        slots_by_pool: dict[int, dict[int, int]] = defaultdict(dict)
        for service in services:
            slots_by_pool[service.pool_id][service.id] = service.slots
        seats_by_pool: dict[int, list[int]] = {}
        budget = conf.batch_size
        for pool_id, slots in slots_by_pool.items():
            seats_by_pool[pool_id] = policy.seat_order(slots, limit=budget)
            budget -= len(seats_by_pool[pool_id])
        seats_by_pool = {pool: seats for pool, seats in seats_by_pool.items() if seats}
        if not seats_by_pool:
            return []
        pools = sorted(seats_by_pool)
        cursor.execute(
            _PICK,
            {"pools": _ints(pools), "limits": _ints(len(seats_by_pool[p]) for p in pools)},
            binary=True,
        )
        picked = cursor.fetchall()

        # Fair shares: each owner picked in a pool gets an equal part of its slots.
        owners_by_pool: dict[int, list[tuple[int, int]]] = defaultdict(list)
        dry_owners: list[tuple[int, int]] = []
        for lane_id, pool_id, owner_id, task_id in picked:
            if task_id is None:
                dry_owners.append((pool_id, owner_id))
            else:
                owners_by_pool[pool_id].append((lane_id, task_id))
        tasks, quotas, lanes, task_pools, bases, seats = [], [], [], [], [], []
        for pool_id, entries in owners_by_pool.items():
            base = len(seats)
            slots = seats_by_pool[pool_id]
            seats.extend(slots)
            for (lane_id, task_id), share in zip(
                entries, _share(len(slots), len(entries)), strict=True
            ):
                if share:
                    tasks.append(task_id)
                    quotas.append(share)
                    lanes.append(lane_id)
                    task_pools.append(pool_id)
                    bases.append(base)

        chunks: dict[int, Chunk] = {}
        got: dict[int, int] = defaultdict(int)
        if tasks:
            cursor.execute(
                _CLAIM,
                {
                    "tasks": _ints(tasks),
                    "quotas": _ints(quotas),
                    "lanes": _ints(lanes),
                    "pools": _ints(task_pools),
                    "bases": _ints(bases),
                    "seats": _ints(seats),
                    "lease": float(conf.lease_seconds),
                    "hold": float(conf.lease_seconds),
                },
                binary=True,
            )
            by_id = {service.id: service for service in services}
            for row in cursor.fetchall():
                service_id = row[9]
                chunk = chunks.get(service_id)
                if chunk is None:
                    chunk = chunks[service_id] = Chunk(service=by_id[service_id])
                got[row[1]] += 1
                # The first nine columns are Claimed's fields, in order.
                chunk.subtasks.append(Claimed(*row[:9], contact=_contact(row[10:15])))
            for chunk in chunks.values():
                chunk.subtasks.sort(key=lambda claimed: claimed.id)
                # Only what was claimed was charged; the rest of the slots were never taken.
                chunk.service.slots = len(chunk.subtasks)

        # Lanes that ran dry (fewer ready rows than their share) are recomputed; every
        # lane touched here was locked by this transaction's pick, so a writer adding
        # work to one of them is waiting for us and re-applies its rows after we commit.
        dry_tasks = [
            task_id for task_id, quota in zip(tasks, quotas, strict=True) if got[task_id] < quota
        ]
        if dry_tasks:
            queues.lanes_refresh(task_ids=dry_tasks)
        if dry_owners:
            queues.owners_refresh(lanes=dry_owners)
        _mark_tasks_sending(cursor, set(got), known_sending)
    return list(chunks.values())


def _mark_tasks_sending(cursor: psycopg.Cursor, task_ids: set[int], known: set[int] | None) -> None:
    """queued/scheduled → sending for tasks served now. A task row locked by an operator
    action (pause, cancel) is skipped rather than waited for: the tick never waits."""
    new = sorted(task_ids - known) if known is not None else sorted(task_ids)
    if not new:
        return
    # A task that starts now (no ``started_at`` yet) gets its ``task.started`` in the
    # same statement.
    cursor.execute(
        """
        WITH moved AS (
            UPDATE dispatch_task t SET status = 'sending',
                   started_at = COALESCE(t.started_at, now()), updated_at = now()
            FROM (SELECT d.id, d.started_at IS NULL AS first FROM dispatch_task d
                  WHERE d.id = ANY(%(ids)s::bigint[]) AND d.status IN ('queued', 'scheduled')
                  FOR NO KEY UPDATE SKIP LOCKED) d
            WHERE t.id = d.id
            RETURNING t.id, t.owner_id, d.first
        ), first AS (SELECT id, owner_id FROM moved WHERE first)"""
        + task_started_cte("first")
        + " SELECT count(*) FROM moved",
        {"ids": new},
    )
    if known is not None:
        known.update(new)


def next_ready_in() -> float | None:
    """Seconds until some pool has both a ready owner lane and a ready service (≤ 0: now;
    ``None``: nothing queued anywhere)."""
    with PreparingCursor() as cursor:
        cursor.execute(
            """
            SELECT EXTRACT(EPOCH FROM min(GREATEST(o.ready, s.ready)) - now())
            FROM (SELECT pool_id, min(ready_at) AS ready FROM dispatch_ownerqueue
                  WHERE ready_at IS NOT NULL GROUP BY pool_id) o
            JOIN (SELECT pool_id, min(next_available_at - make_interval(secs =>
                         CASE WHEN sending_rate > 0 THEN LEAST(sending_rate,
                              GREATEST(avg_response_time, 0) + %s) ELSE 0 END)) AS ready
                  FROM services_emailservice
                  WHERE is_enabled AND (daily_quota = 0 OR quota_day IS DISTINCT FROM current_date
                                        OR used_quota < daily_quota)
                  GROUP BY pool_id) s USING (pool_id)
            """,
            [policy.LEAD_MARGIN],
        )
        row = cursor.fetchone()
    return None if row is None or row[0] is None else float(row[0])
