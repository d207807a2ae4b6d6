"""With every configuration key at its maximum, dispatching, recovery and every
scheduled job still work (a value the registry accepts never breaks the system)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.module_loading import import_string

from apps.config import services as config_services
from apps.config.registry import KEYS
from apps.core.discovery import app_modules
from apps.dispatch.backoff import retry_delay
from apps.dispatch.conf import DispatchSettings
from apps.dispatch.models import DeadLetter, SubTask
from apps.dispatch.recovery import recover_stuck
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_until
from apps.services import services as service_services

pytestmark = pytest.mark.django_db(transaction=True)


def maximal(key) -> object:
    """The largest value ``key`` accepts: its maximum, the longest list of the largest
    items its schema allows, ``True`` for a switch."""
    if key.type in ("int", "float", "duration"):
        return key.max
    if key.type == "json":
        items = key.schema["items"]
        item = items.get("maximum") if items["type"] == "number" else "E" * items["maxLength"]
        return [item] * key.schema["maxItems"]
    if key.type == "bool":
        return True
    return key.default


def every_key_at_its_maximum() -> dict:
    values = {name: maximal(key) for name, key in KEYS.items()}
    values["backoff.strategy"] = "exponential"  # the one that grows fastest
    return values


def test_every_strategy_gives_a_finite_delay_within_the_maximum_at_the_last_retry(set_config):
    set_config(**{k.replace(".", "__"): v for k, v in every_key_at_its_maximum().items()})
    for strategy in KEYS["backoff.strategy"].choices:
        set_config(backoff__strategy=strategy)
        conf = DispatchSettings.load()
        delay = retry_delay(conf.max_retries + 1, conf)
        assert 0 <= delay <= conf.backoff_max_delay * (1 + conf.backoff_jitter)
        # The moment the retry is due is a valid timestamp.
        assert timezone.now() + timedelta(seconds=delay)


def test_the_system_works_with_every_key_at_its_maximum(
    user, make_contacts, make_service, smtp_sink
):
    config_services.config_set_many(values=every_key_at_its_maximum(), reason="maxima")

    # A service created without a quota or rate takes the (maximal) defaults.
    created = service_services.service_create(
        name="defaults",
        kind="smtp",
        host="127.0.0.1",
        port=smtp_sink.port,
        from_email="defaults@example.com",
    )
    assert created.daily_quota == KEYS["queue.default_daily_quota"].max
    assert created.sending_rate == KEYS["queue.default_sending_rate"].max

    contacts = make_contacts(user, 20)
    deferred, bounced = contacts[0].email, contacts[1].email
    smtp_sink.handler.reject = {deferred: "451 try later", bounced: "550 no such user"}
    make_service(port=smtp_sink.port)
    task = queue_task(user)

    with ThreadedDispatcher():
        wait_until(
            lambda: (
                SubTask.objects.filter(task=task, status="sent").count() == 18
                and SubTask.objects.filter(task=task, status="failed").count() == 1
                and SubTask.objects.filter(task=task, status="pending", attempts=1).count() == 1
            ),
            timeout=30,
            message="18 sent, 1 bounced, 1 waiting for its retry",
        )
    retry = SubTask.objects.get(task=task, to_email=deferred)
    # At the maxima a retry waits backoff.max_delay (30 days) spread by ± 100 % jitter:
    # anywhere in the future up to twice that, never in the past.
    now = timezone.now()
    assert now < retry.next_attempt_at <= now + timedelta(days=60)
    assert len(smtp_sink.handler.messages) == 18

    # Recovery and every scheduled job of every app run without an error.
    assert recover_stuck()["skipped"] is False
    ran = []
    for module in app_modules("tasks"):
        for schedule in getattr(module, "SCHEDULES", []):
            import_string(schedule["func"])()
            ran.append(schedule["func"])
    assert "apps.dispatch.tasks.dlq_maintenance" in ran
    assert DeadLetter.objects.count() == 0
