from __future__ import annotations

import re

import pytest
from django.db import transaction
from django.urls import reverse

from apps.core.services import tenant_create
from apps.events.models import Event, Projection, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from apps.events.services import event_append
from apps.events.webhooks import webhook_create, webhook_update

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/edm"


@pytest.fixture
def tenant(db):
    return tenant_create(username="tina", password="tina-long-password")[0]


@pytest.fixture
def rival(db):
    return tenant_create(username="rita", password="rita-long-password")[0]


def test_an_endpoint_added_in_the_admin_shows_its_secret_once_and_records_its_actor(client, tenant):
    client.force_login(tenant)
    response = client.post(
        reverse("admin:events_webhookendpoint_add"),
        {
            "url": URL,
            "description": "crm",
            "event_types": "task.*, contact.unsubscribed",
            "is_enabled": "on",
        },
        follow=True,
    )
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.owner == tenant and endpoint.event_types == ["task.*", "contact.unsubscribed"]
    assert endpoint.secret.startswith("whsec_")
    assert endpoint.secret in response.content.decode()
    assert endpoint.secret not in endpoint.secret_encrypted
    event = Event.objects.get(type="webhook.changed")
    assert (event.actor_id, event.owner_id, event.payload["action"]) == (
        tenant.pk,
        tenant.pk,
        "created",
    )


def test_an_unknown_event_type_is_refused_by_the_admin_form_naming_it(client, tenant):
    client.force_login(tenant)
    response = client.post(
        reverse("admin:events_webhookendpoint_add"),
        {"url": URL, "event_types": "task.exploded", "is_enabled": "on"},
    )
    assert response.status_code == 200
    assert "unknown event type" in response.content.decode() and "task.exploded" in (
        response.content.decode()
    )
    assert not WebhookEndpoint.objects.exists()


def test_the_audit_trail_of_an_object_says_who_changed_it_and_when(client, tenant, staff_user):
    endpoint, _ = webhook_create(owner=tenant, actor=tenant, url=URL, event_types=["*"])
    webhook_update(endpoint=endpoint, actor=staff_user, is_enabled=False)
    client.force_login(tenant)
    change = client.get(reverse("admin:events_webhookendpoint_change", args=[endpoint.pk]))
    trail_url = reverse("admin:events_webhookendpoint_audit_trail", args=[endpoint.pk])
    assert trail_url in change.content.decode()
    page = client.get(trail_url).content.decode()
    actors = re.findall(r'class="audit-actor">([^<]+)<', page)
    assert actors == ["operator", "tina"], "newest first: the operator's change"
    assert "webhook.changed" in page and "action=changed" in page and "action=created" in page


def test_a_tenant_reaches_neither_the_audit_trail_nor_the_events_of_another(client, tenant, rival):
    endpoint, _ = webhook_create(owner=rival, actor=rival, url=URL, event_types=["*"])
    with transaction.atomic():
        event_append("tag.created", owner=tenant, payload={"name": "mine"})
    client.force_login(tenant)
    trail = client.get(reverse("admin:events_webhookendpoint_audit_trail", args=[endpoint.pk]))
    assert trail.status_code == 404
    events = client.get(reverse("admin:events_event_changelist")).content.decode()
    assert "name=mine" in events and '<td class="field-type">webhook.changed' not in events
    assert '<td class="field-type">tag.created' in events
    other = Event.objects.get(type="webhook.changed")
    assert client.get(reverse("admin:events_event_change", args=[other.pk])).status_code == 404


def test_events_are_read_only_in_the_admin(client, staff_user, tenant):
    with transaction.atomic():
        event = event_append("tag.created", owner=tenant)
    client.force_login(staff_user)
    assert client.get(reverse("admin:events_event_add")).status_code == 403
    page = client.get(reverse("admin:events_event_change", args=[event.pk]))
    assert page.status_code == 200 and b'name="_save"' not in page.content
    client.post(reverse("admin:events_event_delete", args=[event.pk]), {"post": "yes"})
    assert Event.objects.filter(pk=event.pk).exists()


def test_the_replay_action_queues_a_delivery_again_with_the_same_webhook_id(client, tenant):
    endpoint, _ = webhook_create(owner=tenant, actor=tenant, url=URL, event_types=["*"])
    dead = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_id=1,
        event_uid="0b5c1a52-6f9e-4a55-9a53-3f1d7d3f8a10",
        event_type="task.completed",
        occurred_at="2026-12-01T12:00:00Z",
        body='{"type": "task.completed"}',
        status="dead",
        attempts=8,
    )
    client.force_login(tenant)
    client.post(
        reverse("admin:events_webhookdelivery_changelist"),
        {"action": "replay", "_selected_action": [dead.pk]},
    )
    dead.refresh_from_db()
    again = WebhookDelivery.objects.exclude(pk=dead.pk).get()
    assert (again.status, again.attempts, again.event_uid, again.body) == (
        "pending",
        0,
        dead.event_uid,
        dead.body,
    )
    assert Event.objects.filter(type="webhook.changed", payload__action="replayed").exists()


def test_operators_pause_resume_and_rebuild_projections_in_the_admin(client, staff_user, tenant):
    client.force_login(staff_user)
    url = reverse("admin:events_projection_changelist")
    page = client.get(url)
    assert page.status_code == 200 and b"owner_daily" in page.content
    for action in ("pause", "resume", "rebuild"):
        client.post(url, {"action": action, "_selected_action": ["owner_daily"]})
    assert Projection.objects.get(name="owner_daily").reset_at is not None
    assert list(
        Event.objects.filter(type__startswith="projection.").values_list("type", "actor_id")
    ) == [
        ("projection.paused", staff_user.pk),
        ("projection.resumed", staff_user.pk),
        ("projection.reset", staff_user.pk),
    ]
    client.force_login(tenant)
    assert client.get(url).status_code == 403


def test_a_delivery_page_lists_its_attempts(client, tenant):
    endpoint, _ = webhook_create(owner=tenant, actor=tenant, url=URL, event_types=["*"])
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event_id=1,
        event_uid="0b5c1a52-6f9e-4a55-9a53-3f1d7d3f8a11",
        event_type="task.completed",
        occurred_at="2026-12-01T12:00:00Z",
        body="{}",
    )
    WebhookAttempt.objects.create(
        delivery=delivery,
        endpoint=endpoint,
        ok=False,
        status_code=503,
        duration_ms=12.5,
        error="answered 503",
    )
    client.force_login(tenant)
    page = client.get(reverse("admin:events_webhookdelivery_change", args=[delivery.pk]))
    assert page.status_code == 200 and b"answered 503" in page.content
    listing = client.get(
        reverse("admin:events_webhookdelivery_changelist"), {"endpoint": endpoint.pk}
    )
    assert listing.status_code == 200 and b"task.completed" in listing.content


def test_an_audit_trail_lists_only_its_own_objects_events_not_those_of_an_equal_id(
    client, tenant, staff_user
):
    """Subjects of different types share ids (a task and an endpoint both #n): the trail
    of one never shows the other's events."""
    from apps.dispatch.models import Task
    from apps.services.models import Pool

    endpoint, _ = webhook_create(owner=tenant, actor=tenant, url=URL, event_types=["*"])
    pool = Pool.objects.get_or_create(name=Pool.DEFAULT_NAME)[0]
    task = Task.objects.create(
        pk=endpoint.pk, owner=tenant, pool=pool, name="Newsletter", subject="Hi"
    )
    with transaction.atomic():
        event_append("task.queued", owner=tenant, actor=tenant, subject=task, payload={"n": 1})
        event_append("task.paused", owner=tenant, actor=staff_user, subject=task, payload={})
    client.force_login(staff_user)
    trail = client.get(reverse("admin:events_webhookendpoint_audit_trail", args=[endpoint.pk]))
    page = trail.content.decode()
    assert trail.status_code == 200 and "webhook.changed" in page
    assert "task.queued" not in page and "task.paused" not in page
    all_events = re.search(r'href="([^"]+)">All events of this object', page).group(1)
    listed = client.get(all_events.replace("&amp;", "&")).content.decode()
    assert '<td class="field-type">webhook.changed' in listed
    assert '<td class="field-type">task.queued' not in listed
    task_trail = client.get(reverse("admin:dispatch_task_audit_trail", args=[task.pk]))
    task_page = task_trail.content.decode()
    assert "task.queued" in task_page and "task.paused" in task_page
    assert "webhook.changed" not in task_page
