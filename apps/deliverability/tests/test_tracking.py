"""Open pixel, click redirects, machine opens and the task statistics."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from apps.deliverability import links, services
from apps.deliverability.models import TrackingEvent
from apps.deliverability.services import MessageRef
from apps.deliverability.tests.helpers import path_of
from apps.dispatch.tests.helpers import queue_task

HUMAN = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 (KHTML, like Gecko)"


def click_path(url, *, task_id=3, contact_id=5):
    return path_of(links.click_url(contact_id=contact_id, task_id=task_id, url=url))


@pytest.mark.django_db
def test_a_click_redirects_only_to_the_url_it_was_signed_for(client):
    good = click_path("https://shop.example.org/a")
    assert client.get(good).status_code == 302
    token = good.split("?")[0]
    evil = f"{token}?u={quote('https://evil.example.net/', safe='')}"
    response = client.get(evil)
    assert response.status_code == 404 and "Location" not in response
    assert client.get(token).status_code == 404  # no URL at all
    assert TrackingEvent.objects.filter(kind="click").count() == 1


@pytest.mark.django_db
def test_a_signed_non_http_url_does_not_redirect(client):
    assert client.get(click_path("javascript:alert(1)")).status_code == 404


@pytest.mark.django_db
def test_apple_privacy_prefetches_are_counted_apart(client):
    pixel = path_of(links.open_url(contact_id=5, task_id=3))
    client.get(pixel, HTTP_USER_AGENT=HUMAN)
    client.get(pixel, HTTP_USER_AGENT="Mozilla/5.0", REMOTE_ADDR="17.58.1.2")
    response = client.get(pixel.replace(".gif", "0.gif"))  # altered: still an image
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    assert list(TrackingEvent.objects.order_by("id").values_list("is_machine", flat=True)) == [
        False,
        True,
    ]


@pytest.mark.django_db
def test_task_stats_count_opens_clicks_links_and_feedback(
    api, other_api, user, make_contacts, make_service
):
    contacts = make_contacts(user, 3)
    make_service(port=2525)
    task = queue_task(user)
    a, b, c = (x.pk for x in contacts)
    for contact_id, kind, url, machine in [
        (a, "open", "", False),
        (a, "open", "", False),
        (b, "open", "", True),
        (a, "click", "https://x.example/1", False),
        (c, "click", "https://x.example/1", False),
        (c, "click", "https://x.example/2", False),
    ]:
        TrackingEvent.objects.create(
            task_id=task.pk, contact_id=contact_id, kind=kind, url=url, is_machine=machine
        )
    ref = MessageRef(owner_id=user.pk, contact_id=b, task_id=task.pk, email=contacts[1].email)
    assert services.feedback_record(kind="complaint", ref=ref, source="test", event_key="k1")
    services.contact_unsubscribe(contact_id=c, task_id=task.pk, source="test")

    stats = api.get(f"/api/tasks/{task.pk}/stats").json()
    assert stats == {
        "sent": 0,
        "opens": 2,
        "unique_opens": 2,
        "machine_opens": 1,
        "clicks": 3,
        "unique_clicks": 2,
        "links": [
            {"url": "https://x.example/1", "clicks": 2, "unique_clicks": 2},
            {"url": "https://x.example/2", "clicks": 1, "unique_clicks": 1},
        ],
        "unsubscribes": 1,
        "bounces": 0,
        "soft_bounces": 0,
        "complaints": 1,
    }
    assert other_api.get(f"/api/tasks/{task.pk}/stats").status_code == 404
