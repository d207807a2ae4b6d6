from __future__ import annotations

import pytest
from django.db import connection

from apps.services.models import EmailService, Pool
from apps.services.tests.conftest import SMTP_PASSWORD, SMTP_USER, EmailServiceFactory

pytestmark = pytest.mark.django_db

PAYLOAD = {
    "name": "smtp-eu-1",
    "kind": "smtp",
    "host": "smtp.example.com",
    "port": 587,
    "security": "starttls",
    "username": "mailer",
    "password": "Hunter2-Secret",
    "from_email": "news@example.com",
    "daily_quota": 5000,
    "sending_rate": 0.5,
    "is_enabled": True,
    "pool": "default",
}


def test_non_staff_get_403_and_anonymous_401(api, anon_api, service):
    for client, code in ((api, 403), (anon_api, 401)):
        assert client.get("/api/services/").status_code == code
        assert client.post("/api/services/", PAYLOAD, format="json").status_code == code
        assert client.get(f"/api/services/{service.pk}/stats").status_code == code
        assert client.post(f"/api/services/{service.pk}/test").status_code == code
        assert client.get("/api/pools/").status_code == code


def test_staff_create_a_service_and_the_password_never_comes_back(staff_api, staff_user):
    response = staff_api.post("/api/services/", PAYLOAD, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "password" not in body and "password_encrypted" not in body
    assert "Hunter2-Secret" not in response.content.decode()
    assert body["has_password"] is True
    assert body["pool"] == Pool.objects.get(name="default").pk
    assert body["pool_name"] == "default"
    service = EmailService.objects.get(pk=body["id"])
    assert service.password == "Hunter2-Secret"
    assert service.history.first().history_user == staff_user
    listing = staff_api.get("/api/services/")
    assert "Hunter2-Secret" not in listing.content.decode()
    assert listing.json()["results"][0]["name"] == "smtp-eu-1"


def test_pool_may_be_given_by_id(staff_api):
    pool = Pool.objects.create(name="transactional")
    response = staff_api.post("/api/services/", {**PAYLOAD, "pool": pool.pk}, format="json")
    assert response.status_code == 201
    assert response.json()["pool"] == pool.pk


def test_bad_fields_answer_400_naming_each(staff_api):
    response = staff_api.post(
        "/api/services/",
        {
            **PAYLOAD,
            "kind": "pigeon",
            "port": 0,
            "sending_rate": -1,
            "pool": "nope",
            "from_email": "nope",
        },
        format="json",
    )
    assert response.status_code == 400
    assert {"kind", "port", "sending_rate", "pool", "from_email"} <= set(response.json()["errors"])
    assert "no pool 'nope'" in response.json()["errors"]["pool"][0]
    assert not EmailService.objects.exists()


def test_smtp_without_host_answers_400(staff_api):
    response = staff_api.post("/api/services/", {**PAYLOAD, "host": ""}, format="json")
    assert response.status_code == 400
    assert "host" in response.json()["errors"]


def test_patch_keeps_the_password_unless_given_and_never_touches_counters(staff_api, service):
    service.password = "keep-me"
    service.save()
    EmailService.objects.filter(pk=service.pk).update(total_sent=9)
    response = staff_api.patch(f"/api/services/{service.pk}/", {"daily_quota": 7}, format="json")
    assert response.status_code == 200, response.json()
    service.refresh_from_db()
    assert (service.daily_quota, service.password, service.total_sent) == (7, "keep-me", 9)


def test_stats_show_the_live_state(staff_api, service):
    body = staff_api.get(f"/api/services/{service.pk}/stats").json()
    assert body["quota_left_today"] == 1000
    assert body["ready_in_seconds"] == 0
    assert body["is_ready"] is True
    assert {
        "success_rate",
        "avg_response_time",
        "total_sent",
        "consecutive_failures",
        "disabled_reason",
    } <= set(body)


def test_disable_and_enable_through_the_api(staff_api, service):
    response = staff_api.post(f"/api/services/{service.pk}/disable", {}, format="json")
    assert response.status_code == 400
    response = staff_api.post(
        f"/api/services/{service.pk}/disable", {"reason": "spam complaints"}, format="json"
    )
    assert response.json()["disabled_reason"] == "spam complaints"
    detail = staff_api.get(f"/api/services/{service.pk}/").json()
    assert (detail["is_enabled"], detail["disabled_reason"]) == (False, "spam complaints")
    response = staff_api.post(f"/api/services/{service.pk}/enable", {}, format="json")
    assert response.json()["is_enabled"] is True


def test_test_connection_reports_latency_or_the_exact_failure(
    staff_api, smtp_auth_server, closed_port
):
    good = EmailServiceFactory(
        port=smtp_auth_server.port, username=SMTP_USER, password=SMTP_PASSWORD
    )
    wrong = EmailServiceFactory(port=smtp_auth_server.port, username=SMTP_USER, password="bad")
    refused = EmailServiceFactory(port=closed_port)
    body = staff_api.post(f"/api/services/{good.pk}/test").json()
    assert body["ok"] is True and body["latency_ms"] > 0
    body = staff_api.post(f"/api/services/{wrong.pk}/test").json()
    assert (body["ok"], body["error_kind"], body["code"]) == (False, "service", 535)
    body = staff_api.post(f"/api/services/{refused.pk}/test").json()
    assert body["ok"] is False and "refused" in body["error"].lower()


def test_delete_a_service(staff_api, service):
    assert staff_api.delete(f"/api/services/{service.pk}/").status_code == 204
    assert not EmailService.objects.filter(pk=service.pk).exists()


def test_pools_crud(staff_api, user):
    response = staff_api.post(
        "/api/pools/", {"name": "vip", "is_shared": False, "owners": [user.pk]}, format="json"
    )
    assert response.status_code == 201, response.json()
    pool_id = response.json()["id"]
    assert response.json()["owners"] == [user.pk]
    names = [p["name"] for p in staff_api.get("/api/pools/").json()["results"]]
    assert names == ["default", "vip"]
    response = staff_api.patch(f"/api/pools/{pool_id}/", {"is_shared": True}, format="json")
    assert response.json()["is_shared"] is True
    assert staff_api.delete(f"/api/pools/{pool_id}/").status_code == 204


def test_the_default_pool_cannot_be_deleted_through_the_api(staff_api):
    default = Pool.objects.get(name="default")
    response = staff_api.delete(f"/api/pools/{default.pk}/")
    assert response.status_code == 400
    assert "cannot be deleted" in response.json()["detail"]


def test_the_raw_column_written_through_the_api_is_encrypted(staff_api):
    body = staff_api.post("/api/services/", PAYLOAD, format="json").json()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT password_encrypted FROM services_emailservice WHERE id = %s", [body["id"]]
        )
        assert "Hunter2-Secret" not in cursor.fetchone()[0]
