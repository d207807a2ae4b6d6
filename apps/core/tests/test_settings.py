"""Start-up configuration: a bad variable stops start-up with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

MANAGE = str(settings.BASE_DIR / "manage.py")
GOOD_KEY = "kNn2bN6g3vY4c2gI7Yc6mQ1lYp0lG6xX8o0f3r2uZ9w="


def run_manage(env_overrides: dict[str, str | None], *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({"DEBUG": "1", "DATABASE_URL": "postgresql://u@127.0.0.1:1/edm"})
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, MANAGE, *(args or ("help",))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, variable: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edm: configuration error:")
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "is not set"),
        ("mysql://root@localhost/edm", "must be a postgresql:// URL"),
        ("postgresql://user@localhost:5432", "names no database"),
    ],
)
def test_bad_database_url_stops_start_up_with_one_line(value, reason):
    result = run_manage({"DATABASE_URL": value})
    assert_one_line_error(result, "DATABASE_URL")
    assert reason in result.stderr


def test_production_without_secret_key_stops_with_one_line():
    result = run_manage({"DEBUG": "0", "SECRET_KEY": None, "EDM_ENCRYPTION_KEY": GOOD_KEY})
    assert_one_line_error(result, "SECRET_KEY")


def test_production_refuses_the_development_secret_key():
    result = run_manage(
        {
            "DEBUG": "0",
            "SECRET_KEY": "dev-insecure-edm-secret-key-do-not-use-in-production",
            "EDM_ENCRYPTION_KEY": GOOD_KEY,
            "ALLOWED_HOSTS": "edm.example.org",
        }
    )
    assert_one_line_error(result, "SECRET_KEY")


def test_production_refuses_the_development_encryption_key():
    result = run_manage(
        {
            "DEBUG": "0",
            "SECRET_KEY": "x" * 50,
            "EDM_ENCRYPTION_KEY": "ZGV2LWluc2VjdXJlLWVkbS1mZXJuZXQta2V5LTAwMDA=",
            "ALLOWED_HOSTS": "edm.example.org",
        }
    )
    assert_one_line_error(result, "EDM_ENCRYPTION_KEY")


def test_malformed_encryption_key_names_the_variable():
    result = run_manage({"EDM_ENCRYPTION_KEY": "not-a-key"})
    assert_one_line_error(result, "EDM_ENCRYPTION_KEY")
    assert "Fernet" in result.stderr


def test_malformed_boolean_names_the_variable():
    result = run_manage({"DEBUG": "maybe"})
    assert_one_line_error(result, "DEBUG")


def test_production_with_every_variable_set_starts():
    result = run_manage(
        {
            "DEBUG": "0",
            "SECRET_KEY": "x" * 50,
            "EDM_ENCRYPTION_KEY": GOOD_KEY,
            "ALLOWED_HOSTS": "edm.example.org",
        }
    )
    assert result.returncode == 0, result.stderr
    assert "Available subcommands" in result.stdout


def test_wsgi_entry_point_prints_the_same_one_line_error():
    env = dict(os.environ, DEBUG="1")
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", "import edm.wsgi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=settings.BASE_DIR,
    )
    assert_one_line_error(result, "DATABASE_URL")
