from __future__ import annotations

import re

import pytest
from django.urls import reverse

from apps.config.models import SystemConfig
from apps.config.selectors import config_get, config_history

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


def _row(key: str) -> SystemConfig:
    return SystemConfig.objects.get(key=key)


def test_changelist_groups_keys_by_category(admin_client):
    response = admin_client.get(reverse("admin:config_systemconfig_changelist"))
    assert response.status_code == 200
    assert b"backoff.strategy" in response.content
    response = admin_client.get(
        reverse("admin:config_systemconfig_changelist"), {"category": "recovery"}
    )
    assert b"recovery.stuck_threshold" in response.content
    assert b"backoff.strategy" not in response.content


def test_a_bad_value_is_shown_inline_and_changes_nothing(admin_client):
    row = _row("backoff.jitter")
    url = reverse("admin:config_systemconfig_change", args=[row.pk])
    response = admin_client.post(url, {"value": "3", "reason": "try"})
    assert response.status_code == 200
    assert b"must be at most 1" in response.content
    assert config_get("backoff.jitter") == 0.1


def test_a_change_in_the_admin_is_audited_with_the_operator(admin_client):
    row = _row("backoff.strategy")
    url = reverse("admin:config_systemconfig_change", args=[row.pk])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"value": "linear", "reason": "gentler"})
    assert response.status_code == 302
    assert config_get("backoff.strategy") == "linear"
    entry = config_history("backoff.strategy")[0]
    assert (entry["changed_by"], entry["reason"], entry["old_value"]) == (
        "operator",
        "gentler",
        "exponential",
    )


def test_history_page_shows_the_diff_and_a_rollback_that_is_audited(admin_client):
    row = _row("queue.batch_size")
    change_url = reverse("admin:config_systemconfig_change", args=[row.pk])
    admin_client.post(change_url, {"value": "20", "reason": "small"})
    history = admin_client.get(reverse("admin:config_systemconfig_history", args=[row.pk]))
    assert history.status_code == 200
    assert b"roll back to this" in history.content
    assert re.search(
        r"<strong>Value:</strong>\s*1000\s*&nbsp;&rarr;&nbsp;&nbsp;20\s", history.content.decode()
    )
    first = SystemConfig.history.filter(key="queue.batch_size").order_by("history_id").first()
    url = reverse("admin:config_systemconfig_rollback", args=[row.pk, first.history_id])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"reason": "undo"})
    assert response.status_code == 302
    assert config_get("queue.batch_size") == 1000
    entry = config_history("queue.batch_size")[0]
    assert entry["changed_by"] == "operator"
    assert entry["reason"] == f"rollback to #{first.history_id}: undo"


def test_non_staff_cannot_open_the_configuration_admin(client, user):
    client.force_login(user)
    response = client.get(reverse("admin:config_systemconfig_changelist"))
    assert response.status_code == 302


def test_reverting_from_a_history_version_page_goes_through_validation(admin_client):
    from apps.config.services import config_set

    config_set(key="queue.batch_size", value=20, reason="small")
    row = _row("queue.batch_size")
    first = SystemConfig.history.filter(key="queue.batch_size").order_by("history_id").first()
    url = reverse("admin:config_systemconfig_simple_history", args=[row.pk, first.history_id])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert b"1000" in page.content
    response = admin_client.post(url, {"value": "1000", "reason": "revert"})
    assert response.status_code == 302
    assert config_get("queue.batch_size") == 1000
    assert config_history("queue.batch_size")[0]["reason"] == "revert"
