"""Messages as a real aiosmtpd server receives them from a real dispatcher: the
unsubscribe headers and links, DKIM, and suppression honoured at send time."""

from __future__ import annotations

import re

import dkim as dkimpy
import pytest

from apps.contacts.models import Contact
from apps.deliverability import dkim, services
from apps.deliverability.models import DkimKey, FeedbackEvent, Suppression
from apps.deliverability.tests.conftest import PUBLIC_URL
from apps.deliverability.tests.helpers import path_of, send_task
from apps.dispatch.models import SubTask
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done

pytestmark = pytest.mark.django_db(transaction=True)

_LINK = re.compile(r"<(https://[^>]+)>, <mailto:([^>?]+)\?subject=unsubscribe>")


def test_every_message_carries_one_click_list_unsubscribe_that_unsubscribes(
    user, api, make_contacts, make_service, smtp_sink, client
):
    contacts = make_contacts(user, 3)
    make_service(port=smtp_sink.port)
    task, progress, messages = send_task(user, smtp_sink)

    assert progress["sent"] == 3 and len(messages) == 3
    by_to = {m["To"].addresses[0].addr_spec: m for m in messages}
    first = by_to[contacts[0].email]
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = _LINK.fullmatch(first["List-Unsubscribe"]).groups()
    assert https.startswith(f"{PUBLIC_URL}/u/")
    assert re.fullmatch(r"unsubscribe\+[0-9a-f.]+@example\.com", mailto), mailto
    # Each recipient has a link of their own.
    links = {_LINK.fullmatch(m["List-Unsubscribe"])[1] for m in messages}
    assert len(links) == 3
    # The bodies carry the same link (a footer: the task's body does not use it).
    text = first.get_body(("plain",)).get_content()
    assert https in text

    response = client.post(
        path_of(https),
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    assert api.get(f"/api/contacts/{contacts[0].pk}/").json()["status"] == "unsubscribed"
    assert Contact.objects.get(pk=contacts[1].pk).status == "active"
    event = FeedbackEvent.objects.get(kind="unsubscribe")
    assert (event.contact_id, event.task_id) == (contacts[0].pk, task.pk)
    assert Suppression.objects.filter(owner=user, email=contacts[0].email).exists()


def test_tracked_html_links_go_through_signed_redirects_and_an_open_pixel(
    user, make_contacts, make_service, smtp_sink, client
):
    make_contacts(user, 1)
    make_service(port=smtp_sink.port)
    _, _, messages = send_task(
        user,
        smtp_sink,
        body_html='<p>Read <a href="https://shop.example.org/sale?a=1&amp;b=2">the sale</a></p>',
    )
    html = messages[0].get_body(("html",)).get_content()
    click = re.search(r'href="(https://edm\.example\.test/t/c/[^"]+)"', html)[1]
    pixel = re.search(r'src="(https://edm\.example\.test/t/o/[^"]+)"', html)[1]
    assert "shop.example.org" not in html.split("/t/c/")[0]
    response = client.get(path_of(click.replace("&amp;", "&")))
    assert response.status_code == 302
    assert response["Location"] == "https://shop.example.org/sale?a=1&b=2"
    assert client.get(path_of(pixel)).status_code == 200


def test_a_task_with_tracking_off_keeps_its_links_as_they_are(
    user, make_contacts, make_service, smtp_sink
):
    make_contacts(user, 1)
    make_service(port=smtp_sink.port)
    _, _, messages = send_task(
        user, smtp_sink, body_html='<a href="https://a.example.org/x">x</a>', tracking=False
    )
    html = messages[0].get_body(("html",)).get_content()
    assert 'href="https://a.example.org/x"' in html
    assert "/t/o/" not in html and "/u/" in html  # no pixel; the unsubscribe footer stays


def test_a_dkim_signed_message_verifies_with_dkimpy(user, make_contacts, make_service, smtp_sink):
    make_contacts(user, 2)
    service = make_service(port=smtp_sink.port)
    private = dkim.generate_private_key()
    key = DkimKey(domain="example.com", selector="edm2026", public_key=dkim.public_key_of(private))
    key.private_key = private
    key.save()
    assert private not in key.private_key_encrypted  # encrypted at rest
    _, progress, _ = send_task(user, smtp_sink)
    assert progress["sent"] == 2

    def dns(name, timeout=5):
        assert name == b"edm2026._domainkey.example.com."
        return f"v=DKIM1; k=rsa; p={key.public_key}".encode()

    for received in smtp_sink.handler.messages:
        assert received.data.startswith(b"DKIM-Signature: ")
        assert dkimpy.verify(received.data, dnsfunc=dns), received.data[:600]
        header = received.data.split(b"\r\n\r\n", 1)[0].decode()
        signed = re.search(r"h=([^;]+);", header.replace("\r\n", ""))[1]
        assert "list-unsubscribe : list-unsubscribe" in signed.replace("  ", " ")
        assert "list-unsubscribe-post" in signed
    # An altered message no longer verifies.
    tampered = smtp_sink.handler.messages[0].data.replace(b"Hello Name", b"Hello Nome", 1)
    assert not dkimpy.verify(tampered, dnsfunc=dns)
    assert service.pk  # signed through the domain key (no service key)


def test_a_suppression_added_after_queueing_skips_the_pending_subtask(
    user, make_contacts, make_service, smtp_sink
):
    contacts = make_contacts(user, 4)
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    assert SubTask.objects.filter(task=task, status="pending").count() == 4
    services.suppression_add(owner=user, email=contacts[0].email.upper(), actor=user)
    Contact.objects.filter(pk=contacts[1].pk).update(status="unsubscribed")

    with ThreadedDispatcher():
        progress = wait_done(task)

    assert (progress["sent"], progress["skipped"]) == (2, 2)
    received = {m.rcpt_tos[0] for m in smtp_sink.handler.messages}
    assert received == {contacts[2].email, contacts[3].email}
    reasons = dict(SubTask.objects.filter(task=task).values_list("contact_id", "error_class"))
    assert reasons[contacts[0].pk] == "suppressed"
    assert reasons[contacts[1].pk] == "unsubscribed"


def test_a_suppressed_domain_is_skipped_when_the_task_is_queued(
    user, make_contacts, make_service, smtp_sink
):
    make_contacts(user, 2)
    make_contacts(user, 1, prefix="other", tag="list")
    Contact.objects.filter(email="other0@alice.test").update(email="x@elsewhere.test")
    services.suppression_add(owner=user, domain="alice.test", actor=user)
    task = queue_task(user)
    statuses = dict(SubTask.objects.filter(task=task).values_list("to_email", "status"))
    assert statuses == {
        "c0@alice.test": "skipped",
        "c1@alice.test": "skipped",
        "x@elsewhere.test": "pending",
    }
    assert set(SubTask.objects.filter(status="skipped").values_list("error_class", flat=True)) == {
        "suppressed"
    }
