"""``scripts/devdb.py`` on the embedded server (pgserver): what a machine without
PostgreSQL gets from ``make run`` and ``make test``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow

DEVDB = str(settings.BASE_DIR / "scripts" / "devdb.py")

# Run by devdb as its command: reports what it was given and where the server lives.
PROBE = """
import json, os, sys, psycopg
url = os.environ["DATABASE_URL"]
with psycopg.connect(url, autocommit=True) as conn:
    data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    max_connections = conn.execute("SHOW max_connections").fetchone()[0]
    conn.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
    conn.execute("INSERT INTO kept VALUES (1)")
    rows = conn.execute("SELECT count(*) FROM kept").fetchone()[0]
with open(os.path.join(data_dir, "postmaster.pid")) as pidfile:
    pid = int(pidfile.readline())
print(json.dumps({"url": url, "data_dir": data_dir, "pid": pid, "rows": rows,
                  "max_connections": max_connections}), flush=True)
if len(sys.argv) > 1:
    import time
    time.sleep(float(sys.argv[1]))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, EDM_DEVDB_EMBEDDED="1")
    env.pop("DATABASE_URL", None)
    return env


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _devdb(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run(
        [sys.executable, DEVDB, *args, "--", sys.executable, "-c", PROBE],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def test_a_throwaway_embedded_server_is_reached_by_socket_and_really_stops():
    result, seen = _devdb()
    assert seen["url"].startswith("postgresql://postgres@%2F")
    assert seen["max_connections"] == "300"
    assert "PostgreSQL stopped" in result.stderr
    assert not _alive(seen["pid"]), "the embedded postmaster is still running"
    assert not Path(seen["data_dir"]).exists()


def test_a_kept_embedded_server_finds_its_data_again(tmp_path):
    data_dir = str(tmp_path / "pgdata")
    _, first = _devdb("--data-dir", data_dir)
    _, second = _devdb("--data-dir", data_dir)
    assert (first["rows"], second["rows"]) == (1, 2)
    assert not _alive(first["pid"]) and not _alive(second["pid"])


def test_sigterm_to_devdb_stops_its_command_and_the_embedded_server(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable,
            DEVDB,
            "--data-dir",
            str(tmp_path / "pgdata"),
            "--",
            sys.executable,
            "-c",
            PROBE,
            "60",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = json.loads(process.stdout.readline())
        assert _alive(seen["pid"])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 10
    while _alive(seen["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(seen["pid"]), "the embedded postmaster outlived devdb"


def _installed_server() -> bool:
    sys.path.insert(0, str(settings.BASE_DIR / "scripts"))
    try:
        import devdb
    finally:
        sys.path.pop(0)
    return devdb.find_bindir() is not None


@pytest.mark.skipif(not _installed_server(), reason="no PostgreSQL server installed here")
def test_the_installed_server_serves_tcp_and_stops():
    env = _env()
    env.pop("EDM_DEVDB_EMBEDDED")
    result = subprocess.run(
        [sys.executable, DEVDB, "--", sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["url"].startswith("postgresql://postgres@127.0.0.1:")
    assert seen["max_connections"] == "300"
    assert "PostgreSQL stopped" in result.stderr
    assert not _alive(seen["pid"]), "the postmaster is still running"


@pytest.mark.parametrize("embedded", ["0", "1"], ids=["installed", "embedded"])
def test_the_exit_code_passes_through_and_the_server_still_stops(embedded):
    result = subprocess.run(
        [sys.executable, DEVDB, "--", sys.executable, "-c", "raise SystemExit(3)"],
        env=dict(_env(), EDM_DEVDB_EMBEDDED=embedded),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    assert "PostgreSQL stopped" in result.stderr
