"""``manage.py validate_deployment``: a real test send through a pool, step by step."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.dispatch.models import Task
from apps.services.models import EmailService, Pool

pytestmark = pytest.mark.django_db(transaction=True)


def _service(pool: Pool, port: int, name: str = "sink") -> EmailService:
    return EmailService.objects.create(
        pool=pool,
        name=name,
        kind="smtp",
        host="127.0.0.1",
        port=port,
        from_email=f"{name}@example.com",
        sending_rate=0,
        daily_quota=0,
    )


def test_a_working_deployment_validates_and_the_address_gets_the_messages(smtp_sink):
    pool = Pool.objects.get_or_create(name=Pool.DEFAULT_NAME)[0]
    _service(pool, smtp_sink.port)
    out = StringIO()
    call_command(
        "validate_deployment",
        "--to",
        "ops@example.com",
        "--messages",
        "3",
        "--dispatch-here",
        "--timeout",
        "30",
        stdout=out,
    )
    text = out.getvalue()
    for step in ("database", "configuration", "pool", "dispatchers", "send", "metrics"):
        assert f"ok  {step}" in text, text
    assert "msg/s" in text and "deployment validated" in text
    received = sorted(m.rcpt_tos[0] for m in smtp_sink.handler.messages)
    assert received == ["ops+2@example.com", "ops+3@example.com", "ops@example.com"]
    assert Task.objects.get().status == Task.Status.COMPLETED


def test_a_pool_without_services_fails_the_pool_step(db):
    Pool.objects.create(name="empty")
    with pytest.raises(CommandError, match=r'step "pool" failed: pool .empty. has no enabled'):
        call_command("validate_deployment", "--to", "ops@example.com", "--pool", "empty")


def test_an_unknown_pool_fails_the_pool_step(db):
    with pytest.raises(CommandError, match='step "pool" failed: no pool'):
        call_command("validate_deployment", "--to", "ops@example.com", "--pool", "nope")


def test_no_running_dispatcher_fails_the_dispatchers_step(smtp_sink):
    pool = Pool.objects.get_or_create(name=Pool.DEFAULT_NAME)[0]
    _service(pool, smtp_sink.port)
    with pytest.raises(CommandError, match=r'step "dispatchers" failed: .*qcluster'):
        call_command("validate_deployment", "--to", "ops@example.com")


def test_a_refusing_server_fails_the_send_step_with_the_reason(smtp_sink):
    pool = Pool.objects.get_or_create(name=Pool.DEFAULT_NAME)[0]
    _service(pool, smtp_sink.port)
    smtp_sink.handler.reject = {"ops@example.com": "550 no such mailbox"}
    with pytest.raises(CommandError, match=r'step "send" failed: .*ops@example.com is failed'):
        call_command(
            "validate_deployment",
            "--to",
            "ops@example.com",
            "--dispatch-here",
            "--timeout",
            "20",
            stdout=StringIO(),
        )


def test_bad_arguments_are_command_errors(db):
    with pytest.raises(CommandError, match="--messages"):
        call_command("validate_deployment", "--to", "a@b.c", "--messages", "0")
    with pytest.raises(CommandError, match="not an e-mail"):
        call_command("validate_deployment", "--to", "nobody")
