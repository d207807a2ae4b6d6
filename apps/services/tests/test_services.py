from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from apps.config.services import config_set
from apps.core.errors import ApplicationError
from apps.services import services
from apps.services.models import EmailService, Pool, quota_today
from apps.services.selectors import pool_default, pools_for_owner, service_stats
from apps.services.tasks import SCHEDULES, reset_daily_quotas
from apps.services.tests.conftest import SMTP_PASSWORD, SMTP_USER, EmailServiceFactory

pytestmark = pytest.mark.django_db


def test_the_default_pool_exists_after_migrate():
    assert Pool.objects.filter(name="default", is_shared=True).exists()
    assert pool_default().is_default


def test_create_takes_the_pool_by_name_or_id_and_defaults_from_config(staff_user):
    config_set(key="queue.default_sending_rate", value=0.25, actor=staff_user)
    bulk = services.pool_create(name="bulk", actor=staff_user)
    by_name = services.service_create(
        name="a", from_email="a@example.com", host="h", pool="bulk", actor=staff_user
    )
    by_id = services.service_create(
        name="b", from_email="b@example.com", host="h", pool=bulk.pk, actor=staff_user
    )
    default = services.service_create(name="c", from_email="c@example.com", host="h")
    assert by_name.pool == by_id.pool == bulk
    assert default.pool.name == "default"
    assert by_name.sending_rate == 0.25
    assert by_name.history.first().history_user == staff_user


def test_create_refuses_bad_fields_naming_them():
    with pytest.raises(ValidationError) as caught:
        services.service_create(name="x", from_email="not-an-email", host="", port=70000)
    assert {"from_email", "port", "host"} <= set(caught.value.message_dict)
    with pytest.raises(ApplicationError, match="no pool 'nope'"):
        services.service_create(name="y", from_email="y@example.com", host="h", pool="nope")
    assert not EmailService.objects.filter(name__in=["x", "y"]).exists()


def test_update_writes_only_operator_fields_and_never_the_runtime_counters(service, staff_user):
    # The dispatcher moved the counters after the operator loaded the row.
    EmailService.objects.filter(pk=service.pk).update(
        used_quota=42, quota_day=quota_today(), total_sent=42
    )
    services.service_update(
        service_id=service.pk, actor=staff_user, daily_quota=5000, reason="contract upgrade"
    )
    service.refresh_from_db()
    assert (service.daily_quota, service.used_quota, service.total_sent) == (5000, 42, 42)
    record = service.history.first()
    assert (record.history_user, record.history_change_reason) == (staff_user, "contract upgrade")
    assert record.prev_record.daily_quota == 1000


def test_runtime_counters_are_not_history(service):
    count = service.history.count()
    EmailService.objects.filter(pk=service.pk).update(used_quota=3, total_sent=3)
    assert service.history.count() == count
    assert "used_quota" not in {f.name for f in EmailService.history.model._meta.fields}


def test_a_password_change_is_recorded_without_the_secret(service, staff_user):
    services.service_update(service_id=service.pk, actor=staff_user, password="new-one")
    service.refresh_from_db()
    assert service.password == "new-one"
    assert service.history.first().history_change_reason == "updated; password changed"


def test_disable_needs_a_reason_and_enable_clears_it_and_the_cool_down(service, staff_user):
    with pytest.raises(ApplicationError, match="say why"):
        services.service_disable(service_id=service.pk, reason=" ", actor=staff_user)
    assert services.service_disable(service_id=service.pk, reason="bounces", actor=staff_user)
    assert not services.service_disable(service_id=service.pk, reason="again")
    service.refresh_from_db()
    assert (service.is_enabled, service.disabled_reason) == (False, "bounces")
    assert service.history.first().history_change_reason == "disabled: bounces"
    # A cool-down and failure streak left by the dispatcher.
    EmailService.objects.filter(pk=service.pk).update(
        consecutive_failures=5, next_available_at=timezone.now() + dt.timedelta(hours=1)
    )
    assert services.service_enable(service_id=service.pk, actor=staff_user, reason="fixed")
    service.refresh_from_db()
    assert (service.is_enabled, service.disabled_reason, service.consecutive_failures) == (
        True,
        "",
        0,
    )
    assert service.ready_in == 0
    assert service.history.first().history_user == staff_user
    assert not services.service_enable(service_id=service.pk)


def test_pools_for_owner_lists_shared_pools_and_the_owners_dedicated_ones(
    user, other_user, staff_user
):
    vip = services.pool_create(name="vip", is_shared=False, owners=[user])
    services.pool_create(name="internal", is_shared=False)
    assert set(pools_for_owner(user).values_list("name", flat=True)) == {"default", "vip"}
    assert set(pools_for_owner(other_user).values_list("name", flat=True)) == {"default"}
    assert not pools_for_owner(other_user).filter(pk=vip.pk).exists()
    assert set(pools_for_owner(staff_user).values_list("name", flat=True)) == {
        "default",
        "vip",
        "internal",
    }


def test_the_default_pool_cannot_be_deleted_or_renamed_and_used_pools_stay(service):
    default = pool_default()
    with pytest.raises(ApplicationError, match="cannot be deleted"):
        services.pool_delete(pool_id=default.pk)
    with pytest.raises(ApplicationError, match="cannot be renamed"):
        services.pool_update(pool_id=default.pk, name="other")
    used = services.pool_create(name="used")
    services.service_update(service_id=service.pk, pool=used)
    with pytest.raises(ApplicationError, match="still has services"):
        services.pool_delete(pool_id=used.pk)
    empty = services.pool_create(name="empty")
    services.pool_delete(pool_id=empty.pk)
    assert not Pool.objects.filter(name="empty").exists()


# --- quotas ----------------------------------------------------------------------------


def _set_quota(service: EmailService, used: int, day: dt.date) -> None:
    EmailService.objects.filter(pk=service.pk).update(used_quota=used, quota_day=day)
    service.refresh_from_db()


def _db_today() -> dt.date:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_date")
        return cursor.fetchone()[0]


def test_quota_day_matches_the_database_date():
    assert quota_today() == _db_today()


def test_a_missed_midnight_leaves_no_stale_quota_visible(service):
    yesterday = quota_today() - dt.timedelta(days=1)
    _set_quota(service, 1000, yesterday)  # used up yesterday; the midnight job never ran
    assert service.quota_used_today == 0
    assert service.quota_left_today == 1000
    assert service_stats(service)["quota_left_today"] == 1000
    _set_quota(service, 400, quota_today())
    assert service.quota_left_today == 600


def test_the_reset_job_resets_only_earlier_days_and_is_idempotent(service):
    today_service = EmailServiceFactory()
    _set_quota(service, 900, quota_today() - dt.timedelta(days=3))
    _set_quota(today_service, 7, quota_today())
    assert reset_daily_quotas() == 1
    assert reset_daily_quotas() == 0
    service.refresh_from_db()
    today_service.refresh_from_db()
    assert (service.used_quota, service.quota_day) == (0, quota_today())
    assert today_service.used_quota == 7


def test_the_reset_job_is_scheduled():
    assert [s["func"] for s in SCHEDULES] == ["apps.services.tasks.reset_daily_quotas"]


def test_an_unlimited_quota_has_nothing_left_to_count(service):
    EmailService.objects.filter(pk=service.pk).update(daily_quota=0)
    service.refresh_from_db()
    assert service.quota_left_today is None
    assert service.is_ready


# --- test connection -------------------------------------------------------------------


def test_connection_test_succeeds_against_a_real_server(smtp_auth_server):
    service = EmailServiceFactory(
        port=smtp_auth_server.port, username=SMTP_USER, password=SMTP_PASSWORD
    )
    result = services.service_test_connection(service_id=service.pk)
    assert result.ok, result
    assert 0 < result.latency_ms < 5000
    assert smtp_auth_server.handler.messages == []


def test_connection_test_reports_a_wrong_password(smtp_auth_server):
    service = EmailServiceFactory(port=smtp_auth_server.port, username=SMTP_USER, password="wrong")
    result = services.service_test_connection(service_id=service.pk)
    assert (result.ok, result.error_kind, result.code) == (False, "service", 535)
    assert "authentication refused" in result.error


def test_connection_test_reports_a_refused_port(closed_port):
    service = EmailServiceFactory(port=closed_port)
    result = services.service_test_connection(service_id=service.pk)
    assert not result.ok
    assert f"cannot connect to 127.0.0.1:{closed_port}" in result.error
    assert "refused" in result.error.lower()


def test_setup_schedules_creates_the_quota_reset_schedule():
    from django.core.management import call_command
    from django_q.models import Schedule

    call_command("setup_schedules", stdout=StringIO())
    schedule = Schedule.objects.get(name="edm:services.reset_daily_quotas")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == (
        "apps.services.tasks.reset_daily_quotas",
        "I",
        5,
    )
