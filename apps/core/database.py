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
