"""The relay against a real PostgreSQL and a real HTTP receiver on loopback."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from standardwebhooks import Webhook

from apps.events import relay
from apps.events.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from apps.events.services import event_append
from apps.events.tests.conftest import append
from apps.events.webhooks import webhook_rotate_secret

pytestmark = pytest.mark.django_db(transaction=True)


def deliver_all(endpoint_id: int | None = None) -> relay.DeliverResult:
    total = relay.DeliverResult()
    for claimed in relay.endpoints_claim(limit=10):
        if endpoint_id is not None and claimed != endpoint_id:
            relay.endpoint_release(claimed)
            continue
        result = relay.endpoint_deliver(endpoint_id=claimed)
        relay.endpoint_release(claimed)
        total.delivered += result.delivered
        total.failed += result.failed
        total.dead += result.dead
        total.disabled |= result.disabled
    return total


def test_each_committed_event_reaches_the_receiver_signed_per_standard_webhooks(
    user, endpoint_for, http_receiver
):
    _endpoint, secret = endpoint_for(http_receiver.url)
    sent = [append("tag.created", user, name=f"t{i}") for i in range(3)]
    with pytest.raises(RuntimeError), transaction.atomic():
        event_append("tag.created", owner=user, payload={"name": "rolled back"})
        raise RuntimeError("the change fails")

    published = relay.events_publish()
    assert (published.events, published.deliveries) == (4, 4)  # webhook.changed + 3
    assert deliver_all().delivered == 4

    verifier = Webhook(secret)
    bodies = [verifier.verify(r.body, r.headers) for r in http_receiver.requests]
    tags = [b for b in bodies if b["type"] == "tag.created"]
    assert [b["data"]["name"] for b in tags] == ["t0", "t1", "t2"]
    assert [r.headers["webhook-id"] for r in http_receiver.requests[1:]] == [
        str(e.uid) for e in sent
    ]
    assert "rolled back" not in b"".join(r.body for r in http_receiver.requests).decode()
    assert set(tags[0]) >= {"type", "timestamp", "data"}
    assert not Event.objects.filter(published_at__isnull=True).exists()
    assert WebhookAttempt.objects.filter(ok=True).count() == 4


def test_a_receiver_answering_500_gets_retries_and_later_the_event_once(
    user, endpoint_for, http_receiver, config
):
    config("events.webhook_retry_delays", [30, 30])
    _endpoint, secret = endpoint_for(http_receiver.url, types=["tag.created"])
    http_receiver.statuses = [500, 500, 200]
    event = append("tag.created", user, name="x")
    relay.events_publish()

    def time_passes() -> None:  # the back-off's 30 s, without waiting for them
        WebhookDelivery.objects.update(next_attempt_at=timezone.now())

    assert deliver_all().failed == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=25)
    assert deliver_all().failed == 0, "not due yet: back-off"
    time_passes()
    assert deliver_all().failed == 1
    time_passes()
    assert deliver_all().delivered == 1
    assert deliver_all().delivered == 0

    assert len(http_receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in http_receiver.requests} == {str(event.uid)}
    Webhook(secret).verify(http_receiver.requests[-1].body, http_receiver.requests[-1].headers)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    log = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("id"))
    assert [(a.ok, a.status_code) for a in log] == [(False, 500), (False, 500), (True, 200)]
    assert all(a.duration_ms >= 0 for a in log) and "answered 500" in log[0].error


def test_a_failing_delivery_holds_back_the_later_events_of_its_endpoint(
    user, endpoint_for, http_receiver, config
):
    config("events.webhook_retry_delays", [0.3])
    endpoint_for(http_receiver.url, types=["tag.created"])
    http_receiver.statuses = [500, 500, 200]
    for i in range(3):
        append("tag.created", user, name=f"t{i}")
    relay.events_publish()
    deliver_all()
    assert len(http_receiver.requests) == 1
    time.sleep(0.35)
    deliver_all()  # the second attempt fails: the delivery is dead, the next ones go
    names = [r.json()["data"]["name"] for r in http_receiver.requests]
    assert names == ["t0", "t0", "t1", "t2"]
    assert list(WebhookDelivery.objects.order_by("event_id").values_list("status", flat=True)) == [
        "dead",
        "delivered",
        "delivered",
    ]


def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new_one(
    user, endpoint_for, http_receiver
):
    endpoint, old = endpoint_for(http_receiver.url, types=["tag.created"])
    endpoint, new = webhook_rotate_secret(endpoint=endpoint, actor=user, overlap=3600)
    append("tag.created", user, name="during")
    relay.events_publish()
    deliver_all()
    request = http_receiver.requests[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(request.body, request.headers)
    Webhook(new).verify(request.body, request.headers)

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_expires_at=timezone.now() - timedelta(seconds=1)
    )
    append("tag.created", user, name="after")
    relay.events_publish()
    deliver_all()
    request = http_receiver.requests[-1]
    Webhook(new).verify(request.body, request.headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(old).verify(request.body, request.headers)


def test_an_endpoint_that_keeps_failing_is_disabled_with_an_event(
    user, endpoint_for, http_receiver, config
):
    config("events.webhook_retry_delays", [0])
    config("events.webhook_disable_after", 3)
    endpoint, _ = endpoint_for(http_receiver.url, types=["tag.created"])
    http_receiver.statuses = [503]
    for i in range(3):
        append("tag.created", user, name=f"t{i}")
    relay.events_publish()
    for _ in range(3):
        deliver_all()
    endpoint.refresh_from_db()
    assert not endpoint.is_enabled and relay.AUTO_DISABLED_MARK in endpoint.disabled_reason
    disabled = Event.objects.get(type="webhook.disabled")
    assert (disabled.owner_id, disabled.actor_id, disabled.subject_id) == (
        user.pk,
        None,
        str(endpoint.pk),
    )
    assert len(http_receiver.requests) == 3
    append("tag.created", user, name="later")
    relay.events_publish()
    assert deliver_all().delivered == 0 and len(http_receiver.requests) == 3


def test_a_disabled_endpoint_fires_the_alert_until_it_is_enabled_again(
    user, endpoint_for, http_receiver, config
):
    from apps.events.webhooks import webhook_update
    from apps.monitoring.evaluation import rules_evaluate
    from apps.monitoring.models import Alert, AlertRule
    from apps.monitoring.services import rule_create

    # The migration seeds it; a transactional test before this one may have emptied it.
    rule = AlertRule.objects.filter(metric="webhook_auto_disabled").first() or rule_create(
        name="Webhook endpoint disabled after failures",
        metric="webhook_auto_disabled",
        comparison="gte",
        threshold=1,
        level="critical",
    )
    config("events.webhook_disable_after", 1)
    endpoint, _ = endpoint_for(http_receiver.url, types=["tag.created"])
    http_receiver.statuses = [500]
    append("tag.created", user, name="x")
    relay.events_publish()
    assert deliver_all().disabled
    rules_evaluate()
    alert = Alert.objects.get(rule=rule)
    assert (alert.status, alert.subject, alert.owner_id) == (
        "firing",
        f"webhook:{endpoint.pk}",
        user.pk,
    )
    webhook_update(endpoint=endpoint, actor=user, is_enabled=True)
    rules_evaluate()
    assert Alert.objects.get(rule=rule).status == "resolved"


def test_a_url_resolving_to_loopback_is_refused_in_production_mode(
    settings, user, http_receiver, config
):
    from apps.events.webhooks import webhook_create

    settings.DEBUG = False
    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = False
    settings.EDM_OUTBOUND_HTTPS_ONLY = True
    port = http_receiver.url.split(":")[2].split("/")[0]
    _endpoint, _ = webhook_create(
        owner=user, actor=user, url=f"https://localhost:{port}/hook", event_types=["*"]
    )
    with pytest.raises(Exception, match="not a public address"):
        webhook_create(owner=user, actor=user, url=f"https://127.0.0.1:{port}/", event_types=["*"])
    append("tag.created", user, name="x")
    relay.events_publish()
    assert deliver_all().failed == 1
    attempt = WebhookAttempt.objects.get()
    assert "resolves to 127.0.0.1" in attempt.error or "not a public address" in attempt.error
    assert http_receiver.requests == []


def test_two_relays_at_once_publish_each_event_once(user, endpoint_for, http_receiver):
    endpoint_for(http_receiver.url, types=["tag.created"])
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO events_event (type, owner_id, payload) "
            "SELECT 'tag.created', %s, jsonb_build_object('n', n) FROM generate_series(1, 3000) n",
            [user.pk],
        )
    published: list[int] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait()
            while (result := relay.events_publish(limit=100)).events:
                published.append(result.events)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(published) == 3000 + 1  # and the endpoint's webhook.changed
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT event_id) FROM events_webhookdelivery")
        assert cursor.fetchone() == (3000, 3000)
    assert not Event.objects.filter(published_at__isnull=True).exists()


def test_published_events_past_the_retention_are_pruned(user, config):
    config("events.retention", 3600)
    old = append("tag.created", user, name="old")
    fresh = append("tag.created", user, name="fresh")
    unpublished = append("tag.created", user, name="unpublished")
    Event.objects.filter(pk__in=[old.pk, unpublished.pk]).update(
        occurred_at=timezone.now() - timedelta(hours=2)
    )
    Event.objects.filter(pk__in=[old.pk, fresh.pk]).update(published_at=timezone.now())
    assert relay.events_prune() == 1
    tags = Event.objects.filter(type="tag.created")  # besides config.changed
    assert set(tags.values_list("pk", flat=True)) == {fresh.pk, unpublished.pk}


def test_at_the_configuration_maxima_the_relay_still_publishes_delivers_and_prunes(
    user, endpoint_for, http_receiver, config
):
    from apps.config.registry import KEYS, MAX_DELAY
    from apps.events import projections

    for name, key in KEYS.items():
        if name.startswith("events.") and key.max is not None:
            config(name, key.max)
    config("events.webhook_retry_delays", [MAX_DELAY] * 100)
    endpoint_for(http_receiver.url, types=["tag.created"])
    http_receiver.statuses = [500, 200]
    append("tag.created", user, name="x")
    relay.events_publish()
    assert deliver_all().failed == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.next_attempt_at > timezone.now() + timedelta(days=29)
    assert relay.events_prune() == 0
    for name in projections.PROJECTIONS:
        projections.projection_catch_up(name=name)
    assert relay.publish_lag_seconds() == 0.0
