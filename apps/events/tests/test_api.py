"""/api/webhooks/ and /api/reports/ end to end."""

from __future__ import annotations

import datetime

import pytest

from apps.events import projections, relay
from apps.events.models import Event, WebhookDelivery, WebhookEndpoint
from apps.events.tests.conftest import append

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/edm"


def create(api, **extra):
    return api.post(
        "/api/webhooks/", {"url": URL, "event_types": ["task.*"], **extra}, format="json"
    )


def test_registering_an_endpoint_answers_its_secret_once(api, user):
    response = create(api)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["secret"].startswith("whsec_") and body["event_types"] == ["task.*"]
    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert endpoint.owner == user and endpoint.secret == body["secret"]
    again = api.get(f"/api/webhooks/{body['id']}/").json()
    assert "secret" not in again and body["secret"] not in str(again)
    assert Event.objects.get(type="webhook.changed").actor_id == user.pk


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ({"url": "ftp://x.example.com/"}, "url", "https://"),
        ({"url": "https://10.0.0.1/hook"}, "url", "not a public address"),
        ({"event_types": ["task.exploded"]}, "event_types", "unknown event type"),
        ({"event_types": []}, "event_types", "at least one"),
        ({"include_system": True}, "include_system", "only operators"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, payload, field, reason):
    response = create(api, **payload)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}
    assert reason in " ".join(body["errors"][field])
    assert not WebhookEndpoint.objects.exists()


def test_a_tenant_never_sees_another_tenants_endpoint(api, other_api):
    endpoint_id = create(api).json()["id"]
    assert other_api.get("/api/webhooks/").json()["results"] == []
    for method, url in [
        ("get", f"/api/webhooks/{endpoint_id}/"),
        ("patch", f"/api/webhooks/{endpoint_id}/"),
        ("delete", f"/api/webhooks/{endpoint_id}/"),
        ("post", f"/api/webhooks/{endpoint_id}/rotate-secret"),
        ("get", f"/api/webhooks/{endpoint_id}/deliveries/"),
    ]:
        response = getattr(other_api, method)(url, {}, format="json")
        assert response.status_code == 404, (method, url)
        assert response.json()["code"] == "not_found"
    assert WebhookEndpoint.objects.filter(pk=endpoint_id, is_enabled=True).exists()


def test_changing_rotating_and_deleting_an_endpoint(api, user):
    endpoint_id = create(api).json()["id"]
    changed = api.patch(
        f"/api/webhooks/{endpoint_id}/", {"event_types": ["*"], "is_enabled": False}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["event_types"] == ["*"]
    old = WebhookEndpoint.objects.get(pk=endpoint_id).secret
    rotated = api.post(
        f"/api/webhooks/{endpoint_id}/rotate-secret", {"overlap_seconds": 60}, format="json"
    ).json()
    endpoint = WebhookEndpoint.objects.get(pk=endpoint_id)
    assert rotated["secret"] == endpoint.secret != old and endpoint.previous_secret == old
    assert rotated["previous_secret_expires_at"]
    assert api.delete(f"/api/webhooks/{endpoint_id}/").status_code == 204
    assert not WebhookEndpoint.objects.exists()
    actions = list(
        Event.objects.filter(type="webhook.changed").values_list("payload__action", "actor_id")
    )
    assert actions == [
        ("created", user.pk),
        ("changed", user.pk),
        ("secret_rotated", user.pk),
        ("deleted", user.pk),
    ]


def test_the_delivery_log_lists_attempts_and_a_delivery_can_be_replayed(api, other_api, user):
    endpoint_id = create(api, event_types=["tag.created"]).json()["id"]
    append("tag.created", user, name="t")
    relay.events_publish()
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="dead", attempts=8)
    log = api.get(f"/api/webhooks/{endpoint_id}/deliveries/", {"status": "dead"}).json()
    assert [d["id"] for d in log["results"]] == [delivery.pk]
    assert log["results"][0]["webhook_id"] == str(delivery.event_uid)
    detail = api.get(f"/api/webhooks/deliveries/{delivery.pk}/").json()
    assert detail["attempt_log"] == [] and '"tag.created"' in detail["body"]
    assert other_api.get(f"/api/webhooks/deliveries/{delivery.pk}/").status_code == 404
    assert other_api.post(f"/api/webhooks/deliveries/{delivery.pk}/replay").status_code == 404
    replay = api.post(f"/api/webhooks/deliveries/{delivery.pk}/replay")
    assert replay.status_code == 202 and replay.json() == {"queued": 1}
    assert WebhookDelivery.objects.filter(status="pending", event_uid=delivery.event_uid).exists()
    bad = api.get(f"/api/webhooks/{endpoint_id}/deliveries/", {"status": "lost"})
    assert bad.status_code == 400 and "status" in bad.json()["errors"]
    unknown = api.get(f"/api/webhooks/{endpoint_id}/deliveries/", {"colour": "red"})
    assert unknown.status_code == 400 and "colour" in unknown.json()["errors"]


@pytest.mark.django_db(transaction=True)  # the projections read committed events only
def test_reports_read_the_projections_a_tenant_its_own(api, other_api, user, other_user):
    append("task.queued", user, recipients=3, task_id=11)
    append("subtask.sent", user, task_id=11)
    append("subtask.sent", other_user, task_id=12)
    for name in projections.PROJECTIONS:
        projections.projection_catch_up(name=name)
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    rows = api.get("/api/reports/daily", {"start": today, "end": today}).json()["results"]
    assert [(r["owner_id"], r["day"], r["queued"], r["sent"]) for r in rows] == [
        (user.pk, today, 3, 1)
    ]
    # Task 11 is no task of the caller's (its rows come from events alone here): 404. A
    # real task's report: test_reports_from_dispatch.
    assert api.get("/api/reports/tasks/11/daily").status_code == 404
    bad = api.get("/api/reports/daily", {"start": "2026-12-02", "end": "2026-12-01"})
    assert bad.status_code == 400 and "end" in bad.json()["errors"]


def test_projections_are_listed_paused_resumed_and_rebuilt_by_operators_only(
    api, staff_api, user, staff_user
):
    append("subtask.sent", user, task_id=1)
    assert api.get("/api/reports/projections/").status_code == 403
    assert api.post("/api/reports/projections/owner_daily/pause").status_code == 403
    listed = {p["name"]: p for p in staff_api.get("/api/reports/projections/").json()}
    assert set(listed) == set(projections.PROJECTIONS) and listed["owner_daily"]["lag_seconds"] >= 0
    paused = staff_api.post("/api/reports/projections/owner_daily/pause").json()
    assert paused["status"] == "paused"
    assert (
        staff_api.post("/api/reports/projections/owner_daily/resume").json()["status"] == "running"
    )
    projections.projection_catch_up(name="owner_daily")
    rebuilt = staff_api.post("/api/reports/projections/owner_daily/rebuild").json()
    assert rebuilt["consumed"] == 0 and rebuilt["position"] == {"txid": 0, "id": 0}
    assert staff_api.post("/api/reports/projections/nope/pause").status_code == 404
    assert list(
        Event.objects.filter(type__startswith="projection.").values_list("type", "actor_id")
    ) == [
        ("projection.paused", staff_user.pk),
        ("projection.resumed", staff_user.pk),
        ("projection.reset", staff_user.pk),
    ]
