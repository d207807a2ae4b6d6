"""The health probe's short answer (a plain GET within a second of the database's last
answer): the same bytes and headers as DRF's, and only where DRF would send them."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.core import api

HEADERS = ("Content-Type", "Vary", "Allow")


def _probe_twice(client, **extra):
    """The first probe asks the database (DRF answers); the second one does not."""
    api._health_ok.seen = None  # an earlier test's probe on this connection is forgotten
    first = client.get("/api/health", **extra)
    with CaptureQueriesContext(connection) as queries:
        second = client.get("/api/health", **extra)
    return first, second, queries.captured_queries


def test_the_short_answer_is_drfs_answer_byte_for_byte(anon_api, db):
    first, second, queries = _probe_twice(anon_api)
    assert queries == []
    assert not hasattr(second, "data")  # answered before DRF
    assert hasattr(first, "data")
    assert (second.status_code, second.content) == (first.status_code, first.content)
    assert {h: second[h] for h in HEADERS} == {h: first[h] for h in HEADERS}
    assert second.json() == {"status": "ok", "database": "ok"}


def test_json_accept_headers_get_the_short_answer(anon_api, db):
    for accept in ("*/*", "application/json"):
        _, second, queries = _probe_twice(anon_api, HTTP_ACCEPT=accept)
        assert queries == [] and not hasattr(second, "data")
        assert second["Content-Type"] == "application/json"


def test_a_browser_still_gets_drfs_page(anon_api, db):
    _, second, _ = _probe_twice(anon_api, HTTP_ACCEPT="text/html")
    assert hasattr(second, "data")
    assert second["Content-Type"].startswith("text/html")


def test_a_query_string_is_left_to_drf(anon_api, db):
    _, second, _ = _probe_twice(anon_api, QUERY_STRING="format=json")
    assert hasattr(second, "data")
    assert second.json() == {"status": "ok", "database": "ok"}


def test_an_unacceptable_media_type_still_answers_406_in_the_error_shape(anon_api, db):
    _, second, _ = _probe_twice(anon_api, HTTP_ACCEPT="application/xml")
    assert second.status_code == 406
    assert set(second.json()) == {"detail", "code", "errors"}


def test_other_methods_are_drfs(anon_api, db):
    anon_api.get("/api/health")
    response = anon_api.post("/api/health")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
