"""Provider webhooks (django-anymail) and the generic signed JSON hook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook

from apps.contacts.models import Contact
from apps.deliverability.models import FeedbackEvent
from apps.dispatch.models import SubTask
from apps.dispatch.tests.helpers import queue_task

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
def sent(user, make_contacts, make_service):
    make_contacts(user, 2)
    make_service(port=2525)
    task = queue_task(user)
    return {s.to_email: s for s in SubTask.objects.filter(task=task)}


@pytest.fixture
def anymail_auth(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": "edm:hook-secret"}
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"edm:hook-secret").decode()}


MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


def _mailgun_bounce(subtask) -> dict:
    """A Mailgun "failed / permanent" tracking event, signed with the webhook key."""
    timestamp, token = str(int(time.time())), "9f5d3bdf0a2c4e2b8e5b2e0c9d1f7a6b3c4d5e6f7a8b9c0d1e"
    signature = hmac.new(
        MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": {
            "event": "failed",
            "severity": "permanent",
            "reason": "bounce",
            "id": "G9Bn5sl1TC6Rkj0JkEfP5A",
            "timestamp": float(timestamp),
            "recipient": subtask.to_email,
            "recipient-domain": "alice.test",
            "log-level": "error",
            "message": {
                "headers": {
                    "to": subtask.to_email,
                    "message-id": subtask.message_id.strip("<>"),
                    "from": "sender1@example.com",
                    "subject": "Hello Name1",
                },
                "attachments": [],
                "size": 2311,
            },
            "delivery-status": {
                "code": 550,
                "message": "5.1.1 The email account that you tried to reach does not exist.",
                "description": "",
                "attempt-no": 1,
            },
            "flags": {"is-routed": False, "is-authenticated": True, "is-test-mode": False},
        },
    }


@pytest.mark.django_db
def test_the_same_mailgun_bounce_event_twice_counts_once(client, settings, sent, anymail_auth):
    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
    subtask = sent["c1@alice.test"]
    payload = json.dumps(_mailgun_bounce(subtask))
    for _ in range(2):
        response = client.post(
            "/inbound/mailgun/tracking/",
            data=payload,
            content_type="application/json",
            **anymail_auth,
        )
        assert response.status_code == 200
    events = FeedbackEvent.objects.filter(kind="hard_bounce")
    assert events.count() == 1
    assert events.get().subtask_id == subtask.pk
    assert Contact.objects.get(email="c1@alice.test").status == "bounced"
    assert Contact.objects.get(email="c0@alice.test").status == "active"


@pytest.mark.django_db
def test_a_provider_webhook_without_its_credentials_is_refused(
    client, settings, sent, anymail_auth
):
    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
    signed_but_no_basic_auth = client.post(
        "/inbound/mailgun/tracking/",
        data=json.dumps(_mailgun_bounce(sent["c1@alice.test"])),
        content_type="application/json",
    )
    assert signed_but_no_basic_auth.status_code in (400, 401, 403)
    response = client.post(
        "/inbound/mailgun/tracking/", data="{}", content_type="application/json", **anymail_auth
    )
    assert response.status_code in (400, 401, 403)
    assert not FeedbackEvent.objects.exists()


def _signed(body: dict, msg_id: str = "msg_1") -> dict:
    data = json.dumps(body)
    now = int(time.time())
    from datetime import UTC, datetime

    signature = Webhook(SECRET).sign(msg_id, datetime.fromtimestamp(now, UTC), data)
    return {
        "data": data,
        "content_type": "application/json",
        "HTTP_WEBHOOK_ID": msg_id,
        "HTTP_WEBHOOK_TIMESTAMP": str(now),
        "HTTP_WEBHOOK_SIGNATURE": signature,
    }


@pytest.mark.django_db
def test_the_generic_signed_hook_records_a_complaint_once(client, settings, sent):
    settings.EDM_FEEDBACK_WEBHOOK_SECRET = SECRET
    subtask = sent["c0@alice.test"]
    body = {"type": "complaint", "id": "evt-1", "message_id": subtask.message_id}
    first = client.post("/inbound/generic/", **_signed(body))
    second = client.post("/inbound/generic/", **_signed(body, "msg_2"))
    assert first.json() == {"status": "ok", "matched": True, "new": True}
    assert second.json() == {"status": "ok", "matched": True, "new": False}
    assert FeedbackEvent.objects.filter(kind="complaint").count() == 1
    assert Contact.objects.get(email="c0@alice.test").status == "complained"


@pytest.mark.django_db
def test_the_generic_hook_refuses_bad_signatures_and_names_bad_fields(client, settings, sent):
    settings.EDM_FEEDBACK_WEBHOOK_SECRET = SECRET
    forged = _signed({"type": "complaint", "id": "e"})
    forged["HTTP_WEBHOOK_SIGNATURE"] = "v1," + base64.b64encode(b"x" * 32).decode()
    assert client.post("/inbound/generic/", **forged).status_code == 401
    response = client.post("/inbound/generic/", **_signed({"type": "opened", "id": "e"}))
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["type"]
    assert not FeedbackEvent.objects.exists()


@pytest.mark.django_db
def test_the_generic_hook_is_off_without_a_secret(client, settings):
    settings.EDM_FEEDBACK_WEBHOOK_SECRET = ""
    assert (
        client.post("/inbound/generic/", data="{}", content_type="application/json").status_code
        == 404
    )
