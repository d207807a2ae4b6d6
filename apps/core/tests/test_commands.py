"""Core management commands: schedules, demo seed, SMTP sink, and the database provisioner."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from io import StringIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django_q.models import Schedule

from apps.core.management.commands import setup_schedules


def test_setup_schedules_is_idempotent_and_removes_obsolete_ones(db, monkeypatch):
    specs = [{"name": "probe", "func": "math.floor", "schedule_type": "I", "minutes": 1}]
    monkeypatch.setattr(setup_schedules, "declared_schedules", lambda: [dict(s) for s in specs])
    Schedule.objects.create(name="edm:gone", func="math.ceil")
    Schedule.objects.create(name="someone-elses", func="math.ceil")

    call_command("setup_schedules", stdout=StringIO())
    call_command("setup_schedules", stdout=StringIO())

    names = sorted(Schedule.objects.values_list("name", flat=True))
    assert names == ["edm:probe", "someone-elses"]
    assert Schedule.objects.get(name="edm:probe").minutes == 1


def test_seed_demo_creates_an_operator_who_can_log_in_and_is_idempotent(client, db):
    out = StringIO()
    call_command("seed_demo", stdout=out)
    call_command("seed_demo", stdout=StringIO())
    User = get_user_model()
    assert User.objects.filter(username="operator", is_staff=True).count() == 1
    assert "password 'edm-demo'" in out.getvalue()
    assert client.login(username="operator", password="edm-demo")
    assert client.get("/admin/").status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_smtp_sink_command_stores_each_message_as_eml(tmp_path):
    port = _free_port()
    env = dict(os.environ, DEBUG="1")
    sink = subprocess.Popen(
        [
            sys.executable,
            str(settings.BASE_DIR / "manage.py"),
            "smtp_sink",
            "--port",
            str(port),
            "--dir",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port)
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.sendmail(
                "a@example.org",
                ["b@example.org"],
                b"Subject: hello sink\r\n\r\nbody\r\n",
            )
    finally:
        sink.send_signal(signal.SIGTERM)
        out, err = sink.communicate(timeout=60)
    files = list(tmp_path.glob("*.eml"))
    assert len(files) == 1
    assert b"Subject: hello sink" in files[0].read_bytes()
    assert sink.returncode == 0
    assert "stopped after 1 message" in out
    assert "subject 'hello sink'" in err
