"""Each seeded rule fires, does not fire twice, escalates, and resolves — against real
tasks, real dispatchers and real SMTP servers on loopback."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.dispatch import services as dispatch_services
from apps.dispatch.models import DeadLetter, DispatcherSlot, SubTask, Task
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done, wait_until
from apps.events.models import Event
from apps.monitoring import services
from apps.monitoring.evaluation import rules_evaluate
from apps.monitoring.loop import MonitorLoop
from apps.monitoring.models import Alert, AlertRule, Notification, SystemSample
from apps.monitoring.rules import Snapshot
from apps.monitoring.seeds import rules_seed
from apps.services.models import EmailService
from apps.services.services import service_enable


def _at(seconds: float) -> Snapshot:
    return Snapshot(now=timezone.now() + timedelta(seconds=seconds))


def _open(metric: str) -> list[Alert]:
    return list(Alert.objects.filter(metric=metric).exclude(status="resolved"))


def _events(alert: Alert) -> list[str]:
    return list(alert.notifications.order_by("id").values_list("event", flat=True))


@pytest.fixture
def hooked(db, private_ok, http_receiver):
    """Every seeded rule notifies one webhook channel (a transactional test before this
    one emptied the tables the migration seeded: seed them again)."""
    rules_seed(AlertRule)
    channel, _ = services.channel_create(name="hook", kind="webhook", target=http_receiver.url)
    for rule in AlertRule.objects.all():
        rule.channels.add(channel)
    return channel


@pytest.mark.django_db(transaction=True)
def test_a_waiting_task_fires_escalates_twice_and_resolves_when_it_is_sent(
    hooked, user, make_contacts, make_service, smtp_sink
):
    make_contacts(user, 3)
    task = queue_task(user)

    assert rules_evaluate(snapshot=_at(200)).fired == []
    fired = rules_evaluate(snapshot=_at(310)).fired
    assert len(fired) == 1
    alert = Alert.objects.get(pk=fired[0])
    assert (alert.level, alert.subject, alert.owner_id) == ("warning", f"task:{task.pk}", user.pk)

    again = rules_evaluate(snapshot=_at(320))
    assert again.fired == [] and again.escalated == []
    assert len(_open("task_wait_seconds")) == 1

    assert rules_evaluate(snapshot=_at(610)).escalated == [alert.pk]
    alert.refresh_from_db()
    assert (alert.level, alert.rule_name) == ("critical", "Task waiting over 10 minutes")
    assert rules_evaluate(snapshot=_at(1810)).escalated == [alert.pk]
    alert.refresh_from_db()
    assert alert.level == "emergency"

    make_service(port=smtp_sink.port)
    with ThreadedDispatcher():
        wait_done(task)
    assert rules_evaluate().resolved == [alert.pk]
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolved_at is not None
    assert _events(alert) == ["fired", "escalated", "escalated", "resolved"]
    assert Alert.objects.count() == 1
    trail = Event.objects.filter(subject_type="monitoring.alert", subject_id=str(alert.pk))
    assert list(trail.order_by("id").values_list("type", "actor_id")) == [
        ("alert.fired", None),
        ("alert.escalated", None),
        ("alert.escalated", None),
        ("alert.resolved", None),
    ]


def test_a_dead_letter_fires_once_and_resolves_when_it_is_reprocessed(hooked, user, make_contacts):
    make_contacts(user, 2)
    task = queue_task(user)
    subtask = SubTask.objects.filter(task=task).first()
    SubTask.objects.filter(pk=subtask.pk).update(status="dead")
    entry = DeadLetter.objects.create(subtask=subtask, task=task, owner=user, error_type="smtp_451")

    fired = rules_evaluate().fired
    assert [Alert.objects.get(pk=pk).metric for pk in fired] == ["dead_letters_entered"]
    assert rules_evaluate().fired == []

    dispatch_services.dead_letter_reprocess(dead_letter_id=entry.pk)
    report = rules_evaluate()
    assert report.resolved == fired
    assert _events(Alert.objects.get(pk=fired[0])) == ["fired", "resolved"]


@pytest.mark.django_db(transaction=True)
def test_a_service_the_dispatcher_disables_fires_and_resolves_when_enabled(
    hooked, user, make_contacts, make_service, set_config
):
    set_config(recovery__service_failure_limit=1, recovery__service_cooldown=0)
    make_contacts(user, 2)
    service = make_service(port=1)  # nothing listens: connection refused, a service fault
    queue_task(user)
    with ThreadedDispatcher():
        wait_until(
            lambda: not EmailService.objects.get(pk=service.pk).is_enabled,
            message="the service to be disabled",
        )
    report = rules_evaluate()
    fired = report.fired
    alert = Alert.objects.get(pk=fired[0])
    assert (alert.metric, alert.subject, alert.level) == (
        "service_auto_disabled",
        f"service:{service.pk}",
        "critical",
    )
    assert rules_evaluate().fired == []
    service_enable(service_id=service.pk, reason="fixed")
    assert rules_evaluate().resolved == [alert.pk]


@pytest.mark.django_db(transaction=True)
def test_no_dispatcher_heartbeat_for_60_seconds_fires_and_a_new_heartbeat_resolves(hooked):
    loop = MonitorLoop(seconds=1)
    assert loop.acquire()
    with ThreadedDispatcher(use_slot=True) as dispatcher:
        wait_until(DispatcherSlot.objects.exists, message="a slot")
        loop._heartbeat()  # the monitor loop records the heartbeat it sees
    assert not DispatcherSlot.objects.exists()  # a graceful stop deletes the slot
    assert dispatcher.dispatcher is not None

    assert rules_evaluate(snapshot=_at(30)).fired == []
    report = rules_evaluate(snapshot=_at(61))
    fired = report.fired
    assert [Alert.objects.get(pk=pk).metric for pk in fired] == ["dispatcher_heartbeat_age"]
    assert rules_evaluate(snapshot=_at(90)).fired == []

    with ThreadedDispatcher(use_slot=True):
        wait_until(DispatcherSlot.objects.exists, message="a slot")
        assert rules_evaluate().resolved == fired


def _samples(backlogs: list[int], *, every: int = 60) -> None:
    now = timezone.now()
    for index, backlog in enumerate(reversed(backlogs)):
        SystemSample.objects.create(
            taken_at=now - timedelta(seconds=index * every), pending=backlog
        )


def test_a_backlog_growing_for_ten_minutes_fires_and_resolves_when_it_shrinks(hooked):
    _samples([100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])  # 9 minutes of growth
    assert rules_evaluate().fired == []
    SystemSample.objects.all().delete()
    _samples([100 * i for i in range(1, 13)])  # 11 minutes
    fired = rules_evaluate().fired
    assert [Alert.objects.get(pk=pk).metric for pk in fired] == ["backlog_growing_seconds"]
    assert rules_evaluate().fired == []
    SystemSample.objects.create(taken_at=timezone.now() + timedelta(seconds=60), pending=10)
    assert rules_evaluate().resolved == fired


@pytest.mark.django_db(transaction=True)
def test_a_task_failing_above_five_percent_fires_and_resolves_after_the_event_window(
    hooked, user, make_contacts, make_service, smtp_sink, set_config
):
    contacts = make_contacts(user, 40)
    for contact in contacts[:3]:  # 3 of 40 refused: 7.5 %
        smtp_sink.handler.reject[contact.email] = "550 5.1.1 no such user"
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    with ThreadedDispatcher():
        progress = wait_done(task)
    assert progress["failed"] == 3

    report = rules_evaluate()
    fired = report.fired
    alert = Alert.objects.get(pk=fired[0])
    assert (alert.metric, alert.subject) == ("task_failure_rate", f"task:{task.pk}")
    assert alert.value == pytest.approx(7.5)
    assert rules_evaluate().fired == []

    dispatch_services.tasks_complete_finished(task_ids=[task.pk])
    assert rules_evaluate().resolved == []  # finished, still within the event window
    set_config(alerts__event_window=60)
    Task.objects.filter(pk=task.pk).update(completed_at=timezone.now() - timedelta(seconds=120))
    assert rules_evaluate().resolved == [alert.pk]


def test_a_firing_alert_is_reminded_until_acknowledged(hooked, user, make_contacts, set_config):
    set_config(alerts__repeat_interval=60)
    make_contacts(user, 1)
    queue_task(user)
    alert = Alert.objects.get(pk=rules_evaluate(snapshot=_at(310)).fired[0])
    assert rules_evaluate(snapshot=_at(330)).reminded == []
    Alert.objects.filter(pk=alert.pk).update(
        last_notified_at=timezone.now() - timedelta(seconds=61)
    )
    assert rules_evaluate(snapshot=_at(340)).reminded == [alert.pk]
    services.alert_acknowledge(alert_id=alert.pk, actor=None)
    Alert.objects.filter(pk=alert.pk).update(
        last_notified_at=timezone.now() - timedelta(seconds=61)
    )
    assert rules_evaluate(snapshot=_at(350)).reminded == []
    assert _events(alert) == ["fired", "reminder"]


def test_a_condition_must_hold_for_its_for_seconds_before_firing(hooked, user, make_contacts):
    AlertRule.objects.exclude(metric="task_wait_seconds").update(enabled=False)
    AlertRule.objects.filter(metric="task_wait_seconds").update(for_seconds=30, threshold=0)
    make_contacts(user, 1)
    queue_task(user)
    now = timezone.now() + timedelta(seconds=5)
    assert rules_evaluate(snapshot=Snapshot(now=now)).fired == []
    assert rules_evaluate(snapshot=Snapshot(now=now + timedelta(seconds=20))).fired == []
    assert len(rules_evaluate(snapshot=Snapshot(now=now + timedelta(seconds=31))).fired) == 1


def test_a_broken_metric_does_not_resolve_its_alerts_nor_stop_the_others(hooked, monkeypatch):
    _samples([100 * i for i in range(1, 13)])
    fired = rules_evaluate().fired
    assert fired

    def broken(snap):
        raise RuntimeError("boom")

    from apps.monitoring import rules

    monkeypatch.setitem(
        rules.METRICS,
        "backlog_growing_seconds",
        rules.Metric("backlog_growing_seconds", "broken", broken),
    )
    report = rules_evaluate()
    assert "backlog_growing_seconds" in report.errors
    assert report.resolved == []
    assert Alert.objects.get(pk=fired[0]).status == "firing"
    assert Notification.objects.filter(event="fired").count() == 1


def test_a_round_reads_its_own_rows_in_one_statement_and_moves_a_value_in_one_more(
    hooked, user, make_contacts
):
    make_contacts(user, 1)
    queue_task(user)
    alert = Alert.objects.get(pk=rules_evaluate(snapshot=_at(310)).fired[0])
    with CaptureQueriesContext(connection) as queries:
        report = rules_evaluate(snapshot=_at(320))
    assert (report.fired, report.escalated, report.reminded, report.resolved) == ([], [], [], [])
    alert.refresh_from_db()
    assert alert.value == pytest.approx(320, abs=5)  # the wait moved on, and was written
    statements = [q["sql"] for q in queries.captured_queries]
    own = [s for s in statements if '"monitoring_alertrule"' in s]
    assert len(own) == 1 and '"monitoring_alertcondition"' in own[0]
    assert '"monitoring_monitorlease"' in own[0] and '"monitoring_systemsample"' in own[0]
    writes = [s for s in statements if not s.lstrip().upper().startswith("SELECT")]
    assert len(writes) == 1 and writes[0].startswith("UPDATE monitoring_alert")
