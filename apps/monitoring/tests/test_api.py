"""The monitoring API end to end: shapes, scoping, validation, health."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from apps.dispatch.models import DispatcherSlot
from apps.dispatch.tests.helpers import queue_task, spawn_dispatcher, wait_until
from apps.events.models import Event
from apps.monitoring.evaluation import rules_evaluate
from apps.monitoring.loop import MonitorLoop
from apps.monitoring.models import Alert, AlertRule, NotificationChannel, SystemSample
from apps.monitoring.rules import Snapshot
from apps.monitoring.sampling import samples_take
from apps.monitoring.seeds import rules_seed

pytestmark = pytest.mark.django_db


def _waiting_alerts(*owners) -> None:
    """One task per owner, waiting long enough to fire the warning rule."""
    rules_seed(AlertRule)
    later = Snapshot(now=timezone.now() + timedelta(seconds=400))
    rules_evaluate(snapshot=later)


@pytest.fixture
def two_tenants(user, other_user, make_contacts):
    make_contacts(user, 2)
    make_contacts(other_user, 3)
    return queue_task(user), queue_task(other_user)


def test_every_monitoring_endpoint_needs_authentication(anon_api):
    for url in [
        "/api/monitoring/system-health",
        "/api/monitoring/performance-metrics",
        "/api/monitoring/queue-status",
        "/api/monitoring/alerts",
        "/api/monitoring/alert-rules/",
        "/api/monitoring/channels/",
    ]:
        assert anon_api.get(url).status_code == 401, url


def test_queue_status_shows_an_operator_everything_and_a_tenant_its_own(
    staff_api, api, two_tenants, user
):
    everything = staff_api.get("/api/monitoring/queue-status").json()
    assert everything["by_status"]["pending"] == 5
    assert everything["by_status"]["total"] == 5
    assert {o["owner"] for o in everything["by_owner"]} == {"alice", "bob"}
    assert "by_service" in everything and "dispatchers" in everything
    assert everything["oldest_pending"]["age_seconds"] >= 0

    own = api.get("/api/monitoring/queue-status").json()
    assert own["by_status"]["pending"] == 2
    assert [o["owner"] for o in own["by_owner"]] == ["alice"]
    assert [t["id"] for t in own["tasks"]] == [two_tenants[0].pk]
    assert "by_service" not in own and "reservations" not in own


def test_alerts_list_acknowledge_and_resolve_with_tenant_scoping(
    staff_api, api, other_api, two_tenants
):
    _waiting_alerts()
    page = staff_api.get("/api/monitoring/alerts").json()
    assert len(page["results"]) == 2
    first = page["results"][0]
    assert set(first) >= {"id", "rule", "level", "status", "fired_at", "resolved_at"}
    assert first["status"] == "firing"

    mine = api.get("/api/monitoring/alerts").json()["results"]
    assert len(mine) == 1
    alert_id = mine[0]["id"]
    theirs = other_api.get("/api/monitoring/alerts").json()["results"]
    assert alert_id not in [a["id"] for a in theirs]
    assert other_api.post(f"/api/monitoring/alerts/{alert_id}/acknowledge").status_code == 404

    acked = api.post(f"/api/monitoring/alerts/{alert_id}/acknowledge")
    assert acked.status_code == 200
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == "alice"
    assert api.get("/api/monitoring/alerts?status=firing").json()["results"] == []

    resolved = api.post(f"/api/monitoring/alerts/{alert_id}/resolve")
    assert resolved.json()["status"] == "resolved"
    again = api.post(f"/api/monitoring/alerts/{alert_id}/resolve")
    assert again.status_code == 400
    assert again.json()["errors"] == {"status": ["the alert is resolved already"]}
    assert api.get("/api/monitoring/alerts?status=nope").status_code == 400


def test_rules_are_managed_by_operators_only(staff_api, staff_user, api, private_ok):
    assert api.get("/api/monitoring/alert-rules/").status_code == 403
    channel = NotificationChannel.objects.create(name="c", kind="slack", target="http://x")
    created = staff_api.post(
        "/api/monitoring/alert-rules/",
        {
            "name": "Few services",
            "metric": "services_ready",
            "comparison": "lt",
            "threshold": 2,
            "for_seconds": 120,
            "level": "critical",
            "channels": [channel.pk],
            "enabled": True,
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["metric"], body["channels"], body["seeded"]) == (
        "services_ready",
        [channel.pk],
        False,
    )

    bad = staff_api.post(
        "/api/monitoring/alert-rules/",
        {"name": "x", "metric": "nope", "threshold": 1},
        format="json",
    )
    assert bad.status_code == 400
    assert "metric" in bad.json()["errors"]
    negative = staff_api.patch(
        f"/api/monitoring/alert-rules/{body['id']}/", {"for_seconds": -1}, format="json"
    )
    assert negative.status_code == 400
    changed = staff_api.patch(
        f"/api/monitoring/alert-rules/{body['id']}/", {"threshold": 5}, format="json"
    )
    assert changed.json()["threshold"] == 5
    assert staff_api.delete(f"/api/monitoring/alert-rules/{body['id']}/").status_code == 204
    assert not AlertRule.objects.filter(name="Few services").exists()
    events = Event.objects.filter(type="alert_rule.changed", subject_id=str(body["id"]))
    # The refused changes (a bad metric, a negative for_seconds) left no event.
    assert [e.payload["action"] for e in events.order_by("id")] == [
        "created",
        "updated",
        "deleted",
    ]
    assert {e.actor_id for e in events} == {staff_user.pk}


def test_a_webhook_channel_shows_its_secret_once(staff_api, api, private_ok, http_receiver):
    assert api.post("/api/monitoring/channels/", {}, format="json").status_code == 403
    created = staff_api.post(
        "/api/monitoring/channels/",
        {"name": "ops", "kind": "webhook", "target": http_receiver.url},
        format="json",
    )
    assert created.status_code == 201, created.json()
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    listed = staff_api.get("/api/monitoring/channels/").json()["results"]
    assert "secret" not in listed[0]
    assert secret not in str(staff_api.get(f"/api/monitoring/channels/{listed[0]['id']}/").json())

    tested = staff_api.post(f"/api/monitoring/channels/{listed[0]['id']}/test")
    assert tested.json()["status"] == "sent"
    assert http_receiver.requests[0].json()["type"] == "alert.test"

    bad = staff_api.post(
        "/api/monitoring/channels/",
        {"name": "bad", "kind": "email", "target": "not-an-address"},
        format="json",
    )
    assert bad.status_code == 400
    assert bad.json()["errors"] == {"target": ["'not-an-address' is not an e-mail address"]}


def test_an_operators_group_member_is_an_operator(api, user):
    assert api.get("/api/monitoring/channels/").status_code == 403
    user.groups.add(Group.objects.get_or_create(name="operators")[0])
    assert api.get("/api/monitoring/channels/").status_code == 200


def test_performance_metrics_are_a_series_of_buckets(staff_api, api, two_tenants):
    now = timezone.now()
    for minutes, sent in [(30, 10), (20, 20), (19, 5), (5, 7)]:
        SystemSample.objects.create(
            taken_at=now - timedelta(minutes=minutes), sent=sent, pending=100 - minutes
        )
    start = (now - timedelta(hours=1)).isoformat()
    response = staff_api.get(
        "/api/monitoring/performance-metrics",
        {"from": start, "to": now.isoformat(), "step": 600},
    )
    assert response.status_code == 200, response.json()
    points = response.json()["points"]
    assert sum(p["sent"] for p in points) == 42
    assert max(p["samples"] for p in points) == 2  # the 20- and 19-minute samples share one
    assert all("pending" in p for p in points)
    assert response.json()["scope"] == "system"

    own = api.get("/api/monitoring/performance-metrics").json()
    assert own["scope"] == "own" and own["points"] == []

    too_many = staff_api.get(
        "/api/monitoring/performance-metrics",
        {"step": 1, "from": (now - timedelta(days=2)).isoformat()},
    )
    assert too_many.status_code == 400
    assert "step" in too_many.json()["errors"]
    bad_date = staff_api.get("/api/monitoring/performance-metrics", {"from": "yesterday"})
    assert bad_date.status_code == 400
    assert "from" in bad_date.json()["errors"]


@pytest.mark.django_db(transaction=True)
def test_system_health_turns_503_within_60_seconds_of_the_last_dispatcher_heartbeat(staff_api):
    loop = MonitorLoop(seconds=1)
    assert loop.acquire()  # the cluster's monitor loop is alive
    assert staff_api.get("/api/monitoring/system-health").status_code == 503  # no dispatcher yet

    dispatcher = spawn_dispatcher()
    try:
        wait_until(DispatcherSlot.objects.exists, message="the dispatcher's slot", timeout=30)
        healthy = staff_api.get("/api/monitoring/system-health")
        assert healthy.status_code == 200, healthy.json()
        assert healthy.json()["components"]["dispatchers"]["status"] == "ok"
    finally:
        os.kill(dispatcher.pid, signal.SIGKILL)  # dies without releasing its slot
        dispatcher.wait()
    slot = DispatcherSlot.objects.get()

    # The last heartbeat 59 s ago: still healthy; 61 s ago: 503, naming the dispatchers.
    DispatcherSlot.objects.update(heartbeat_at=slot.heartbeat_at - timedelta(seconds=59))
    assert staff_api.get("/api/monitoring/system-health").status_code == 200
    DispatcherSlot.objects.update(heartbeat_at=slot.heartbeat_at - timedelta(seconds=61))
    down = staff_api.get("/api/monitoring/system-health")
    assert down.status_code == 503
    body = down.json()
    assert body["status"] == "unhealthy"
    assert body["components"]["dispatchers"]["status"] == "down"
    assert body["components"]["dispatchers"]["heartbeat_age_seconds"] > 60
    assert body["components"]["database"]["status"] == "ok"
    assert body["components"]["cluster"]["status"] == "ok"


def test_system_health_is_unhealthy_without_a_running_cluster(staff_api):
    body = staff_api.get("/api/monitoring/system-health").json()
    assert body["components"]["cluster"]["status"] == "down"
    assert set(body["components"]) == {"database", "dispatchers", "cluster", "backlog", "alerts"}


def test_a_sample_counts_what_each_outcome_gained_since_the_previous_one(user, make_contacts):
    from apps.dispatch.models import SubTask

    make_contacts(user, 4)
    task = queue_task(user)
    first = samples_take()
    assert (first.pending, first.sent, first.tasks_live) == (4, 0, 1)
    ids = list(SubTask.objects.filter(task=task).values_list("pk", flat=True))
    SubTask.objects.filter(pk__in=ids[:3]).update(status="sent")
    SubTask.objects.filter(pk=ids[3]).update(status="failed")
    second = samples_take(now=timezone.now() + timedelta(seconds=60))
    assert (second.pending, second.sent, second.failed) == (0, 3, 1)
    assert second.interval_seconds == pytest.approx(60, abs=1)
    third = samples_take(now=timezone.now() + timedelta(seconds=120))
    assert (third.sent, third.failed) == (0, 0)
    metric = task.processing_metric
    metric.refresh_from_db()
    assert (metric.sent, metric.failed, metric.failure_rate) == (3, 1, 0.25)
    assert Alert.objects.count() == 0
