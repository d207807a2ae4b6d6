from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from apps.services.models import EmailService, Pool, quota_today
from apps.services.tests.conftest import SMTP_PASSWORD, SMTP_USER, EmailServiceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_the_list_shows_live_state(admin_client, service):
    EmailService.objects.filter(pk=service.pk).update(
        used_quota=250, quota_day=quota_today(), success_rate=0.975
    )
    response = admin_client.get(reverse("admin:services_emailservice_changelist"))
    assert response.status_code == 200
    content = response.content.decode()
    assert "250 / 750" in content
    assert "97.5%" in content


def test_the_list_shows_when_a_cooled_down_service_is_ready(admin_client, service):
    from django.utils import timezone

    EmailService.objects.filter(pk=service.pk).update(
        next_available_at=timezone.now() + dt.timedelta(seconds=30)
    )
    content = admin_client.get(reverse("admin:services_emailservice_changelist")).content
    assert b"in 29." in content or b"in 30.0 s" in content


def test_disable_and_enable_actions_are_audited(admin_client, service, staff_user):
    url = reverse("admin:services_emailservice_changelist")
    admin_client.post(url, {"action": "disable_services", "_selected_action": [service.pk]})
    service.refresh_from_db()
    assert not service.is_enabled
    assert service.disabled_reason == "disabled in the admin by operator"
    assert service.history.first().history_user == staff_user
    admin_client.post(url, {"action": "enable_services", "_selected_action": [service.pk]})
    service.refresh_from_db()
    assert service.is_enabled


def test_test_connection_action_reports_success_and_failure(admin_client, smtp_auth_server):
    good = EmailServiceFactory(
        name="good", port=smtp_auth_server.port, username=SMTP_USER, password=SMTP_PASSWORD
    )
    bad = EmailServiceFactory(
        name="bad", port=smtp_auth_server.port, username=SMTP_USER, password="nope"
    )
    response = admin_client.post(
        reverse("admin:services_emailservice_changelist"),
        {"action": "test_connection", "_selected_action": [good.pk, bad.pk]},
        follow=True,
    )
    content = response.content.decode()
    assert "Good: OK in" in content
    assert "Bad: FAILED" in content and "authentication refused: 535" in content


def test_adding_a_service_in_the_admin_encrypts_the_password_and_records_the_author(
    admin_client, staff_user
):
    response = admin_client.post(
        reverse("admin:services_emailservice_add"),
        {
            "name": "from-admin",
            "pool": Pool.objects.get(name="default").pk,
            "kind": "smtp",
            "host": "smtp.example.com",
            "port": 587,
            "security": "starttls",
            "username": "u",
            "password": "Admin-Secret",
            "from_email": "a@example.com",
            "daily_quota": 10,
            "sending_rate": 1,
            "is_enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    service = EmailService.objects.get(name="from-admin")
    assert service.password == "Admin-Secret"
    assert service.history.first().history_user == staff_user
    change = admin_client.get(reverse("admin:services_emailservice_change", args=[service.pk]))
    assert b"Admin-Secret" not in change.content
    assert service.password_encrypted.encode() not in change.content


def test_editing_in_the_admin_keeps_the_password_and_counters(admin_client, service):
    service.password = "keep"
    service.save()
    EmailService.objects.filter(pk=service.pk).update(total_sent=5)
    url = reverse("admin:services_emailservice_change", args=[service.pk])
    response = admin_client.post(
        url,
        {
            "name": service.name,
            "pool": service.pool_id,
            "kind": "smtp",
            "host": "127.0.0.1",
            "port": 2525,
            "security": "none",
            "username": "",
            "password": "",
            "from_email": service.from_email,
            "daily_quota": 99,
            "sending_rate": 0.5,
            "is_enabled": "on",
            "disabled_reason": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    service.refresh_from_db()
    assert (service.daily_quota, service.password, service.total_sent) == (99, "keep", 5)


def test_a_bad_value_is_shown_inline(admin_client, service):
    url = reverse("admin:services_emailservice_change", args=[service.pk])
    response = admin_client.post(
        url,
        {
            "name": service.name,
            "pool": service.pool_id,
            "kind": "smtp",
            "host": "",
            "port": 2525,
            "security": "none",
            "from_email": service.from_email,
            "daily_quota": 99,
            "sending_rate": 0.5,
        },
    )
    assert response.status_code == 200
    assert b"an SMTP service needs a host" in response.content


def test_history_page_lists_operator_changes(admin_client, service):
    admin_client.post(
        reverse("admin:services_emailservice_changelist"),
        {"action": "disable_services", "_selected_action": [service.pk]},
    )
    response = admin_client.get(reverse("admin:services_emailservice_history", args=[service.pk]))
    assert response.status_code == 200
    assert b"disabled: disabled in the admin by operator" in response.content


def test_pool_admin_pages(admin_client, user):
    response = admin_client.get(reverse("admin:services_pool_changelist"))
    assert response.status_code == 200
    response = admin_client.post(
        reverse("admin:services_pool_add"),
        {"name": "dedicated", "description": "", "owners": [user.pk]},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    pool = Pool.objects.get(name="dedicated")
    assert not pool.is_shared
    assert list(pool.owners.all()) == [user]
    default = Pool.objects.get(name="default")
    response = admin_client.get(reverse("admin:services_pool_delete", args=[default.pk]))
    assert response.status_code == 403


def test_history_version_pages_render(admin_client, service, staff_user):
    from apps.services.services import service_update

    service_update(service_id=service.pk, actor=staff_user, daily_quota=3)
    record = service.history.order_by("history_id").first()
    url = reverse(
        "admin:services_emailservice_simple_history", args=[service.pk, record.history_id]
    )
    response = admin_client.get(url)
    assert response.status_code == 200
    assert b'name="daily_quota"' in response.content


def test_pool_history_records_the_author(staff_user):
    from apps.services.services import pool_create

    pool = pool_create(name="audited", actor=staff_user)
    assert pool.history.first().history_user == staff_user
