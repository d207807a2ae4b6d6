"""process_inbound on provider-format DSN and ARF files, mailto unsubscribes, and what
is kept for review."""

from __future__ import annotations

import io
import mailbox
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.contacts.models import Contact
from apps.deliverability import links
from apps.deliverability.models import FeedbackEvent, InboundMessage, Suppression
from apps.dispatch.models import SubTask
from apps.dispatch.tests.helpers import queue_task

DATA = Path(__file__).parent / "data"


def fill(name: str, subtask: SubTask) -> bytes:
    text = (DATA / name).read_text()
    return (
        text.replace("{{MESSAGE_ID}}", subtask.message_id)
        .replace("{{RECIPIENT}}", subtask.to_email)
        .encode()
    )


def run(**options) -> str:
    out = io.StringIO()
    call_command("process_inbound", stdout=out, **options)
    return out.getvalue()


@pytest.fixture
def sent(user, make_contacts, make_service):
    make_contacts(user, 4)
    make_service(port=2525)
    task = queue_task(user)
    SubTask.objects.filter(task=task).update(status="sent")
    return {s.to_email: s for s in SubTask.objects.filter(task=task).order_by("id")}


@pytest.mark.django_db
def test_a_gmail_dsn_and_a_yahoo_arf_mark_bounced_and_complained(tmp_path, user, sent):
    bounced, complained = sent["c1@alice.test"], sent["c2@alice.test"]
    (tmp_path / "1.eml").write_bytes(fill("gmail-dsn-hard.eml", bounced))
    (tmp_path / "2.eml").write_bytes(fill("yahoo-arf.eml", complained))

    assert run(folder=str(tmp_path)) == "process_inbound: 2 processed\n"

    status = dict(Contact.objects.values_list("email", "status"))
    assert status["c1@alice.test"] == "bounced"
    assert status["c2@alice.test"] == "complained"
    assert status["c0@alice.test"] == "active"
    kinds = dict(FeedbackEvent.objects.values_list("kind", "subtask_id"))
    assert kinds == {"hard_bounce": bounced.pk, "complaint": complained.pk}
    assert set(Suppression.objects.values_list("email", "reason")) == {
        ("c1@alice.test", "bounced"),
        ("c2@alice.test", "complained"),
    }
    # The same files again change nothing.
    assert run(folder=str(tmp_path)) == "process_inbound: 2 already seen\n"
    assert FeedbackEvent.objects.count() == 2


@pytest.mark.django_db
def test_a_bounce_of_no_message_of_ours_is_kept_for_review(tmp_path, sent):
    fake = SubTask(message_id="<1.abc.999999@example.com>", to_email="nobody@alice.test")
    (tmp_path / "x.eml").write_bytes(fill("gmail-dsn-hard.eml", fake))
    (tmp_path / "junk.eml").write_bytes(b"\x00\x01 not mail at all")
    (tmp_path / "hello.eml").write_bytes(b"From: a@b.example\r\nSubject: hi\r\n\r\nhello\r\n")
    out = run(folder=str(tmp_path))
    assert out == "process_inbound: 1 ignored, 1 unmatched, 1 unparsable\n"
    kept = {m.status: m for m in InboundMessage.objects.all()}
    assert "nobody@alice.test" in kept["unmatched"].detail
    assert bytes(kept["unparsable"].raw) == b"\x00\x01 not mail at all"
    assert not FeedbackEvent.objects.filter(owner__isnull=False).exists()
    assert set(Contact.objects.values_list("status", flat=True)) == {"active"}


@pytest.mark.django_db
def test_a_dsn_to_the_verp_address_is_matched_without_the_original_headers(
    tmp_path, settings, sent
):
    settings.EDM_BOUNCE_DOMAIN = "bounces.example.com"
    subtask = sent["c3@alice.test"]
    verp = links.return_path(subtask_id=subtask.pk, domain="bounces.example.com")
    raw = fill("gmail-dsn-hard.eml", subtask).decode()
    raw = raw.replace("Delivered-To: sender1@example.com", f"Delivered-To: {verp}")
    raw = raw.replace(subtask.message_id, "<elsewhere@mx.example.net>")
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    box.add(raw.encode())
    box.flush()
    assert run(mbox=str(tmp_path / "bounces.mbox")) == "process_inbound: 1 processed\n"
    assert Contact.objects.get(email="c3@alice.test").status == "bounced"


@pytest.mark.django_db
def test_mail_to_the_list_unsubscribe_mailto_unsubscribes(tmp_path, sent):
    subtask = sent["c0@alice.test"]
    address = links.mailto_unsubscribe(
        contact_id=subtask.contact_id, task_id=subtask.task_id, domain="example.com"
    )
    (tmp_path / "u.eml").write_bytes(
        f"From: c0@alice.test\r\nTo: {address}\r\nSubject: unsubscribe\r\n\r\n".encode()
    )
    assert run(folder=str(tmp_path)) == "process_inbound: 1 processed\n"
    assert Contact.objects.get(email="c0@alice.test").status == "unsubscribed"


@pytest.mark.django_db
def test_soft_bounces_count_toward_the_threshold(user, sent, set_config):
    from apps.deliverability import services
    from apps.deliverability.selectors import message_ref

    set_config(deliverability__soft_bounce_limit=2)
    subtask = sent["c0@alice.test"]
    ref = message_ref(message_id=subtask.message_id)
    assert services.feedback_record(kind="soft_bounce", ref=ref, source="t", event_key="s1")
    assert Contact.objects.get(email="c0@alice.test").status == "active"
    assert not services.feedback_record(kind="soft_bounce", ref=ref, source="t", event_key="s1")
    assert Contact.objects.get(email="c0@alice.test").status == "active"
    assert services.feedback_record(kind="soft_bounce", ref=ref, source="t", event_key="s2")
    assert Contact.objects.get(email="c0@alice.test").status == "bounced"


@pytest.mark.django_db
def test_bad_sources_are_command_errors(tmp_path):
    with pytest.raises(CommandError, match=r"--folder .*: not a folder"):
        run(folder=str(tmp_path / "missing"))
    with pytest.raises(CommandError, match=r"--mbox .*: no such file"):
        run(mbox=str(tmp_path / "missing.mbox"))
    with pytest.raises(CommandError, match="EDM_IMAP_PASSWORD"):
        run(imap="127.0.0.1")
