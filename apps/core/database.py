"""How a child process reaches the database this process uses.

Tests, benchmarks and commands that start other processes (dispatchers, a q2 cluster, the
web server) hand them a ``DATABASE_URL``. It is derived here, in one place, from the
parent's live connection settings, so the child talks to the same server *and* the same
database — the test database (``test_<name>``) while tests run — whether the server listens
on TCP (``127.0.0.1:5432``) or only on a Unix socket (the embedded server of
``scripts/devdb.py``, whose host is a socket directory).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from urllib.parse import quote

import psycopg
from django.db import connection, connections
from django.db.backends.utils import CursorDebugWrapper
from psycopg.adapt import Transformer


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


# The psycopg connections that prepared each named statement (see ``fetch_prepared``),
# and the result loader of each connection.
_prepared: dict[str, weakref.WeakSet] = {}
_loaders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fetch_prepared(name: str, sql: str, params: dict) -> tuple | None:
    """The first row (``None`` for none) of ``sql`` (``%(name)s`` placeholders, each a
    key of ``params`` — strings and integers — and no other ``%``) run on this thread's
    Django connection as the statement ``name``: prepared on the server once per
    connection (a new connection prepares again), then executed through libpq
    (``PQexecPrepared``: the parameters sent apart, nothing parsed or planned again) and
    its row loaded by psycopg with the connection's own loaders, as Django's cursor
    would. Django binds parameters on the client, so PostgreSQL plans every statement
    it receives anew, which for a statement polled hundreds of times a second (the task
    detail's) costs more than running it; and the cursor's own path around a round trip
    (the client-side binding, the ``EXECUTE`` text PostgreSQL parses) cost about as much
    again as libpq's. Django's handling of the connection stays: its health check and
    set-up first, the broken-transaction check, its errors, and its query log when it
    keeps one (``DEBUG``, tests). Behind a transaction pooler, where a statement prepared
    on one server connection is unknown to the next, ``sql`` runs through Django's
    cursor as it is."""
    if behind_transaction_pooler():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    raw = connection.connection
    done = _prepared.setdefault(name, weakref.WeakSet())
    values = [_text(value) for value in params.values()]
    with connection.wrap_database_errors:
        if raw not in done:
            positions = {key: f"${number}" for number, key in enumerate(params, 1)}
            raw.execute(f"PREPARE {name} AS {sql % positions}")
            done.add(raw)
        with _logged(name, params):
            result = raw.pgconn.exec_prepared(name.encode(), values)
        if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
            raise psycopg.errors.error_from_result(result, encoding=raw.info.encoding)
    if not result.ntuples:
        return None
    loader = _loaders.get(raw)
    if loader is None:
        loader = _loaders[raw] = Transformer(raw)
    loader.set_pgresult(result)
    return loader.load_row(0, tuple)


def _logged(name: str, params: dict):
    """Django's query log of the statement, as ``EXECUTE name(…)``, when it keeps one."""
    if not connection.queries_logged:
        return contextlib.nullcontext()
    shown = ", ".join(["%s"] * len(params))
    executed = connection.ops.compose_sql(f"EXECUTE {name}({shown})", list(params.values()))
    return CursorDebugWrapper(None, connection).debug_sql(executed)


def _text(value: str | int) -> bytes:
    """A parameter of :func:`fetch_prepared` in PostgreSQL's text form."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"a prepared statement's parameter is a str or an int, not {value!r}")
    return str(value).encode()
