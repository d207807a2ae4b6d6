"""/metrics: valid exposition, cluster-wide figures from the database, counted once."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from apps.core.database import child_env
from apps.dispatch.tests.helpers import ROOT, queue_task, wait_done
from apps.monitoring.collectors import DatabaseCollector
from apps.monitoring.seeds import SEEDED_RULES
from apps.services.models import EmailService
from apps.services.selectors import pool_default


def _scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    return families


def _value(families: dict, name: str, **labels) -> float:
    for sample in families[name].samples:
        if sample.name in (name, f"{name}_total") and all(
            sample.labels.get(k) == v for k, v in labels.items()
        ):
            return sample.value
    raise AssertionError(f"no sample {name} {labels}")


def test_the_exposition_parses_and_carries_every_cluster_figure(client, db):
    service = EmailService.objects.create(
        pool=pool_default(), name="mx-1", host="127.0.0.1", port=25, from_email="a@example.org"
    )
    EmailService.objects.filter(pk=service.pk).update(
        total_sent=42, total_failed=3, is_enabled=False
    )
    families = _scrape(client)
    assert _value(families, "edm_service_sends", service="mx-1", outcome="sent") == 42
    assert _value(families, "edm_service_sends", service="mx-1", outcome="failed") == 3
    assert _value(families, "edm_services", state="disabled") == 1
    assert _value(families, "edm_metrics_collector_up") == 1
    assert _value(families, "edm_dispatcher_slots_live") == 0
    # A status with nothing in it still has its sample.
    assert _value(families, "edm_tasks_active", status="sending") == 0
    for name in [
        "edm_messages",
        "edm_queue_messages",
        "edm_queue_waiting_messages",
        "edm_queue_oldest_pending_seconds",
        "edm_task_wait_seconds",
        "edm_dead_letters_pending",
        "edm_alerts",
    ]:
        assert name in families, name
    waits = families["edm_task_wait_seconds"]
    assert [s.labels["le"] for s in waits.samples if s.name.endswith("_bucket")][-1] == "+Inf"


@pytest.mark.django_db(transaction=True)
def test_a_send_made_in_another_process_is_counted_exactly_once(
    client, tmp_path, settings, user, make_contacts, make_service, smtp_sink
):
    make_contacts(user, 1)
    make_service(port=smtp_sink.port, name="mx-sink")
    task = queue_task(user)
    directory = tmp_path / "prometheus"
    directory.mkdir()
    # A dispatcher in its own process, with the node's multiprocess directory.
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "dispatch", "--once"],
        cwd=ROOT,
        env=child_env(DEBUG="1", LOG_LEVEL="WARNING", PROMETHEUS_MULTIPROC_DIR=str(directory)),
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert wait_done(task)["sent"] == 1
    assert len(smtp_sink.handler.messages) == 1

    families = _scrape(client)  # from the database: this process sent nothing
    assert _value(families, "edm_messages", outcome="sent") == 1
    assert _value(families, "edm_service_sends", service="mx-sink", outcome="sent") == 1

    # The node's processes' own counters, merged from the directory: the one send, once.
    settings.PROMETHEUS_MULTIPROC_DIR = str(directory)
    merged = _scrape(client)
    assert _value(merged, "edm_dispatch_messages", outcome="sent") == 1
    assert _value(merged, "edm_messages", outcome="sent") == 1
    assert _value(merged, "edm_service_sends", service="mx-sink", outcome="sent") == 1
    # Every app's cluster-wide figures are there in this mode too (the events relay's).
    assert _value(merged, "edm_events_publish_lag_seconds") >= 0
    assert _value(merged, "edm_webhook_deliveries_pending") == 0
    assert _value(merged, "edm_events_relays_live") == 0


def _forget_the_views_earlier_tests_requested() -> None:
    """The per-view HTTP metrics of this process hold a child per (view, method) that any
    earlier test requested: the scrape below is measured for this test's own traffic."""
    from django_prometheus import middleware

    for name in dir(middleware.Metrics.get_instance()):
        metric = getattr(middleware.Metrics.get_instance(), name)
        if "view" in getattr(metric, "_labelnames", ()):
            metric.clear()


def test_a_busy_scrape_stays_small(admin_client, client, db):
    _forget_the_views_earlier_tests_requested()
    for number in range(200):
        EmailService.objects.create(
            pool=pool_default(), name=f"service-{number:03d}", host="127.0.0.1", port=25,
            from_email=f"s{number}@example.org",
        )  # fmt: skip
    pages = [
        "/admin/", "/admin/dashboard/", "/admin/services/emailservice/", "/admin/dispatch/task/",
        "/admin/contacts/contact/", "/admin/monitoring/alert/", "/admin/monitoring/alertrule/",
        "/admin/config/systemconfig/", "/api/health", "/admin/nope/", "/api/monitoring/alerts",
    ]  # fmt: skip
    for _ in range(3):
        for page in pages:
            admin_client.get(page)
    body = client.get("/metrics").content
    assert len(body) <= 50 * 1024, len(body)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    views = {
        s.labels["view"]
        for s in families["django_http_requests_latency_seconds_by_view_method"].samples
    }
    assert "other" in views
    assert not any(view.startswith("admin:") for view in views)


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_does_not_break_the_scrape(client):
    original = dict(connection.settings_dict)
    connection.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    connection.settings_dict.update(HOST="127.0.0.1", PORT=closed_port)
    try:
        lines = client.get("/metrics").content.decode().splitlines()
    finally:
        connection.close()
        connection.settings_dict.update(original)
    assert "edm_metrics_collector_up 0.0" in lines
    assert not any(line.startswith("edm_service_sends_total") for line in lines)


def test_the_collector_describes_nothing_at_registration():
    assert DatabaseCollector().describe() == []


def test_the_docker_alert_rules_and_dashboard_use_exported_metrics(client, db):
    import json
    import re
    from datetime import timedelta

    import yaml
    from django.utils import timezone

    from apps.dispatch.models import DispatcherSlot
    from apps.monitoring.loop import lease_acquire

    # Heartbeat ages exist once something has beaten.
    DispatcherSlot.objects.create(number=0, holder="h", expires_at=timezone.now() + timedelta(60))
    lease_acquire("test")
    exported = set(_scrape(client))
    docker = ROOT / "docker"
    rules = yaml.safe_load((docker / "prometheus" / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((docker / "grafana" / "dashboards" / "edm.json").read_text())
    expressions += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {
        re.sub(r"_(total|bucket)$", "", name)
        for expression in expressions
        for name in re.findall(r"\b(edm_[a-z_]+)", expression)
    }
    assert used, "no EDM metric referenced"
    assert used <= exported, used - exported
    seeded = {rule[0] for rule in SEEDED_RULES}
    assert len(seeded) == 8
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} >= {
        "EDMTaskWaiting",
        "EDMDeadLetterEntered",
        "EDMServiceAutoDisabled",
        "EDMNoDispatcherHeartbeat",
        "EDMBacklogGrowing",
        "EDMFailureRateHigh",
    }
