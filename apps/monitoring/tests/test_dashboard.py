"""The dashboard in the admin: pages, scoping, actions, and a real browser while a task
sends."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from selenium.webdriver.common.by import By

from apps.dispatch.selectors import task_progress
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done, wait_until
from apps.monitoring.evaluation import rules_evaluate
from apps.monitoring.loop import MonitorLoop
from apps.monitoring.models import Alert, AlertRule, SystemSample, TaskWaitMetric
from apps.monitoring.rules import Snapshot
from apps.monitoring.seeds import rules_seed
from apps.monitoring.tests.helpers import run_monitor
from tests.browser import admin_login, screenshot, wait_for

# The README's screenshot: ``EDM_SCREENSHOT_DIR=docs/img make test PYTEST_ARGS=…`` writes
# it there; otherwise into the test's temporary folder (a test run leaves the tree clean).
SCREENSHOT_DIR = os.environ.get("EDM_SCREENSHOT_DIR", "")


@pytest.fixture
def tenant(make_user):
    return make_user("tina", is_staff=True)


def test_the_admin_index_links_to_the_dashboard(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in page


def test_an_operator_sees_the_whole_system(admin_client, user, make_contacts, make_service):
    make_service(port=2525, name="mx-a")
    make_contacts(user, 3)
    queue_task(user, name="Spring sale")
    SystemSample.objects.create(taken_at=timezone.now() - timedelta(minutes=2), sent=30)
    SystemSample.objects.create(taken_at=timezone.now() - timedelta(minutes=1), sent=60)
    page = admin_client.get("/admin/dashboard/").content.decode()
    for expected in [
        "Sends per minute, last hour",
        "Queue depth, last hour",
        "mx-a",
        "Spring sale",
        "Service reservations",
        "Dispatcher loops",
        "Open alerts",
    ]:
        assert expected in page, expected
    assert 'data-series="sent" data-points="2"' in page
    fragment = admin_client.get("/admin/dashboard/?fragment=1").content.decode()
    assert "<html" not in fragment and "Sends per minute" in fragment


def test_a_tenant_sees_its_own_tasks_only(client, tenant, other_user, make_contacts):
    make_contacts(tenant, 2)
    make_contacts(other_user, 2)
    queue_task(tenant, name="Tina's news")
    queue_task(other_user, name="Bob's news")
    client.force_login(tenant)
    page = client.get("/admin/dashboard/").content.decode()
    assert "Your tasks" in page and "Tina&#x27;s news" in page
    assert "Bob" not in page
    assert "Email services" not in page and "Queue depth" not in page
    assert client.get("/admin/monitoring/alertrule/").status_code == 403


def test_an_alert_is_acknowledged_from_the_dashboard(admin_client, user, make_contacts):
    rules_seed(AlertRule)
    make_contacts(user, 1)
    queue_task(user)
    rules_evaluate(snapshot=Snapshot(now=timezone.now() + timedelta(seconds=400)))
    alert = Alert.objects.get()
    page = admin_client.get("/admin/dashboard/").content.decode()
    assert "Task waiting over 5 minutes" in page and "Acknowledge" in page
    response = admin_client.post(f"/admin/dashboard/alerts/{alert.pk}/acknowledge/")
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.status == "acknowledged"
    admin_client.post(f"/admin/dashboard/alerts/{alert.pk}/resolve/")
    alert.refresh_from_db()
    assert alert.status == "resolved"


def test_the_monitoring_admin_pages_render(admin_client, user, make_contacts):
    rules_seed(AlertRule)
    make_contacts(user, 1)
    queue_task(user)
    rules_evaluate(snapshot=Snapshot(now=timezone.now() + timedelta(seconds=400)))
    for url in [
        "/admin/monitoring/alertrule/",
        f"/admin/monitoring/alertrule/{AlertRule.objects.first().pk}/change/",
        "/admin/monitoring/alert/",
        "/admin/monitoring/notificationchannel/",
        "/admin/monitoring/notificationchannel/add/",
        "/admin/monitoring/notification/",
    ]:
        assert admin_client.get(url).status_code == 200, url
    alert = Alert.objects.get()
    admin_client.post(
        "/admin/monitoring/alert/",
        {"action": "acknowledge", "_selected_action": [alert.pk]},
    )
    alert.refresh_from_db()
    assert alert.status == "acknowledged"


def test_a_channel_added_in_the_admin_shows_its_secret_once(admin_client, private_ok):
    response = admin_client.post(
        "/admin/monitoring/notificationchannel/add/",
        {"name": "ops", "kind": "webhook", "target": "http://127.0.0.1:9/hook", "is_enabled": "on"},
        follow=True,
    )
    assert "Signing secret of ops" in response.content.decode()
    assert "whsec_" in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_draws_its_charts_while_a_task_sends(
    tmp_path,
    browser,
    live_server,
    staff_user,
    user,
    make_contacts,
    make_service,
    smtp_sink,
    set_config,
):
    set_config(monitoring__sample_interval=5, alerts__evaluation_interval=5)
    rules_seed(AlertRule)
    make_contacts(user, 200)
    for number in range(2):  # 10 messages a second in all: the task sends for ~20 s
        make_service(port=smtp_sink.port, name=f"mx-{number + 1}", sending_rate=0.2)
    task = queue_task(user, name="Autumn newsletter")
    monitor = MonitorLoop(seconds=120)
    assert monitor.acquire()
    thread = run_monitor(monitor)
    try:
        with ThreadedDispatcher(use_slot=True):
            wait_until(
                lambda: SystemSample.objects.filter(sent__gt=0).count() >= 2,
                timeout=40,
                message="two samples with sends",
            )
            admin_login(browser, live_server.url, "operator", "pw-operator")
            browser.get(live_server.url + "/admin/dashboard/")
            assert task_progress(task)["pending"] > 0  # the page was drawn while it sends
            chart = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-sends-hour"))
            sent = chart[0].find_element(By.CSS_SELECTOR, 'polyline[data-series="sent"]')
            points = [p.split(",") for p in sent.get_attribute("points").split()]
            assert len(points) >= 2
            heights = {float(y) for _, y in points}
            assert len(heights) > 1  # not a flat line on the axis: sends were drawn
            assert chart[0].find_element(By.TAG_NAME, "svg").size["width"] > 300  # laid out
            queue = browser.find_element(By.CSS_SELECTOR, 'polyline[data-series="pending"]')
            assert int(queue.get_attribute("data-points")) >= 2
            services = browser.find_element(By.ID, "edm-services").text
            assert "mx-1" in services and "mx-2" in services
            screenshot(browser, Path(SCREENSHOT_DIR or tmp_path) / "dashboard.png")
            assert "Autumn newsletter" in browser.find_element(By.ID, "edm-waiting").text
            wait_done(task, timeout=60)
    finally:
        monitor.stop.set()
        thread.join(timeout=30)


def test_the_services_table_shows_the_ones_most_in_need_of_a_look(admin_client, make_service):
    for number in range(24):
        make_service(port=2525, name=f"mx-{number:02d}", success_rate=1.0)
    make_service(port=2525, name="mx-broken", is_enabled=False, disabled_reason="by hand")
    make_service(port=2525, name="mx-poor", success_rate=0.5)
    page = admin_client.get("/admin/dashboard/").content.decode()
    table = page[
        page.index('id="edm-services"') : page.index("</table>", page.index("edm-services"))
    ]
    assert table.count("<tr class=") == 20
    assert table.index("mx-broken") < table.index("mx-poor") < table.index("mx-00")
    assert "mx-23" not in table
    assert "of 26" in page and 'href="/admin/services/emailservice/"' in page


def test_the_dashboard_reads_as_many_statements_for_many_services_as_for_few(
    admin_client, user, make_contacts, make_service
):
    make_contacts(user, 2)
    task = queue_task(user, name="Winter sale")
    make_service(port=2525)
    now = timezone.now()
    TaskWaitMetric.objects.create(
        task=task, owner=user, queued_at=now, first_sent_at=now, wait_seconds=12.5
    )

    def statements() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get("/admin/dashboard/").status_code == 200
        return len(queries.captured_queries)

    statements()  # draws (and caches) the charts
    few = statements()
    for _ in range(40):
        make_service(port=2525)
    assert statements() == few <= 10
    page = admin_client.get("/admin/dashboard/").content.decode()
    slowest = page[page.index('id="edm-waiting"') :]
    assert f"{task.pk} Winter sale</td><td>{user.username}</td>" in slowest
    assert "12.5 s to the first send" in slowest
