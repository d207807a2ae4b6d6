"""Lease rows of the loops that run in the q2 cluster (the monitor loop, relay loops).

A loop holds a row (``name``, ``holder``, ``hostname``, ``pid``, ``started_at``,
``heartbeat_at``, ``expires_at``) of its own lease model while it runs, renewed by
single autocommit updates (no session lock, so a pooler in transaction mode works); a
loop that dies stops renewing and the next one takes the row after its ``ttl``.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from django.db import connection
from django.utils import timezone


def lease_take(model, name: str, holder: str, *, ttl: float, defaults: dict | None = None) -> bool:
    """Take the lease ``name`` if it is free, expired or already ``holder``'s. A missing
    row is created with ``defaults`` (columns the model's table needs on insert)."""
    table = model._meta.db_table
    extra = defaults or {}
    columns = "".join(f", {column}" for column in extra)
    values = "".join(f", %(extra_{column})s" for column in extra)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (name, holder, hostname, pid, started_at, heartbeat_at,
                                 expires_at{columns})
            VALUES (%(name)s, %(holder)s, %(host)s, %(pid)s, now(), now(),
                    now() + make_interval(secs => %(ttl)s){values})
            ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,
                hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, started_at = now(),
                heartbeat_at = now(), expires_at = EXCLUDED.expires_at
            WHERE {table}.expires_at IS NULL OR {table}.expires_at <= now()
               OR {table}.holder = EXCLUDED.holder
            RETURNING name
            """,
            {
                "name": name,
                "holder": holder,
                "host": socket.gethostname()[:255],
                "pid": os.getpid(),
                "ttl": ttl,
                **{f"extra_{column}": value for column, value in extra.items()},
            },
        )
        return cursor.fetchone() is not None


def lease_renew(model, name: str, holder: str, *, ttl: float, **fields) -> bool:
    """Renew ``holder``'s lease (and store ``fields``); False when it is no longer its."""
    now = timezone.now()
    updated = model.objects.filter(name=name, holder=holder).update(
        heartbeat_at=now, expires_at=now + timedelta(seconds=ttl), **fields
    )
    return updated == 1


def lease_release(model, name: str, holder: str) -> None:
    """Let the lease go at once (the next loop need not wait for its ``ttl``)."""
    model.objects.filter(name=name, holder=holder).update(expires_at=timezone.now())
