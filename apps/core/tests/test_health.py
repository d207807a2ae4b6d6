from __future__ import annotations

import socket

import pytest
from django.db import connection


def test_health_answers_ok_without_authentication(anon_api, db):
    response = anon_api.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_health_reports_a_database_outage_as_503(anon_api):
    original = dict(connection.settings_dict)
    connection.close()
    # A real connection attempt to a port where no PostgreSQL listens.
    connection.settings_dict["PORT"] = _closed_port()
    connection.settings_dict["HOST"] = "127.0.0.1"
    try:
        response = anon_api.get("/api/health")
    finally:
        connection.close()
        connection.settings_dict.update(original)
    assert response.status_code == 503
    assert response.json()["database"] == "unavailable"
    # and the database is back for everyone else
    assert anon_api.get("/api/health").status_code == 200


def test_health_asks_the_database_at_most_once_a_second_per_connection(anon_api, db):
    from django.test.utils import CaptureQueriesContext

    anon_api.get("/api/health")
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert anon_api.get("/api/health").status_code == 200
    assert not [q for q in queries.captured_queries if q["sql"] == "SELECT 1"]
