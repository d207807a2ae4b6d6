"""A child process's database settings are derived from the parent's connection."""

from __future__ import annotations

import subprocess
import sys

import dj_database_url
import pytest
from django.db import connection

from apps.core.database import child_env, database_url

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
