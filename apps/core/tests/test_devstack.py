"""``manage.py devstack`` (what ``make run`` starts) brings everything up and down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from django.conf import settings

from apps.core.database import database_url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_devstack_serves_the_api_runs_the_sink_and_stops_on_ctrl_c(tmp_path):
    web, sink = _free_port(), _free_port()
    env = dict(
        os.environ,
        DEBUG="1",
        DATABASE_URL=database_url(),
        EDM_SINK_PORT=str(sink),
        EDM_SINK_DIR=str(tmp_path),
        EDM_Q_WORKERS="1",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            str(settings.BASE_DIR / "manage.py"),
            "devstack",
            "--addr",
            f"127.0.0.1:{web}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 150
        while _get(f"http://127.0.0.1:{web}/api/health") != 200:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "web server did not come up"
            time.sleep(0.3)
        assert _get(f"http://127.0.0.1:{web}/admin/login/") == 200
        # The sink is a process of its own: it may listen a moment after the web server.
        while True:
            try:
                smtp = socket.create_connection(("127.0.0.1", sink), timeout=5)
                break
            except ConnectionRefusedError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "the SMTP sink did not come up"
                time.sleep(0.3)
        with smtp:
            assert smtp.recv(100).startswith(b"220")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            # Never leave a web server or cluster behind, whatever the verdict.
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
    assert process.returncode == 0, output
    assert "Demo operator" in output
    assert "EDM stopped." in output
    assert _get(f"http://127.0.0.1:{web}/api/health") == 0
