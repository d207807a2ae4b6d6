"""Leased dispatcher slots: never more than ``queue.dispatchers`` loops at once.

A loop holds slot number ``n < queue.dispatchers`` while its lease (``expires_at``) is
renewed by heartbeats; a loop that dies stops renewing and its slot frees itself. Every
statement is a single autocommit update: no session lock survives a transaction, so a
pooler in transaction mode is fine.
"""

from __future__ import annotations

import os
import socket
import uuid

from django.db import connection

# A loop heartbeats every second; a slot not renewed for this long is free again.
SLOT_TTL_SECONDS = 30


def slot_acquire(*, limit: int, ttl: float = SLOT_TTL_SECONDS) -> tuple[int, str] | None:
    """Take the lowest free slot below ``limit``; return (number, holder) or ``None``."""
    holder = uuid.uuid4().hex
    for _ in range(3):  # two loops may race for the same number; the loser tries again
        with connection.cursor() as cursor:
            cursor.execute(
                """
                WITH free AS (
                    SELECT n FROM generate_series(0, %(limit)s - 1) AS n
                    WHERE NOT EXISTS (SELECT 1 FROM dispatch_dispatcherslot d
                                      WHERE d.number = n AND d.expires_at > now())
                    ORDER BY n LIMIT 1
                )
                INSERT INTO dispatch_dispatcherslot (number, holder, hostname, pid,
                                                     started_at, heartbeat_at, expires_at)
                SELECT n, %(holder)s, %(host)s, %(pid)s, now(), now(),
                       now() + make_interval(secs => %(ttl)s)
                FROM free
                ON CONFLICT (number) DO UPDATE SET holder = EXCLUDED.holder,
                    hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
                    started_at = now(), heartbeat_at = now(), expires_at = EXCLUDED.expires_at
                WHERE dispatch_dispatcherslot.expires_at <= now()
                RETURNING number
                """,
                {
                    "limit": limit,
                    "holder": holder,
                    "host": socket.gethostname()[:255],
                    "pid": os.getpid(),
                    "ttl": ttl,
                },
            )
            row = cursor.fetchone()
            if row is not None:
                return row[0], holder
            cursor.execute(
                "SELECT count(*) FROM dispatch_dispatcherslot "
                "WHERE number < %s AND expires_at > now()",
                [limit],
            )
            if cursor.fetchone()[0] >= limit:
                return None
    return None


def slot_heartbeat(number: int, holder: str, *, limit: int, ttl: float = SLOT_TTL_SECONDS) -> bool:
    """Renew the lease; ``False`` when the slot was lost or is no longer allowed
    (``queue.dispatchers`` lowered): the loop must stop."""
    if number >= limit:
        slot_release(number, holder)
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE dispatch_dispatcherslot SET heartbeat_at = now(), "
            "expires_at = now() + make_interval(secs => %s) "
            "WHERE number = %s AND holder = %s",
            [ttl, number, holder],
        )
        return cursor.rowcount == 1


def slot_release(number: int, holder: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM dispatch_dispatcherslot WHERE number = %s AND holder = %s",
            [number, holder],
        )


def slots_live() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM dispatch_dispatcherslot WHERE expires_at > now()")
        return cursor.fetchone()[0]
