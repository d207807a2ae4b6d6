"""The public unsubscribe endpoint, the confirm page and the preferences page."""

from __future__ import annotations

import pytest

from apps.contacts.models import Contact, ContactTag, Tag
from apps.deliverability import links
from apps.deliverability.models import FeedbackEvent, Suppression
from apps.deliverability.tests.helpers import path_of

ONE_CLICK = "List-Unsubscribe=One-Click"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def contact(user):
    return Contact.objects.create(owner=user, email="ann@example.org", first_name="Ann")


def url_for(contact, task_id=7):
    return path_of(links.unsubscribe_url(contact_id=contact.pk, task_id=task_id))


def post(client, path, body=ONE_CLICK):
    return client.post(path, data=body, content_type=FORM)


def test_one_click_post_unsubscribes_once_and_is_idempotent(client, contact):
    first = post(client, url_for(contact))
    second = post(client, url_for(contact))
    assert (first.status_code, second.status_code) == (200, 200)
    assert "Location" not in first and b"You are unsubscribed" in first.content
    contact.refresh_from_db()
    assert contact.status == "unsubscribed"
    assert FeedbackEvent.objects.filter(kind="unsubscribe").count() == 1
    assert Suppression.objects.filter(email="ann@example.org").count() == 1


def test_one_click_needs_no_csrf_token_and_no_cookie(contact):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert post(strict, url_for(contact)).status_code == 200
    contact.refresh_from_db()
    assert contact.status == "unsubscribed"


def test_get_never_unsubscribes_it_shows_a_confirm_button(client, contact):
    for _ in range(3):
        response = client.get(url_for(contact))
        assert response.status_code == 200
    assert b'name="List-Unsubscribe" value="One-Click"' in response.content
    assert b"a***@example.org" in response.content  # the address, masked
    contact.refresh_from_db()
    assert contact.status == "active"
    assert not FeedbackEvent.objects.exists() and not Suppression.objects.exists()


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),  # altered MAC
        lambda t: "1" + t,  # altered contact id
        lambda t: t.rsplit(".", 1)[0],  # MAC removed
        lambda t: "zz." + t,  # extra part
        lambda t: "0.0." + "0" * 24,  # forged
    ],
)
def test_forged_or_altered_tokens_get_404_and_change_nothing(client, contact, mangle):
    token = links.unsubscribe_token(contact_id=contact.pk, task_id=7)
    bad = f"/u/{mangle(token)}"
    assert client.get(bad).status_code == 404
    assert post(client, bad).status_code == 404
    assert client.get(bad + "/preferences").status_code == 404
    contact.refresh_from_db()
    assert contact.status == "active" and not Suppression.objects.exists()


def test_a_post_without_the_one_click_body_is_refused(client, contact):
    response = post(client, url_for(contact), body="something=else")
    assert response.status_code == 400
    contact.refresh_from_db()
    assert contact.status == "active"


def test_an_open_token_cannot_be_replayed_as_an_unsubscribe_token(client, contact):
    pixel = links.open_url(contact_id=contact.pk, task_id=7)
    token = pixel.rsplit("/", 1)[1].removesuffix(".gif")
    assert post(client, f"/u/{token}").status_code == 404


def test_the_link_keeps_working_after_the_task_is_deleted(client, contact):
    # Tokens name the contact and the task id only: no task row is needed.
    assert post(client, url_for(contact, task_id=987654)).status_code == 200
    contact.refresh_from_db()
    assert contact.status == "unsubscribed"


def test_preferences_leave_one_tag_and_keep_the_others(client, user, contact):
    news, offers = (Tag.objects.create(owner=user, name=n) for n in ("News", "Offers"))
    ContactTag.objects.bulk_create(
        [ContactTag(tag=news, contact=contact), ContactTag(tag=offers, contact=contact)]
    )
    Tag.objects.filter(pk__in=[news.pk, offers.pk]).update(contact_count=1)
    path = url_for(contact) + "/preferences"
    page = client.get(path)
    assert b"News" in page.content and b"Offers" in page.content
    response = client.post(path, {"tag": [str(news.pk)], "save": "1"})
    assert response.status_code == 200 and b"saved" in response.content
    assert list(contact.tags.values_list("name", flat=True)) == ["News"]
    assert Tag.objects.get(pk=offers.pk).contact_count == 0
    contact.refresh_from_db()
    assert contact.status == "active"


def test_preferences_can_leave_everything(client, contact):
    response = client.post(url_for(contact) + "/preferences", {"everything": "1"})
    assert response.status_code == 200
    contact.refresh_from_db()
    assert contact.status == "unsubscribed"
