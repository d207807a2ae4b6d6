"""How a child process reaches the database this process uses.

Tests, benchmarks and commands that start other processes (dispatchers, a q2 cluster, the
web server) hand them a ``DATABASE_URL``. It is derived here, in one place, from the
parent's live connection settings, so the child talks to the same server *and* the same
database — the test database (``test_<name>``) while tests run — whether the server listens
on TCP (``127.0.0.1:5432``) or only on a Unix socket (the embedded server of
``scripts/devdb.py``, whose host is a socket directory).
"""

from __future__ import annotations

import os
import weakref
from urllib.parse import quote

from django.db import connections


def database_url(alias: str = "default", *, settings_dict: dict | None = None) -> str:
    """A ``postgresql://`` URL for the database behind connection ``alias``.

    A host that is a socket directory (it starts with ``/``) is percent-encoded into the
    host part, which is where ``dj_database_url`` (and libpq) read it back; an empty port
    is left out, so libpq uses its default socket name in that directory.
    """
    db = settings_dict if settings_dict is not None else connections[alias].settings_dict
    user = quote(db.get("USER") or "postgres", safe="")
    password = db.get("PASSWORD") or ""
    auth = f"{user}:{quote(password, safe='')}" if password else user
    host = db.get("HOST") or ""
    host = quote(host, safe="") if host.startswith("/") else host
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgresql://{auth}@{host}{port}/{quote(db['NAME'], safe='')}"


def behind_transaction_pooler() -> bool:
    """Whether connections go through a pooler in transaction mode
    (``EDM_DATABASE_POOLER=transaction``, e.g. PgBouncer): then nothing may outlive a
    transaction — no session settings, no prepared statements, no LISTEN."""
    from django.conf import settings

    return settings.EDM_DATABASE_POOLER == "transaction"


def child_env(alias: str = "default", **overrides: str) -> dict[str, str]:
    """This process's environment with ``DATABASE_URL`` pointing at the same database."""
    return {**os.environ, "DATABASE_URL": database_url(alias), **overrides}


# The psycopg connections that prepared each named statement (see ``execute_prepared``).
_prepared: dict[str, weakref.WeakSet] = {}


def execute_prepared(cursor, name: str, sql: str, params: dict) -> None:
    """Execute ``sql`` (``%(name)s`` placeholders, each a key of ``params``, and no other
    ``%``) on Django's ``cursor`` as the statement ``name``, prepared on the server
    once per connection: Django binds parameters on the client, so PostgreSQL plans
    every statement it receives anew, which for a statement polled hundreds of times a
    second (the task detail's) costs more than running it. The ``PREPARE`` goes to the
    connection directly (like Django's own connection setup, not counted as a query);
    a new connection prepares again. Behind a transaction pooler, where a statement
    prepared on one server connection is unknown to the next, ``sql`` runs as it is."""
    if behind_transaction_pooler():
        cursor.execute(sql, params)
        return
    raw = cursor.connection
    done = _prepared.setdefault(name, weakref.WeakSet())
    if raw not in done:
        positions = {key: f"${number}" for number, key in enumerate(params, 1)}
        raw.execute(f"PREPARE {name} AS {sql % positions}")
        done.add(raw)
    cursor.execute(f"EXECUTE {name}({', '.join(['%s'] * len(params))})", list(params.values()))
