"""Admin pages: a smoke test per page and action, the DNS check against a real DNS
server on loopback, and the DKIM key form."""

from __future__ import annotations

import io
import socket
import threading

import dns.message
import dns.rrset
import pytest
from django.urls import reverse

from apps.contacts.models import Contact
from apps.deliverability import dkim, services
from apps.deliverability import dns as dns_check
from apps.deliverability.models import DkimKey, InboundMessage, Suppression

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, staff_user):
    client.force_login(staff_user)
    return client


class LoopbackDNS:
    """A UDP DNS server on 127.0.0.1 answering TXT questions from a dict."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text().rstrip(".")
            values = self.records.get(name)
            if values is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                # A TXT string holds 255 octets: longer values are several strings.
                quoted = [
                    " ".join(f'"{v[i : i + 255]}"' for i in range(0, len(v), 255)) for v in values
                ]
                response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT", *quoted))
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_suppression_pages_list_add_import_export_and_lift(operator_client, user):
    contact = Contact.objects.create(owner=user, email="ann@example.org")
    services.contact_unsubscribe(contact_id=contact.pk, task_id=None, source="one-click")
    base = "/admin/deliverability/suppression/"
    page = operator_client.get(base)
    assert page.status_code == 200 and b"ann@example.org" in page.content
    assert operator_client.get(base + "add/").status_code == 200
    added = operator_client.post(base + "add/", {"domain": "junk.example", "reason": "manual"})
    assert added.status_code == 302
    assert Suppression.objects.filter(domain="junk.example").exists()
    upload = io.BytesIO(b"email\nz@x.example\n")
    upload.name = "s.csv"
    assert operator_client.post(base + "import/", {"file": upload}).status_code == 302
    exported = operator_client.get(base + "export/")
    assert b"z@x.example" in exported.content
    entry = Suppression.objects.get(email="ann@example.org")
    lift_url = reverse("admin:deliverability_suppression_lift", args=[entry.pk])
    assert operator_client.get(lift_url).status_code == 200
    assert operator_client.post(lift_url, {"reason": "re-subscribed on paper"}).status_code == 302
    contact.refresh_from_db()
    assert contact.status == "active"


def test_feedback_inbound_and_stats_pages_render(operator_client, user, make_contacts):
    from apps.dispatch.tests.helpers import queue_task

    make_contacts(user, 1)
    from apps.deliverability.tests.conftest import PUBLIC_URL  # noqa: F401

    task = queue_task(user)
    contact = Contact.objects.get()
    services.contact_unsubscribe(contact_id=contact.pk, task_id=task.pk, source="one-click")
    from apps.deliverability.inbound import inbound_message_process

    stored = inbound_message_process(raw=b"From: x@y.example\r\n\r\nhello", source="test")
    assert operator_client.get("/admin/deliverability/feedbackevent/").status_code == 200
    stats = operator_client.get(f"/admin/deliverability/feedbackevent/task/{task.pk}/")
    assert stats.status_code == 200 and b"Unsubscribes" in stats.content
    assert operator_client.get("/admin/deliverability/inboundmessage/").status_code == 200
    detail = operator_client.get(f"/admin/deliverability/inboundmessage/{stored.pk}/change/")
    assert detail.status_code == 200 and b"hello" in detail.content
    operator_client.post(
        "/admin/deliverability/inboundmessage/",
        {"action": "mark_reviewed", "_selected_action": [stored.pk]},
    )
    assert InboundMessage.objects.get().reviewed


def test_a_generated_dkim_key_is_stored_encrypted_and_checked_in_dns(operator_client, settings):
    response = operator_client.post(
        "/admin/deliverability/dkimkey/add/",
        {"domain": "Example.COM", "selector": "edm1", "is_enabled": "on"},
    )
    assert response.status_code == 302, response.content[:2000]
    key = DkimKey.objects.get()
    assert key.domain == "example.com" and "PRIVATE KEY" in key.private_key
    assert "PRIVATE" not in key.private_key_encrypted
    assert key.public_key == dkim.public_key_of(key.private_key)

    server = LoopbackDNS(
        {
            "example.com": ["v=spf1 ip4:192.0.2.0/24 -all"],
            "edm1._domainkey.example.com": [f"v=DKIM1; k=rsa; p={key.public_key}"],
        }
    )
    settings.EDM_DNS_NAMESERVER = f"127.0.0.1:{server.port}"
    try:
        page = operator_client.get(f"/admin/deliverability/dkimkey/{key.pk}/dns/")
    finally:
        server.close()
    assert page.status_code == 200
    rows = {r.kind: r.status for r in page.context["records"]}
    assert rows == {"SPF": "ok", "DKIM": "ok", "DMARC": "missing"}


def test_the_dns_check_says_so_when_dns_is_unreachable(operator_client, settings, monkeypatch):
    monkeypatch.setattr(dns_check, "TIMEOUT", 0.2)
    key = DkimKey(domain="example.com", selector="s", public_key="x")
    key.private_key = dkim.generate_private_key()
    key.save()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # a port that never answers
    settings.EDM_DNS_NAMESERVER = f"127.0.0.1:{sock.getsockname()[1]}"
    try:
        page = operator_client.get(f"/admin/deliverability/dkimkey/{key.pk}/dns/")
    finally:
        sock.close()
    assert {r.status for r in page.context["records"]} == {"unreachable"}


def test_a_pasted_key_that_is_not_pem_is_refused(operator_client):
    response = operator_client.post(
        "/admin/deliverability/dkimkey/add/",
        {"domain": "example.com", "selector": "s", "private_key_pem": "hello"},
    )
    assert response.status_code == 200 and b"not a PEM private key" in response.content
    assert not DkimKey.objects.exists()


def test_a_tenant_sees_only_their_own_suppressions(client, user, other_user):
    user.is_staff = True
    user.save()
    services.suppression_add(owner=user, email="mine@x.example")
    services.suppression_add(owner=other_user, email="theirs@x.example")
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="deliverability"))
    client.force_login(user)
    page = client.get("/admin/deliverability/suppression/")
    assert b"mine@x.example" in page.content and b"theirs@x.example" not in page.content
    assert client.get("/admin/deliverability/inboundmessage/").status_code == 403


def test_a_bad_suppression_in_the_admin_form_names_the_field(operator_client):
    response = operator_client.post(
        "/admin/deliverability/suppression/add/", {"email": "nope", "reason": "manual"}
    )
    assert response.status_code == 200 and b"is not a valid e-mail address" in response.content
    assert not Suppression.objects.exists()
