"""The monitor loop: one per cluster, and a notification within 30 s of a condition."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from apps.dispatch.models import DeadLetter, SubTask
from apps.dispatch.tests.helpers import queue_task
from apps.monitoring import services
from apps.monitoring.loop import MonitorLoop, lease_live
from apps.monitoring.models import AlertRule, MonitorLease, SystemSample
from apps.monitoring.seeds import rules_seed
from apps.monitoring.tasks import monitor_watchdog
from apps.monitoring.tests.helpers import run_monitor


@pytest.mark.django_db(transaction=True)
def test_a_condition_is_notified_within_30_seconds(
    private_ok, http_receiver, set_config, user, make_contacts, pool
):
    rules_seed(AlertRule)
    set_config(alerts__evaluation_interval=2)
    channel, _ = services.channel_create(name="hook", kind="webhook", target=http_receiver.url)
    AlertRule.objects.get(seed="dead-letter-entered").channels.add(channel)
    make_contacts(user, 1)
    task = queue_task(user)
    loop = MonitorLoop(seconds=60)
    assert loop.acquire()
    thread = run_monitor(loop)
    try:
        time.sleep(0.5)
        subtask = SubTask.objects.get(task=task)
        SubTask.objects.filter(pk=subtask.pk).update(status="dead")
        DeadLetter.objects.create(subtask=subtask, task=task, owner=user, error_type="smtp_451")
        became_true = time.monotonic()
        assert http_receiver.event.wait(30), "no notification within 30 s"
        elapsed = time.monotonic() - became_true
    finally:
        loop.stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert elapsed <= 30
    payload = http_receiver.requests[0].json()
    assert payload["type"] == "alert.fired"
    assert payload["data"]["alert"]["metric"] == "dead_letters_entered"
    assert SystemSample.objects.exists()  # the loop sampled too
    lease = MonitorLease.objects.get()
    assert lease.last_round_at is not None and lease.expires_at <= timezone.now()


@pytest.mark.django_db(transaction=True)
def test_only_one_monitor_loop_holds_the_lease():
    first, second = MonitorLoop(seconds=1), MonitorLoop(seconds=1)
    assert first.acquire()
    assert not second.acquire()
    assert lease_live()
    assert monitor_watchdog() == "monitor loop live"
    first.run()  # releases the lease when it ends
    assert not lease_live()
    assert second.acquire()


@pytest.mark.django_db(transaction=True)
def test_the_watchdog_starts_a_missing_loop():
    assert monitor_watchdog() == "monitor loop started"
    assert OrmQ.objects.count() == 1
