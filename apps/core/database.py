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
import functools
import hashlib
import os
import re
import weakref
from urllib.parse import quote

import psycopg
from django.db import connection, connections
from django.db.backends.utils import CursorDebugWrapper
from psycopg.adapt import PyFormat, Transformer
from psycopg.postgres import types as pg_types


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
    values = [_text(value) for value in params.values()]
    with connection.wrap_database_errors:
        positions = {key: f"${number}" for number, key in enumerate(params, 1)}
        _prepare_once(raw, name, sql % positions)
        with _logged(name, params):
            result = _run_prepared(raw, name, values)
    if not result.ntuples:
        return None
    loader = _loader(raw)
    loader.set_pgresult(result)
    return loader.load_row(0, tuple)


class PreparingCursor:
    """A cursor (``execute``, ``fetchone``, ``fetchall``, ``rowcount``) on this thread's
    Django connection — its session, its transaction — whose statements are prepared on
    the server the first time the connection runs them and then executed through libpq
    with their parameters apart, as :func:`fetch_prepared` does for one row of strings
    and integers: for the statements a process runs thousands of times with any
    parameters psycopg adapts (lists as arrays, floats, ``None``, dates). PostgreSQL then
    parses and plans each once per connection; for the dispatcher's claims and a chunk's
    start and end, planning them anew on every run took about a third of PostgreSQL's time.

    ``%s`` or ``%(name)s`` placeholders (``%%`` for a ``%``); each parameter is sent as
    text under the type psycopg gives it (integers and their arrays as ``bigint``, so that
    a statement prepared for one value takes any; ``None``, a string or an empty list left
    to what PostgreSQL infers from the statement: a cast, a column); a statement is
    prepared once per combination of types.
    Not psycopg's own preparation: it deallocates every statement of the connection on
    any rollback, a savepoint's included, and with them the ones prepared by hand
    (``outcomes.prepare_advance``). A statement runs unprepared, through psycopg's cursor,
    behind a transaction pooler (a statement prepared on one server connection is unknown
    to the next), with ``prepare=False``, and as the first statement of a transaction
    Django has opened (psycopg begins it with that statement). Errors come as Django's.
    Results are read with the connection's loaders, as Django's cursor reads them (a
    ``jsonb`` column as its text, which Django's fields decode); ``binary=True`` asks for
    them in binary (timestamps parsed in C)."""

    def __init__(self) -> None:
        connection.ensure_connection()
        self._raw = connection.connection
        self._cursor: psycopg.Cursor | None = None
        self._rows: list = []
        self.rowcount = -1

    def __enter__(self) -> PreparingCursor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()

    def execute(self, sql: str, params=None, *, prepare: bool = True, binary: bool = False):
        raw = self._raw
        opening = not raw.autocommit and raw.pgconn.transaction_status == _IDLE
        with connection.wrap_database_errors:
            if not prepare or opening or behind_transaction_pooler():
                if self._cursor is None:
                    self._cursor = psycopg.Cursor(raw)
                self._cursor.execute(sql, params, binary=binary)
                self._rows = self._cursor.fetchall() if self._cursor.pgresult.ntuples else []
                self.rowcount = self._cursor.rowcount
                return self
            name, values, sent = _prepared_on(raw, sql, params)
            with _logged(name, dict(enumerate(values))):
                result = _run_prepared(raw, name, sent, binary=binary)
        loader = _loader(raw)
        loader.set_pgresult(result)
        self._rows = loader.load_rows(0, result.ntuples, tuple) if result.ntuples else []
        self.rowcount = result.command_tuples if result.command_tuples is not None else -1
        return self

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list:
        rows, self._rows = self._rows, []
        return rows


_IDLE = psycopg.pq.TransactionStatus.IDLE
_OK = (psycopg.pq.ExecStatus.TUPLES_OK, psycopg.pq.ExecStatus.COMMAND_OK)
# psycopg types an integer by its value (``int2`` for 5); a statement prepared for one
# value must take any: integers and their arrays are declared ``bigint``.
_WIDER = {
    pg_types[narrow].oid if not array else pg_types[narrow].array_oid: (
        pg_types["int8"].oid if not array else pg_types["int8"].array_oid
    )
    for narrow in ("int2", "int4")
    for array in (False, True)
}
_PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?s|%%")


def _prepared_on(raw: psycopg.Connection, sql: str, params) -> tuple[str, list, list]:
    """The statement's name on ``raw`` (prepared there on its first run), its parameters
    in order, and the same in text form."""
    text, names = _numbered(sql)
    if isinstance(params, dict):
        values = [params[key] for key in names]
    else:
        values = list(params or ())
        if len(values) != len(names):
            raise TypeError(f"{len(names)} placeholders, {len(values)} parameters")
    loader = _loader(raw)
    dumped = loader.dump_sequence(values, [PyFormat.TEXT] * len(values))
    types = tuple(_WIDER.get(oid, oid) for oid in loader.types)
    name = _statement_name(text, types)
    _prepare_once(raw, name, text, types)
    return name, values, [None if value is None else bytes(value) for value in dumped]


@functools.lru_cache(maxsize=256)
def _statement_name(text: str, types: tuple[int, ...]) -> str:
    key = f"{text}\0{types}".encode()
    return "edm_" + hashlib.blake2b(key, digest_size=8).hexdigest()


def _prepare_once(
    raw: psycopg.Connection, name: str, text: str, types: tuple[int, ...] | None = None
) -> None:
    """Prepare ``text`` (``$n`` placeholders) as ``name`` on ``raw`` unless it was; ``types``
    the parameters' oids (``None``, or 0 for one: what PostgreSQL infers)."""
    done = _prepared.get(name)
    if done is None:
        done = _prepared[name] = weakref.WeakSet()
    if raw in done:
        return
    result = raw.pgconn.prepare(name.encode(), text.encode(), types)
    if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(result, encoding=raw.info.encoding)
    done.add(raw)


def _run_prepared(raw: psycopg.Connection, name: str, values: list, *, binary: bool = False):
    """Execute the prepared statement ``name`` with ``values`` (text form); its result, or
    the server's error raised as psycopg's."""
    result = raw.pgconn.exec_prepared(name.encode(), values, None, 1 if binary else 0)
    if result.status not in _OK:
        raise psycopg.errors.error_from_result(result, encoding=raw.info.encoding)
    return result


@functools.lru_cache(maxsize=256)
def _numbered(sql: str) -> tuple[str, tuple[str | None, ...]]:
    """``sql`` with ``$1``, ``$2``… for its placeholders, and the name of each (``None``
    for ``%s``)."""
    names: list[str | None] = []

    def number(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%"
        names.append(match.group(1))
        return f"${len(names)}"

    return _PLACEHOLDER.sub(number, sql), tuple(names)


def _loader(raw: psycopg.Connection) -> Transformer:
    loader = _loaders.get(raw)
    if loader is None:
        loader = _loaders[raw] = Transformer(raw)
    return loader


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
