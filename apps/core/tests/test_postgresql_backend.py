"""The PostgreSQL backend's health check (``apps.core.postgresql``): no round trip while
a connection is quiet, and a connection the server dropped is still replaced before a
request uses it — in a real web process too."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

from apps.core.database import child_env
from apps.core.tests.test_settings import GOOD_KEY
from apps.dispatch.tests.helpers import wait_until


@pytest.fixture
def fresh(db):
    """Connections of their own (autocommit, health checks on, as a web process's)."""
    made = []

    def make():
        made.append(connection.copy())
        made[-1].ensure_connection()
        return made[-1]

    yield make
    for wrapper in made:
        wrapper.close()


def _last_statement(watcher, pid: int) -> str | None:
    with watcher.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row and row[0]


def _next_request_checks(web) -> None:
    """What Django does between two requests, then the next request's first cursor."""
    web.close_if_unusable_or_obsolete()
    assert not web.health_check_done
    web.cursor().close()
    assert web.health_check_done


def test_a_quiet_connections_health_check_sends_nothing(fresh):
    web, watcher = fresh(), fresh()
    assert web.health_check_enabled
    with web.cursor() as cursor:
        cursor.execute("SELECT 'the last statement'")

    _next_request_checks(web)

    assert _last_statement(watcher, web.connection.info.backend_pid) == (
        "SELECT 'the last statement'"
    )


def test_a_connection_with_something_to_read_is_asked_select_1(fresh):
    web, watcher = fresh(), fresh()
    with web.cursor() as cursor:
        cursor.execute("LISTEN edm_backend_test")
    with watcher.cursor() as cursor:
        cursor.execute("NOTIFY edm_backend_test")
    wait_until(lambda: not web._quiet(), timeout=5, message="the notification")

    _next_request_checks(web)

    assert _last_statement(watcher, web.connection.info.backend_pid) == "SELECT 1"


def test_a_terminated_connection_is_replaced_before_the_next_request_uses_it(fresh):
    web, watcher = fresh(), fresh()
    pid = web.connection.info.backend_pid
    with watcher.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0] is True
    wait_until(lambda: _last_statement(watcher, pid) is None, timeout=5, message="its end")

    _next_request_checks(web)

    with web.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


# --- a real web process ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gunicorn(transactional_db):
    """One sync gunicorn worker (as in production) on the test database."""
    port = _free_port()
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    env = child_env(
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(48),
        EDM_ENCRYPTION_KEY=GOOD_KEY,
        ALLOWED_HOSTS="127.0.0.1",
        LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "edm.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/api/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return process.poll() is not None  # died: fail below, not by timing out

    try:
        wait_until(answers, timeout=60, interval=0.2, message="gunicorn")
        assert process.poll() is None, "gunicorn exited"
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


def _web_backends() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return [pid for (pid,) in cursor.fetchall()]


@pytest.mark.slow
def test_a_web_process_survives_its_database_connection_being_terminated(gunicorn, make_user):
    token = Token.objects.create(user=make_user("web")).key

    def get(path: str) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{gunicorn}{path}", headers={"Authorization": f"Token {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def answers() -> list[int]:
        # A list, and a detail (its statement is prepared once per connection).
        return [get("/api/tasks/")[0], get("/api/tasks/999999/")[0]]

    assert answers() == [200, 404]
    backends = _web_backends()
    assert backends, "the worker keeps its connection between requests"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM unnest(%s) AS pid", [backends])
    wait_until(lambda: not set(backends) & set(_web_backends()), timeout=5, message="their end")

    assert answers() == [200, 404]  # on a new connection, not a 500
    assert set(_web_backends()) - set(backends)
