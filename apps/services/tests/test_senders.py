"""The sender interface against real SMTP servers (aiosmtpd on loopback)."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import threading
import time

import pytest

from apps.core.smtp_sink import SinkHandler, start_sink
from apps.services.senders import (
    ConsoleSender,
    FileSender,
    SendError,
    SMTPSender,
    Withdrawn,
    sender_for,
)
from apps.services.tests.conftest import SMTP_PASSWORD, SMTP_USER, EmailServiceFactory

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n"


def test_smtp_sender_delivers_and_reuses_one_connection(smtp_sink):
    sender = SMTPSender(host="127.0.0.1", port=smtp_sink.port)
    sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    sender.send(from_addr="a@example.com", to_addrs=["c@example.com"], message=MESSAGE)
    sender.close()
    messages = smtp_sink.handler.messages
    assert [m.rcpt_tos for m in messages] == [["b@example.com"], ["c@example.com"]]
    assert messages[0].peer_port == messages[1].peer_port  # same connection


def test_a_refused_recipient_is_permanent_and_a_deferred_one_transient(smtp_sink):
    smtp_sink.handler.reject = {
        "gone@example.com": "550 5.1.1 no such user",
        "later@example.com": "451 4.3.0 try again",
    }
    sender = SMTPSender(host="127.0.0.1", port=smtp_sink.port)
    with pytest.raises(SendError) as gone:
        sender.send(from_addr="a@example.com", to_addrs=["gone@example.com"], message=MESSAGE)
    with pytest.raises(SendError) as later:
        sender.send(from_addr="a@example.com", to_addrs=["later@example.com"], message=MESSAGE)
    sender.close()
    assert (gone.value.kind, gone.value.code, gone.value.error_class) == (
        "permanent",
        550,
        "smtp_550",
    )
    assert "no such user" in gone.value.message
    assert (later.value.kind, later.value.code) == ("transient", 451)


def test_a_throttling_reply_is_throttled(smtp_sink):
    smtp_sink.handler.reject = {"slow@example.com": "450 4.7.0 rate limited"}
    sender = SMTPSender(host="127.0.0.1", port=smtp_sink.port)
    with pytest.raises(SendError) as caught:
        sender.send(from_addr="a@example.com", to_addrs=["slow@example.com"], message=MESSAGE)
    sender.close()
    assert caught.value.kind == "throttled"


def test_login_with_the_right_password_sends(smtp_auth_server):
    sender = SMTPSender(
        host="127.0.0.1", port=smtp_auth_server.port, username=SMTP_USER, password=SMTP_PASSWORD
    )
    sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    sender.close()
    assert len(smtp_auth_server.handler.messages) == 1


def test_a_wrong_password_is_a_service_fault(smtp_auth_server):
    sender = SMTPSender(
        host="127.0.0.1", port=smtp_auth_server.port, username=SMTP_USER, password="wrong"
    )
    with pytest.raises(SendError) as caught:
        sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    assert caught.value.kind == "service"
    assert caught.value.code == 535
    assert "authentication refused" in caught.value.message
    assert "wrong" not in caught.value.message  # the password is never echoed
    assert smtp_auth_server.handler.messages == []


def test_sending_without_login_to_a_server_that_requires_it_is_a_service_fault(
    smtp_auth_server,
):
    sender = SMTPSender(host="127.0.0.1", port=smtp_auth_server.port)
    with pytest.raises(SendError) as caught:
        sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    sender.close()
    assert (caught.value.kind, caught.value.code) == ("service", 530)


def test_a_refused_connection_is_a_service_fault(closed_port):
    sender = SMTPSender(host="127.0.0.1", port=closed_port, timeout=2)
    with pytest.raises(SendError) as caught:
        sender.open()
    assert caught.value.kind == "service"
    assert f"cannot connect to 127.0.0.1:{closed_port}" in caught.value.message


def test_starttls_against_a_server_without_it_is_a_service_fault(smtp_sink):
    sender = SMTPSender(host="127.0.0.1", port=smtp_sink.port, security="starttls")
    with pytest.raises(SendError) as caught:
        sender.open()
    assert caught.value.kind == "service"
    assert "STARTTLS" in caught.value.message or "not supported" in caught.value.message


def test_an_untrusted_tls_certificate_is_a_service_fault(smtp_tls_server):
    sender = SMTPSender(host="127.0.0.1", port=smtp_tls_server.port, security="starttls", timeout=5)
    with pytest.raises(SendError) as caught:
        sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    assert caught.value.kind == "service"
    assert caught.value.message.startswith("TLS failure")
    assert "certificate verify failed" in caught.value.message
    assert smtp_tls_server.handler.messages == []


def test_a_dropped_connection_is_transient_and_the_next_send_reconnects(smtp_sink):
    sender = SMTPSender(host="127.0.0.1", port=smtp_sink.port)
    sender.open()
    sender.connection.sock.shutdown(socket.SHUT_RDWR)  # the server (or a NAT) dropped us
    with pytest.raises(SendError) as caught:
        sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    assert caught.value.kind == "transient"
    sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    sender.close()
    assert len(smtp_sink.handler.messages) == 1


def test_verify_checks_login_and_envelope_sender_without_sending(smtp_auth_server):
    good = SMTPSender(
        host="127.0.0.1", port=smtp_auth_server.port, username=SMTP_USER, password=SMTP_PASSWORD
    )
    good.verify(from_addr="a@example.com")
    assert good.connection is None  # closed again
    anonymous = SMTPSender(host="127.0.0.1", port=smtp_auth_server.port)
    with pytest.raises(SendError) as caught:
        anonymous.verify(from_addr="a@example.com")
    assert (caught.value.kind, caught.value.code) == ("service", 530)
    assert smtp_auth_server.handler.messages == []


def test_file_sender_writes_one_eml_per_message(tmp_path):
    sender = FileSender(tmp_path / "out")
    sender.open()
    sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    sender.close()
    files = list((tmp_path / "out").glob("*.eml"))
    assert [f.read_bytes() for f in files] == [MESSAGE]


def test_file_sender_that_cannot_write_is_a_service_fault(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SendError, match="cannot create") as caught:
        FileSender(blocker / "sub").open()
    assert caught.value.kind == "service"


def test_console_sender_prints_the_message(capsys):
    sender = ConsoleSender()
    sender.open()
    sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    assert "Subject: hi" in capsys.readouterr().out


@pytest.mark.django_db
def test_sender_for_builds_the_sender_of_each_kind(settings, tmp_path):
    settings.EDM_SINK_DIR = tmp_path
    smtp = EmailServiceFactory(username="u", password="p", port=2526)
    assert isinstance(sender_for(smtp), SMTPSender)
    assert (sender_for(smtp).port, sender_for(smtp).password) == (2526, "p")
    file_service = EmailServiceFactory(kind="file")
    assert sender_for(file_service).directory == tmp_path / f"service-{file_service.pk}"
    assert isinstance(sender_for(EmailServiceFactory(kind="console")), ConsoleSender)


@pytest.mark.django_db
def test_sender_for_a_password_the_key_cannot_read_is_a_service_fault(settings):
    service = EmailServiceFactory(username="u", password="p")
    from cryptography.fernet import Fernet

    settings.EDM_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(SendError, match="cannot be decrypted") as caught:
        sender_for(service)
    assert caught.value.kind == "service"


def test_smtplib_is_what_reports_the_auth_codes():
    # Guards the mapping above: smtplib raises this class for 535.
    assert issubclass(smtplib.SMTPAuthenticationError, smtplib.SMTPResponseException)


def test_the_fast_transaction_stuffs_dots_and_fixes_line_ends(smtp_sink):
    """The one-recipient path writes the SMTP commands itself: a line starting with "."
    must arrive intact (dot stuffing), bare LF and CR become CRLF, a message without a
    final line break is terminated, as smtplib.sendmail would do."""
    message = b"Subject: dots\r\n\r\n.hidden line\r\n..two\nbare lf\rbare cr\r\nlast"
    sender = SMTPSender(host="127.0.0.1", port=smtp_sink.port)
    sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=message)
    sender.send(from_addr="a@example.com", to_addrs=["c@example.com"], message=MESSAGE)
    sender.close()
    first, second = smtp_sink.handler.messages
    assert (
        first.data
        == b"Subject: dots\r\n\r\n.hidden line\r\n..two\r\nbare lf\r\nbare cr\r\nlast\r\n"
    )
    assert (first.mail_from, first.rcpt_tos) == ("a@example.com", ["b@example.com"])
    assert second.data == MESSAGE and second.peer_port == first.peer_port


def test_addresses_that_are_not_plain_ascii_go_through_sendmail(smtp_sink):
    sender = SMTPSender(host="127.0.0.1", port=smtp_sink.port)
    sender.send(
        from_addr="a@example.com", to_addrs=["b@example.com", "c@example.com"], message=MESSAGE
    )
    sender.send(from_addr="a@example.com", to_addrs=['"odd name"@example.com'], message=MESSAGE)
    sender.close()
    assert [m.rcpt_tos for m in smtp_sink.handler.messages] == [
        ["b@example.com", "c@example.com"],
        ['"odd name"@example.com'],
    ]


class _ScriptedServer:
    """A one-connection SMTP server answering from a script: multi-line and split
    replies, which aiosmtpd never sends after EHLO."""

    def __init__(self, replies: list[bytes]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.replies = replies
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 scripted\r\n")
            lines.readline()  # EHLO
            conn.sendall(b"250-scripted\r\n250 8BITMIME\r\n")
            for reply in self.replies:
                line = lines.readline()
                self.received.append(line)
                if line == b"DATA\r\n":
                    conn.sendall(b"354 go ahead\r\n")
                    while lines.readline() != b".\r\n":
                        pass
                    line = b"<data>"
                for piece in reply.split(b"|"):  # "|": send in two segments
                    conn.sendall(piece)
                    time.sleep(0.02)
        self.listener.close()


def test_multi_line_and_split_replies_are_read_whole():
    server = _ScriptedServer(
        [
            b"250-sender ok\r\n250 fine|\r\n",
            b"25|0 recipient ok\r\n",
            b"550-5.7.1 rejected\r\n550-see the policy\r\n550 5.7.1 bye\r\n",
        ]
    )
    sender = SMTPSender(host="127.0.0.1", port=server.port)
    with pytest.raises(SendError) as caught:
        sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    assert (caught.value.kind, caught.value.code) == ("permanent", 550)
    # The whole reply, its code first: what the subtask and the dead-letter queue keep.
    assert caught.value.message == "550 5.7.1 rejected\nsee the policy\n5.7.1 bye"
    assert server.received[:2] == [
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
    ]
    sender._drop()


def test_a_server_that_stops_answering_times_out():
    """Plain sockets run blocking with the kernel's timeouts: a silent server still ends
    in a transient error after the sender's timeout."""
    server = _ScriptedServer([b"", b"", b""])  # never answers MAIL FROM
    sender = SMTPSender(host="127.0.0.1", port=server.port, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(SendError) as caught:
        sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    assert caught.value.kind == "transient"
    assert 0.4 < time.monotonic() - started < 3
    assert sender.connection is None  # dropped: the next send reconnects


@pytest.mark.parametrize("after_data", [[b""], [b"", b""]], ids=["closes", "silent"])
def test_no_answer_to_the_final_dot_is_ambiguous_not_transient(after_data):
    """Once the whole message and its final "." went out, a server that closes the
    connection or stays silent may have accepted it: the error says ``ambiguous`` (a
    retry could deliver it twice), and the connection is dropped."""
    server = _ScriptedServer([b"250 ok\r\n", b"250 ok\r\n", *after_data])
    sender = SMTPSender(host="127.0.0.1", port=server.port, timeout=0.5)
    with pytest.raises(SendError) as caught:
        sender.send(from_addr="a@example.com", to_addrs=["b@example.com"], message=MESSAGE)
    assert caught.value.kind == "ambiguous" and caught.value.error_class == "ambiguous"
    # The server answers (or closes) only once it has read the final ".".
    assert server.received[2] == b"DATA\r\n"
    assert sender.connection is None


@pytest.mark.parametrize("after_data", [[b""], [b"", b""]], ids=["closes", "silent"])
def test_no_answer_to_the_final_dot_is_ambiguous_on_the_general_path_too(after_data):
    """A quoted local part goes through smtplib's MAIL and RCPT, not the fast path; its
    final "." is still held for the caller's commit and a missing answer is ambiguous."""
    server = _ScriptedServer([b"250 ok\r\n", b"250 ok\r\n", *after_data])
    sender = SMTPSender(host="127.0.0.1", port=server.port, timeout=0.5)
    committed = []

    def commit(send) -> None:
        committed.append(server.received[-1])  # DATA went out, the final "." not yet
        send()

    with pytest.raises(SendError) as caught:
        sender.send(
            from_addr="a@example.com",
            to_addrs=['"odd name"@example.com'],
            message=MESSAGE,
            commit=commit,
        )
    assert caught.value.kind == "ambiguous"
    assert server.received[:3] == [
        b"mail FROM:<a@example.com>\r\n",
        b'rcpt TO:<"odd name"@example.com>\r\n',
        b"DATA\r\n",
    ]
    assert committed == [b"DATA\r\n"]
    assert sender.connection is None


def test_several_recipients_some_refused_deliver_to_the_others():
    """As ``sendmail``: the refused recipients are reported, the others get the message."""
    server = _ScriptedServer(
        [b"250 ok\r\n", b"550 5.1.1 no such user\r\n", b"250 ok\r\n", b"250 queued\r\n"]
    )
    sender = SMTPSender(host="127.0.0.1", port=server.port, timeout=2)
    with pytest.raises(SendError) as caught:
        sender.send(
            from_addr="a@example.com",
            to_addrs=["gone@example.com", "here@example.com"],
            message=MESSAGE,
        )
    assert (caught.value.kind, caught.value.code) == ("permanent", 550)
    assert server.received == [
        b"mail FROM:<a@example.com>\r\n",
        b"rcpt TO:<gone@example.com>\r\n",
        b"rcpt TO:<here@example.com>\r\n",
        b"DATA\r\n",
    ]
    sender._drop()


def test_a_non_ascii_address_needs_smtputf8():
    """With the server's SMTPUTF8 the message goes (the envelope in UTF-8); without it the
    recipient is refused for good, and a non-ASCII sender is the service's fault."""
    handler = SinkHandler()
    utf8 = start_sink(handler)  # aiosmtpd offers SMTPUTF8
    plain = start_sink(SinkHandler(), enable_SMTPUTF8=False)
    try:
        sender = SMTPSender(host="127.0.0.1", port=utf8.port)
        sender.send(from_addr="a@example.com", to_addrs=["jörg@example.com"], message=MESSAGE)
        sender.close()
        assert handler.messages[0].rcpt_tos == ["jörg@example.com"]
        sender = SMTPSender(host="127.0.0.1", port=plain.port)
        with pytest.raises(SendError) as refused:
            sender.send(from_addr="a@example.com", to_addrs=["jörg@example.com"], message=MESSAGE)
        with pytest.raises(SendError) as misconfigured:
            sender.send(from_addr="né@example.com", to_addrs=["b@example.com"], message=MESSAGE)
        sender.close()
        assert (refused.value.kind, refused.value.code) == ("permanent", 553)
        assert "SMTPUTF8" in refused.value.message
        assert misconfigured.value.kind == "service"
    finally:
        utf8.stop()
        plain.stop()


def test_before_data_can_withdraw_a_message_and_the_connection_goes_on(smtp_sink):
    """The dispatcher confirms each message's position between RCPT and DATA: a refusal
    resets the transaction (nothing delivered) and the connection stays usable; an error
    in the hook resets it too and propagates."""
    calls = []

    def refuse() -> bool:
        calls.append("asked")
        return False

    def fail() -> bool:
        raise RuntimeError("database gone")

    sender = SMTPSender(host="127.0.0.1", port=smtp_sink.port)
    with pytest.raises(Withdrawn):
        sender.send(
            from_addr="a@example.com",
            to_addrs=["b@example.com"],
            message=MESSAGE,
            before_data=refuse,
        )
    with pytest.raises(RuntimeError, match="database gone"):
        sender.send(
            from_addr="a@example.com", to_addrs=["c@example.com"], message=MESSAGE, before_data=fail
        )
    sender.send(
        from_addr="a@example.com",
        to_addrs=["d@example.com"],
        message=MESSAGE,
        before_data=lambda: True,
    )
    sender.close()
    assert calls == ["asked"]
    assert [m.rcpt_tos for m in smtp_sink.handler.messages] == [["d@example.com"]]


def test_before_data_is_not_asked_when_the_recipient_is_refused(smtp_sink):
    smtp_sink.handler.reject = {"gone@example.com": "550 5.1.1 no such user"}
    asked = []
    sender = SMTPSender(host="127.0.0.1", port=smtp_sink.port)
    with pytest.raises(SendError):
        sender.send(
            from_addr="a@example.com",
            to_addrs=["gone@example.com"],
            message=MESSAGE,
            before_data=lambda: asked.append(True) or True,
        )
    sender.close()
    assert asked == []


# -- the event-loop sender: the same replies, timeouts and outcomes ---------------------


def _async_send(server: _ScriptedServer, *, timeout: float = 5.0, commit=None):
    """One transaction of an AsyncSMTPSender on a loop of its own: the error it raised
    (``None`` when the message was accepted) and whether its connection is still held."""
    from apps.services.aio_senders import AsyncSMTPSender

    async def run():
        sender = AsyncSMTPSender(host="127.0.0.1", port=server.port, timeout=timeout)
        try:
            await sender.send(
                from_addr="a@example.com",
                to_addrs=["b@example.com"],
                message=MESSAGE,
                commit=commit,
            )
        except SendError as exc:
            return exc, sender.connection is not None
        finally:
            if sender.connection is not None:
                sender._drop()
        return None, True

    return asyncio.run(run())


def test_the_event_loop_sender_reads_multi_line_and_split_replies_whole():
    server = _ScriptedServer(
        [
            b"250-sender ok\r\n250 fine|\r\n",
            b"25|0 recipient ok\r\n",
            b"550-5.7.1 rejected\r\n550-see the policy\r\n550 5.7.1 bye\r\n",
        ]
    )
    error, _ = _async_send(server)
    assert (error.kind, error.code) == ("permanent", 550)
    assert error.message == "550 5.7.1 rejected\nsee the policy\n5.7.1 bye"
    assert server.received[:3] == [
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
    ]


@pytest.mark.parametrize("answered", [0, 1], ids=["mail", "rcpt"])
def test_the_event_loop_sender_times_out_a_silent_server_as_transient(answered):
    """No reply within the timeout to MAIL or RCPT: the connection is aborted and the
    message was not sent (transient), after about the timeout, not the default."""
    replies = [b"250 ok\r\n"] * answered + [b""] * (4 - answered)
    server = _ScriptedServer(replies)
    started = time.monotonic()
    error, held = _async_send(server, timeout=0.5)
    assert error.kind == "transient" and "no reply within 0.5s" in error.message
    assert 0.4 < time.monotonic() - started < 3
    assert not held  # dropped: the next send reconnects


@pytest.mark.parametrize("rated", [False, True], ids=["at-once", "held-for-its-slot"])
def test_the_event_loop_sender_finds_no_answer_to_the_final_dot_ambiguous(rated):
    """Silent after the whole message and its final "." (sent at once, or held for the
    caller's commit first): ambiguous, whatever the time spent waiting for the slot."""
    server = _ScriptedServer([b"250 ok\r\n", b"250 ok\r\n", b"", b""])

    async def commit(send) -> None:
        await asyncio.sleep(0.8)  # longer than the timeout: only the reply is timed
        send()

    started = time.monotonic()
    error, held = _async_send(server, timeout=0.5, commit=commit if rated else None)
    assert error.kind == "ambiguous" and "no reply within 0.5s" in error.message
    assert server.received[2] == b"DATA\r\n"
    assert not held
    assert time.monotonic() - started > (1.2 if rated else 0.4)


def test_the_event_loop_sender_keeps_one_connection_for_many_messages(smtp_sink):
    from apps.services.aio_senders import AsyncSMTPSender

    async def run():
        sender = AsyncSMTPSender(host="127.0.0.1", port=smtp_sink.port, timeout=0.3)
        for index in range(3):
            await sender.send(
                from_addr="a@example.com", to_addrs=[f"r{index}@example.com"], message=MESSAGE
            )
            await asyncio.sleep(0.2)  # the watch of the last reply must not fire late
        await asyncio.sleep(0.4)
        alive = await sender.alive()
        await sender.close()
        return alive

    assert asyncio.run(run()) is True
    messages = smtp_sink.handler.messages
    assert [m.rcpt_tos for m in messages] == [[f"r{i}@example.com"] for i in range(3)]
    assert len({m.peer_port for m in messages}) == 1
