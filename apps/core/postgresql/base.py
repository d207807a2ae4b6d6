"""Django's PostgreSQL backend, with a health check that costs no round trip while the
connection is quiet.

``CONN_HEALTH_CHECKS`` makes Django run ``SELECT 1`` before the first query of each
request on a persistent connection, so that a connection the server dropped meanwhile
(a restart, ``pg_terminate_backend``, a pooler closing it) is replaced instead of failing
the request. For a small request that statement is one of its few round trips. Whenever
the server drops a connection, it sends its last words (a ``FATAL`` error) or at least
closes the socket, and an idle connection has nothing else to read: so when the socket
has nothing to read and no transaction is open, the connection is as good as the
``SELECT 1`` would find it, and that statement is skipped. Anything to read (the
server's farewell, a notification, a notice) falls back to Django's own check. A
connection lost without a word (a cut cable) is not found by either check until TCP
gives up on it; a connection dropped between the check and the query fails that query
either way.
"""

from __future__ import annotations

import select

from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus


class DatabaseWrapper(base.DatabaseWrapper):
    def close_if_health_check_failed(self) -> None:
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.pool
            and self._quiet()
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def _quiet(self) -> bool:
        """Whether the connection is open, idle, and the server sent nothing since."""
        raw = self.connection
        if raw.closed or raw.info.transaction_status != TransactionStatus.IDLE:
            return False
        poller = select.poll()
        poller.register(raw.fileno(), select.POLLIN)
        return not poller.poll(0)
