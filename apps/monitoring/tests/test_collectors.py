"""/metrics carries the cluster-wide figures read from the database."""

from __future__ import annotations

import socket

import pytest
from django.db import connection

from apps.services.models import EmailService
from apps.services.selectors import pool_default


def _metric_lines(client) -> list[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode().splitlines()


def test_metrics_show_each_services_totals_and_state(client, db):
    service = EmailService.objects.create(
        pool=pool_default(),
        name="mx-1",
        host="127.0.0.1",
        port=25,
        from_email="a@example.org",
        daily_quota=100,
    )
    EmailService.objects.filter(pk=service.pk).update(
        total_sent=42, total_failed=3, success_rate=0.93, is_enabled=False
    )
    lines = _metric_lines(client)
    assert 'edm_service_sent_total{pool="default",service="mx-1"} 42.0' in lines
    assert 'edm_service_failed_total{pool="default",service="mx-1"} 3.0' in lines
    assert 'edm_service_enabled{pool="default",service="mx-1"} 0.0' in lines
    assert "edm_metrics_collector_up 1.0" in lines
    assert "edm_dispatcher_slots_live 0.0" in lines


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_does_not_break_the_scrape(client):
    original = dict(connection.settings_dict)
    connection.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    connection.settings_dict.update(HOST="127.0.0.1", PORT=closed_port)
    try:
        lines = _metric_lines(client)
    finally:
        connection.close()
        connection.settings_dict.update(original)
    assert "edm_metrics_collector_up 0.0" in lines
    assert not any(line.startswith("edm_service_sent_total") for line in lines)
