"""A child process's database settings are derived from the parent's connection; a
statement prepared once per connection reads what Django's cursor reads, and survives
what psycopg's own preparation would not (a rollback)."""

from __future__ import annotations

import subprocess
import sys

import dj_database_url
import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext

from apps.core.database import PreparingCursor, child_env, database_url, fetch_prepared

KEYS = ("USER", "PASSWORD", "HOST", "PORT", "NAME")


@pytest.mark.parametrize(
    "settings_dict",
    [
        {"USER": "postgres", "PASSWORD": "", "HOST": "127.0.0.1", "PORT": 5432, "NAME": "edm"},
        {
            "USER": "u@x",
            "PASSWORD": "p@ss:/#?",
            "HOST": "db.example",
            "PORT": "6432",
            "NAME": "test_edm",
        },
        {
            "USER": "postgres",
            "PASSWORD": "",
            "HOST": "/tmp/edm-pg-abc",
            "PORT": "",
            "NAME": "test_edm",
        },
        {
            "USER": "postgres",
            "PASSWORD": "",
            "HOST": "/var/tmp/a b/pgdata",
            "PORT": 5433,
            "NAME": "test_edm",
        },
    ],
    ids=["tcp", "tcp-quoted-credentials", "socket-default-port", "socket-with-port"],
)
def test_the_url_parses_back_to_the_same_settings(settings_dict):
    parsed = dj_database_url.parse(database_url(settings_dict=settings_dict))
    expected = dict(settings_dict, PORT=int(settings_dict["PORT"]) if settings_dict["PORT"] else "")
    assert {key: parsed[key] for key in KEYS} == {key: expected[key] for key in KEYS}


def test_a_missing_user_means_postgres():
    url = database_url(settings_dict={"USER": "", "HOST": "h", "PORT": 1, "NAME": "n"})
    assert url == "postgresql://postgres@h:1/n"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_child_process_reaches_this_very_test_database():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE child_probe (marker text)")
        cursor.execute("INSERT INTO child_probe VALUES ('from the parent')")
    try:
        probe = (
            "import os, psycopg; "
            "print(psycopg.connect(os.environ['DATABASE_URL'])"
            ".execute('SELECT current_database(), marker FROM child_probe').fetchone())"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE child_probe")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str((connection.settings_dict["NAME"], "from the parent"))


# --- fetch_prepared ---------------------------------------------------------------------

_STATEMENT = (
    "SELECT %(n)s::int * 2, %(word)s || '!', now() - interval '1 day', ARRAY[%(n)s::bigint, 7],"
    " 1 / %(divisor)s::int WHERE %(n)s::int > 0"
)


def _through_django(params: dict) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(_STATEMENT, params)
        return cursor.fetchone()


@pytest.mark.django_db
def test_a_prepared_row_is_the_row_djangos_cursor_reads():
    params = {"n": 21, "word": "héllo", "divisor": 1}
    row = fetch_prepared("edm_test_statement", _STATEMENT, params)
    assert row[:2] == (42, "héllo!") and row[3] == [21, 7]
    assert row[2].tzinfo is not None  # the connection's own loaders: an aware datetime
    assert row[:2] + row[3:] == _through_django(params)[:2] + _through_django(params)[3:]
    assert fetch_prepared("edm_test_statement", _STATEMENT, {**params, "n": -1}) is None


@pytest.mark.django_db
def test_a_statement_is_prepared_once_per_connection_and_logged_as_executed():
    params = {"n": 1, "word": "a", "divisor": 1}
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            fetch_prepared("edm_test_once", _STATEMENT, params)
    assert [q["sql"] for q in queries.captured_queries] == ["EXECUTE edm_test_once(1, 'a', 1)"] * 3
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'edm_test_once'")
        assert cursor.fetchone() == (1,)


@pytest.mark.django_db(transaction=True)
def test_a_new_connection_prepares_again():
    params = {"n": 2, "word": "b", "divisor": 1}
    assert fetch_prepared("edm_test_again", _STATEMENT, params)[0] == 4
    connection.close()
    assert fetch_prepared("edm_test_again", _STATEMENT, params)[0] == 4


@pytest.mark.django_db
def test_a_failing_statement_raises_djangos_error_and_leaves_the_connection_usable():
    with pytest.raises(DataError, match="division by zero"), transaction.atomic():
        fetch_prepared("edm_test_fails", _STATEMENT, {"n": 1, "word": "c", "divisor": 0})
    assert fetch_prepared("edm_test_fails", _STATEMENT, {"n": 3, "word": "c", "divisor": 1})[0] == 6


@pytest.mark.django_db
def test_a_parameter_is_a_string_or_an_integer():
    with pytest.raises(TypeError, match="str or an int"):
        fetch_prepared("edm_test_types", _STATEMENT, {"n": 1.5, "word": "d", "divisor": 1})


@pytest.mark.django_db
def test_behind_a_transaction_pooler_the_statement_runs_as_it_is(settings):
    settings.EDM_DATABASE_POOLER = "transaction"
    params = {"n": 5, "word": "e", "divisor": 1}
    with CaptureQueriesContext(connection) as queries:
        assert fetch_prepared("edm_test_pooled", _STATEMENT, params)[:2] == (10, "e!")
    assert queries.captured_queries[0]["sql"].startswith("SELECT 5::int * 2")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE name = 'edm_test_pooled'")
        assert cursor.fetchone() == (0,)


# --- PreparingCursor --------------------------------------------------------------------

_TYPED = (
    "SELECT s.id * %(factor)s, s.id = ANY(%(ids)s::bigint[]), %(ratio)s::float8,"
    " %(flag)s::bool, %(payload)s::jsonb"
    " FROM unnest(%(ids)s::bigint[]) AS s(id) WHERE %(ratio)s::float8 IS NULL OR s.id > 1"
    " ORDER BY s.id"
)


def _prepared_count(text: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'edm\\_%%'"
            " AND statement LIKE %s",
            [f"%{text}%"],
        )
        return cursor.fetchone()[0]


def _open_transaction() -> None:
    """The test's transaction, begun (see the test of the first statement below)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


@pytest.mark.django_db
def test_a_prepared_statement_takes_arrays_floats_none_and_any_integer():
    _open_transaction()
    typed = _TYPED.replace("SELECT", "SELECT /* types */", 1)
    with PreparingCursor() as cursor:
        cursor.execute(
            typed, {"factor": 2, "ids": [1, 3], "ratio": None, "flag": True, "payload": "{}"}
        )
        assert cursor.fetchall() == [(2, True, None, True, "{}"), (6, True, None, True, "{}")]
        # An integer psycopg types otherwise (int8 for 2**40, int2 for 2) needs no
        # statement of its own (integers are declared bigint); a float where NULL was does.
        cursor.execute(
            typed,
            {"factor": 3, "ids": [2**40], "ratio": 0.5, "flag": False, "payload": '{"a": 1}'},
        )
        assert cursor.fetchone() == (3 * 2**40, True, 0.5, False, '{"a": 1}')
        assert cursor.fetchone() is None
    # Two combinations of types (a NULL ratio, a float one): two statements, no more.
    assert _prepared_count("/* types */") == 2


@pytest.mark.django_db
def test_a_prepared_statement_outlives_a_rollback_and_so_does_one_prepared_by_hand():
    """psycopg's own preparation deallocates every statement of a connection on any
    rollback, including the per-message one prepared through libpq; this one does not."""
    from apps.dispatch.engine import outcomes

    _open_transaction()
    outcomes.advance_connection()
    typed = _TYPED.replace("SELECT", "SELECT /* after a rollback */", 1)
    params = {"factor": 1, "ids": [5], "ratio": 1.0, "flag": True, "payload": "[]"}
    with PreparingCursor() as cursor:
        cursor.execute(typed, params)
    with pytest.raises(DataError), transaction.atomic():  # a savepoint, rolled back
        with PreparingCursor() as cursor:
            cursor.execute("SELECT 1 / %(zero)s::int", {"zero": 0})
    with PreparingCursor() as cursor:
        assert cursor.execute(typed, params).fetchall() == [(5, True, 1.0, True, "[]")]
    assert _prepared_count("after a rollback") == 1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = %s",
            [outcomes.ADVANCE_NAME.decode()],
        )
        assert cursor.fetchone() == (1,)


@pytest.mark.django_db(transaction=True)
def test_the_first_statement_of_a_transaction_runs_in_it():
    """Django opens a transaction lazily (psycopg sends BEGIN with the first statement):
    a prepared statement there would run outside it, so that one goes through psycopg."""
    from apps.events.models import Event

    insert = "INSERT INTO events_event (type) VALUES (%s)"
    with pytest.raises(RuntimeError), transaction.atomic():
        with PreparingCursor() as cursor:
            cursor.execute(insert, ["test.first"])
            cursor.execute(insert, ["test.second"])  # prepared, in the same transaction
        assert Event.objects.filter(type__startswith="test.").count() == 2
        raise RuntimeError("roll back")
    assert not Event.objects.filter(type__startswith="test.").exists()


@pytest.mark.django_db
def test_behind_a_transaction_pooler_nothing_is_prepared(settings):
    settings.EDM_DATABASE_POOLER = "transaction"
    before = _prepared_count("")
    with PreparingCursor() as cursor:
        cursor.execute(
            _TYPED, {"factor": 3, "ids": [2], "ratio": 2.5, "flag": True, "payload": "1"}
        )
        assert cursor.fetchall() == [(6, True, 2.5, True, "1")]
    assert _prepared_count("") == before
