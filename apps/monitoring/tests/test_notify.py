"""Channels deliver to real receivers: a local HTTP server, a real aiosmtpd."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from apps.monitoring import services
from apps.monitoring.models import Alert, AlertRule, Notification, NotificationChannel
from apps.monitoring.notify import notification_deliver, notifications_claim, notifications_queue
from apps.monitoring.seeds import rules_seed
from apps.services.models import EmailService

pytestmark = pytest.mark.django_db


def _alert(rule_name: str = "Dead letter entered") -> Alert:
    rules_seed(AlertRule)
    rule = AlertRule.objects.get(name=rule_name)
    return Alert.objects.create(
        rule=rule,
        rule_name=rule.name,
        metric=rule.metric,
        subject="system",
        subject_label="dead-letter queue",
        level=rule.level,
        value=3,
        threshold=rule.threshold,
        fired_at=timezone.now(),
    )


def _deliver_due() -> list[bool]:
    return [notification_deliver(notification_id=pk) for pk in notifications_claim(limit=10)]


def test_a_webhook_notification_is_signed_the_standard_webhooks_way(private_ok, http_receiver):
    channel, secret = services.channel_create(
        name="ops hook", kind="webhook", target=http_receiver.url
    )
    assert secret.startswith("whsec_")
    assert secret not in channel.secret_encrypted  # encrypted at rest
    alert = _alert()
    assert notifications_queue(alert=alert, event="fired", channels=[channel]) == 1

    assert _deliver_due() == [True]

    request = http_receiver.requests[0]
    payload = Webhook(secret).verify(request.body, request.headers)  # raises when invalid
    assert payload["type"] == "alert.fired"
    assert payload["data"]["alert"]["id"] == alert.pk
    assert payload["data"]["alert"]["level"] == "warning"
    assert request.headers["webhook-id"] == f"msg_edm_notification_{Notification.objects.get().pk}"
    with pytest.raises(Exception, match="signature"):
        Webhook(services._new_secret()).verify(request.body, request.headers)
    notification = Notification.objects.get()
    assert (notification.status, notification.attempts) == ("sent", 1)


def test_a_webhook_answering_500_is_retried_with_back_off_and_the_same_id(
    private_ok, http_receiver
):
    http_receiver.statuses = [500, 200]
    channel, secret = services.channel_create(
        name="flaky", kind="webhook", target=http_receiver.url
    )
    notifications_queue(alert=_alert(), event="fired", channels=[channel])

    assert _deliver_due() == [False]
    notification = Notification.objects.get()
    assert notification.status == "pending"
    assert notification.next_attempt_at > timezone.now() + timedelta(seconds=3)
    assert "answered 500" in notification.last_error
    channel.refresh_from_db()
    assert channel.is_failing and channel.consecutive_failures == 1
    assert _deliver_due() == []  # not due yet: back-off

    Notification.objects.update(next_attempt_at=timezone.now())
    assert _deliver_due() == [True]
    first, second = http_receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    Webhook(secret).verify(second.body, second.headers)
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("sent", 2)
    assert [a.ok for a in notification.attempt_log.order_by("id")] == [False, True]
    channel.refresh_from_db()
    assert not channel.is_failing


def test_a_permanent_error_is_not_retried(private_ok, http_receiver):
    http_receiver.statuses = [410]
    channel, _ = services.channel_create(name="gone", kind="webhook", target=http_receiver.url)
    notifications_queue(alert=_alert(), event="fired", channels=[channel])
    assert _deliver_due() == [False]
    notification = Notification.objects.get()
    assert notification.status == "failed"
    assert notification.attempt_log.get().permanent


def test_delivery_gives_up_after_the_configured_attempts(private_ok, http_receiver, set_config):
    set_config(alerts__delivery_attempts=2)
    http_receiver.statuses = [503]
    channel, _ = services.channel_create(name="down", kind="webhook", target=http_receiver.url)
    notifications_queue(alert=_alert(), event="fired", channels=[channel])
    _deliver_due()
    Notification.objects.update(next_attempt_at=timezone.now())
    _deliver_due()
    assert Notification.objects.get().status == "failed"
    assert len(http_receiver.requests) == 2


def test_a_slack_notification_posts_text(private_ok, http_receiver):
    channel, secret = services.channel_create(name="slack", kind="slack", target=http_receiver.url)
    assert secret is None
    notifications_queue(alert=_alert(), event="resolved", channels=[channel])
    assert _deliver_due() == [True]
    text = http_receiver.requests[0].json()["text"]
    assert "Dead letter entered resolved" in text
    assert "dead-letter queue" in text


def test_an_email_notification_reaches_a_real_smtp_server_through_an_edm_service(
    smtp_sink, pool, set_config
):
    EmailService.objects.create(
        pool=pool, name="alerts-mx", host="127.0.0.1", port=smtp_sink.port,
        from_email="alerts@edm.test", sending_rate=0, daily_quota=0,
    )  # fmt: skip
    set_config(alerts__email_service="alerts-mx")
    channel, _ = services.channel_create(
        name="on call", kind="email", target="oncall@example.org, lead@example.org"
    )
    notifications_queue(
        alert=_alert("No dispatcher heartbeat for 60 s"), event="fired", channels=[channel]
    )

    assert _deliver_due() == [True]

    received = smtp_sink.handler.messages
    assert len(received) == 1
    assert sorted(received[0].rcpt_tos) == ["lead@example.org", "oncall@example.org"]
    message = message_from_bytes(received[0].data)
    assert message["Subject"].startswith("[EDM critical] No dispatcher heartbeat for 60 s firing")
    assert message["Auto-Submitted"] == "auto-generated"
    assert "Value:     3" in message.get_payload()
    service = EmailService.objects.get(name="alerts-mx")
    assert service.quota_used_today == 1  # the send was charged like the dispatcher's


def test_an_email_service_that_is_busy_is_tried_again_when_it_is_free(smtp_sink, pool, set_config):
    service = EmailService.objects.create(
        pool=pool, name="slow-mx", host="127.0.0.1", port=smtp_sink.port,
        from_email="alerts@edm.test", sending_rate=30, daily_quota=0,
    )  # fmt: skip
    set_config(alerts__email_service="slow-mx")
    channel, _ = services.channel_create(name="mail", kind="email", target="a@example.org")
    notifications_queue(alert=_alert(), event="fired", channels=[channel])
    notifications_queue(
        alert=_alert("Backlog growing for 10 minutes"), event="fired", channels=[channel]
    )

    assert sorted(_deliver_due()) == [False, True]  # the second waits for sending_rate
    assert len(smtp_sink.handler.messages) == 1
    waiting = Notification.objects.get(status="pending")
    assert "busy" in waiting.last_error
    assert waiting.next_attempt_at > timezone.now() + timedelta(seconds=20)
    service.refresh_from_db()
    assert service.next_available_at > timezone.now() + timedelta(seconds=20)


def test_a_test_notification_is_sent_at_once(private_ok, http_receiver):
    channel, _ = services.channel_create(name="hook", kind="webhook", target=http_receiver.url)
    notification = services.channel_send_test(channel_id=channel.pk)
    assert notification.status == "sent"
    assert http_receiver.requests[0].json()["type"] == "alert.test"


def test_channel_targets_are_validated():
    with pytest.raises(Exception, match="not an e-mail address"):
        services.channel_create(name="x", kind="email", target="nobody")
    with pytest.raises(Exception, match="not a public address"):
        services.channel_create(name="y", kind="webhook", target="https://10.1.2.3/hook")
    with pytest.raises(Exception, match="kind must be one of"):
        services.channel_create(name="z", kind="pager", target="x")
    assert not NotificationChannel.objects.exists()


def test_channel_secrets_move_to_a_new_encryption_key(settings):
    from cryptography.fernet import Fernet

    channel, secret = services.channel_create(
        name="hook", kind="webhook", target="https://example.org/hook"
    )
    new_key = Fernet.generate_key().decode()
    settings.EDM_ENCRYPTION_KEYS = [new_key, *settings.EDM_ENCRYPTION_KEYS]
    from apps.services.management.commands.rotate_encryption_key import secrets_reencrypt

    assert secrets_reencrypt()["monitoring.notificationchannel.secret_encrypted"] == 1
    settings.EDM_ENCRYPTION_KEYS = [new_key]  # the old key is gone
    channel.refresh_from_db()
    assert channel.secret == secret
