"""One sender interface for every kind of email service.

A sender opens (and reuses) a connection, sends one message at a time as bytes, and
closes. Every failure is raised as :class:`SendError` whose ``kind`` tells the
dispatcher whose fault it is:

* ``permanent`` - the recipient was refused (5xx on RCPT/DATA): do not retry, bounce.
* ``transient`` - try this message again later (4xx, connection lost mid-message).
* ``throttled`` - the provider asks us to slow down (421, 429-like 4.7.x): push the
  *service's* ``next_available_at``, not the message's.
* ``service`` - the service itself is broken (authentication refused, connection
  refused, TLS failure, bad sender address): not the recipient's fault; the message goes
  back without spending an attempt and the service cools down.
* ``local`` - this machine ran out of something (file descriptors, memory for a socket):
  neither the recipient's nor the service's fault; the message goes back at once without
  spending an attempt, the service is not cooled down, and the dispatcher opens fewer
  connections.
* ``ambiguous`` - the whole message went out, its final "." included, and no answer came
  (timeout, connection lost): the server may have accepted it, SMTP cannot tell. Sending
  it again may deliver it twice.
"""

from __future__ import annotations

import errno
import os
import re
import smtplib
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from apps.services.models import EmailService


class SendError(Exception):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    THROTTLED = "throttled"
    SERVICE = "service"
    LOCAL = "local"
    AMBIGUOUS = "ambiguous"

    def __init__(self, message: str, *, kind: str, code: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.code = code

    @property
    def error_class(self) -> str:
        """A short label for statistics and the dead-letter queue (``smtp_550`` …)."""
        return f"smtp_{self.code}" if self.code else self.kind

    def __repr__(self) -> str:
        return f"SendError(kind={self.kind!r}, code={self.code!r}, message={self.message!r})"


class _NoAnswer(Exception):
    """The final "." went out and its answer did not come (``SendError.AMBIGUOUS``)."""


class Withdrawn(Exception):
    """The caller's ``before_data`` withdrew the message: nothing was delivered (the
    transaction was reset before its data)."""


class Sender(Protocol):
    def open(self) -> None: ...

    def send(
        self,
        *,
        from_addr: str,
        to_addrs: list[str],
        message: bytes,
        before_data: Callable[[], bool] | None = None,
        commit: Callable[[Callable[[], object]], None] | None = None,
    ) -> None:
        """Send ``message``. ``before_data`` is called once the recipients are accepted,
        before the message's data goes out; ``False`` withdraws the message (raises
        :class:`Withdrawn`, nothing is delivered). ``commit`` is called with the function
        that commits the message — over SMTP, once its data is sent, the one that sends
        the final "." — and calls it once, when it likes: a rate limit spaces the
        commits, while the rest of the transaction goes ahead of them."""
        ...

    def close(self) -> None: ...

    def verify(self, *, from_addr: str = "") -> None:
        """Connect and authenticate without sending anything ("test connection")."""
        ...


def _classify_code(code: int, message: str, *, phase: str) -> SendError:
    """Map an SMTP reply code seen in ``phase`` (mail/rcpt/data) to a SendError whose
    message is the whole reply, code first (``550 5.1.1 no such user``): it is what the
    subtask, its history and the dead-letter queue keep."""
    message = message if message.startswith(str(code)) else f"{code} {message}".strip()
    if code == 421 or (400 <= code < 500 and " 4.7." in f" {message}"):
        return SendError(message, kind=SendError.THROTTLED, code=code)
    if 400 <= code < 500:
        return SendError(message, kind=SendError.TRANSIENT, code=code)
    if phase == "mail":
        # The server refuses our envelope sender: the service is misconfigured.
        return SendError(message, kind=SendError.SERVICE, code=code)
    return SendError(message, kind=SendError.PERMANENT, code=code)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


_PLAIN_ADDRESS = re.compile(r"[!-;=?-~]+@[!-;=?-~]+")  # printable ASCII, no <, > or space
_PERIODS = re.compile(rb"(?m)^\.")
_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")


def _kernel_timeouts(sock: socket.socket, timeout: float) -> None:
    """Put a plain TCP socket in blocking mode with the kernel's send and receive timeouts
    instead of Python's: a Python timeout makes the socket non-blocking and every read
    that has to wait costs a failed ``recv``, a ``poll`` and a second ``recv`` — three
    system calls per SMTP reply instead of one. A timeout still raises ``OSError``
    (EAGAIN), which is handled like any broken connection. TLS sockets keep Python's
    timeouts (their reads may need writes and vice versa). No Nagle delay (below)."""
    seconds = int(timeout)
    value = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
    sock.settimeout(None)
    # A held final "." (``commit``) is a small write after the message's data: with
    # Nagle's algorithm it would wait for the server's delayed ACK of the data (~40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def _plain_address(address: str) -> bool:
    return _PLAIN_ADDRESS.fullmatch(address) is not None


def _data_bytes(message: bytes) -> bytes:
    """The DATA payload: CRLF line ends (a bare CR or LF is a protocol violation that
    servers read in different ways, so it is never sent; ``smtplib`` leaves bytes as they
    are), dot stuffing, a final CRLF and "." — the regular expressions run only when the
    message needs them."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _LINE_ENDS.sub(b"\r\n", message)
    if message.startswith(b".") or b"\n." in message:
        message = _PERIODS.sub(b"..", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


def _refused(connection: smtplib.SMTP, code: int) -> None:
    """What ``sendmail`` does before raising: 421 closes, anything else resets."""
    if code == 421:
        connection.close()
    else:
        connection._rset()


def _check_before_data(
    connection: smtplib.SMTP | None, before_data: Callable[[], bool] | None
) -> None:
    """Ask the caller whether the message may go; reset the transaction if not."""
    if before_data is None:
        return
    try:
        go = before_data()
    except BaseException:
        if connection is not None:
            connection._rset()
        raise
    if not go:
        if connection is not None:
            connection._rset()
        raise Withdrawn


def _reply(connection: smtplib.SMTP) -> tuple[int, bytes]:
    """Read one reply as ``smtplib.SMTP.getreply`` does (multi-line replies included),
    straight from the socket: the transaction below runs in lockstep (no pipelining), so
    nothing is ever left in smtplib's read buffer between replies."""
    sock = connection.sock
    if sock is None:
        raise smtplib.SMTPServerDisconnected("please run connect() first")
    data = sock.recv(8192)
    while True:
        if not data:
            connection.close()
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        if data.endswith(b"\n"):
            lines = data.split(b"\n")[:-1]
            last = lines[-1]
            if len(last) < 4 or last[3:4] != b"-":
                break
        if len(data) > 65536:
            raise smtplib.SMTPResponseException(500, b"Line too long.")
        data += sock.recv(8192)
    try:
        code = int(last[:3])
    except ValueError:
        return -1, b"\n".join(line[4:].strip(b" \t\r\n") for line in lines)
    if len(lines) == 1:
        return code, last[4:].strip(b" \t\r\n")
    return code, b"\n".join(line[4:].strip(b" \t\r\n") for line in lines)


def _transaction(
    connection: smtplib.SMTP,
    from_addr: str,
    to_addr: str,
    message: bytes,
    *,
    before_data: Callable[[], bool] | None = None,
    commit: Callable[[Callable[[], object]], None] | None = None,
) -> None:
    """One mail transaction for one recipient with plain ASCII addresses — the same
    commands, replies and exceptions as ``smtplib.SMTP.sendmail`` (SIZE included when the
    server offers it), without its per-message address parsing, regular expressions and
    buffered line reads: the dispatcher's hot path. Anything else goes through
    ``sendmail``."""
    connection.ehlo_or_helo_if_needed()
    sock = connection.sock
    if sock is None:
        raise smtplib.SMTPServerDisconnected("please run connect() first")
    size = (
        b" SIZE=%d" % len(message)
        if connection.does_esmtp and "size" in connection.esmtp_features
        else b""
    )
    sock.sendall(b"MAIL FROM:<%s>%s\r\n" % (from_addr.encode("ascii"), size))
    code, reply = _reply(connection)
    if code != 250:
        _refused(connection, code)
        raise smtplib.SMTPSenderRefused(code, reply, from_addr)
    sock.sendall(b"RCPT TO:<%s>\r\n" % to_addr.encode("ascii"))
    code, reply = _reply(connection)
    if code not in (250, 251):
        _refused(connection, code)
        raise smtplib.SMTPRecipientsRefused({to_addr: (code, reply)})
    _check_before_data(connection, before_data)
    _data(connection, message, commit, read=_reply)


def _data(
    connection: smtplib.SMTP,
    message: bytes,
    commit: Callable[[Callable[[], object]], None] | None,
    *,
    read: Callable[[smtplib.SMTP], tuple[int, bytes]],
) -> None:
    """DATA, the message, and its final "." through the caller's ``commit`` (which may
    wait first); then the server's answer, read by ``read``."""
    sock = connection.sock
    if sock is None:
        raise smtplib.SMTPServerDisconnected("please run connect() first")
    sock.sendall(b"DATA\r\n")
    code, reply = read(connection)
    if code != 354:
        _refused(connection, code)
        raise smtplib.SMTPDataError(code, reply)
    data = _data_bytes(message)
    if commit is None:
        sock.sendall(data)
    else:
        sock.sendall(memoryview(data)[:-3])  # everything up to the final ".\r\n"
        commit(lambda: sock.sendall(b".\r\n"))
    # From here the server may have the message: a reply that does not come is not a
    # failure of the message, it is an unknown outcome.
    try:
        code, reply = read(connection)
    except smtplib.SMTPResponseException:
        raise
    except OSError as exc:  # timeout, reset, closed (smtplib's disconnect included)
        raise _NoAnswer(str(exc) or type(exc).__name__) from None
    if code != 250:
        _refused(connection, code)
        raise smtplib.SMTPDataError(code, reply)


def _general_transaction(
    connection: smtplib.SMTP,
    from_addr: str,
    to_addrs: list[str],
    message: bytes,
    *,
    before_data: Callable[[], bool] | None = None,
    commit: Callable[[Callable[[], object]], None] | None = None,
) -> dict[str, tuple[int, bytes]]:
    """``smtplib.SMTP.sendmail``'s transaction for what the fast path does not take
    (several recipients, quoted local parts, non-ASCII addresses), through smtplib's own
    ``mail``/``rcpt`` (quoting, SMTPUTF8) but with the final "." held for ``commit`` as
    on the fast path, so that a missing answer to it is ambiguous here too.

    Returns the recipients refused when others were accepted, as ``sendmail`` does;
    raises ``SMTPRecipientsRefused`` when all were refused. An address that is not
    ASCII needs the server's SMTPUTF8: without it the message is refused (permanent)."""
    connection.ehlo_or_helo_if_needed()
    options = []
    if connection.does_esmtp and connection.has_extn("size"):
        options.append(f"SIZE={len(message)}")
    if not all(address.isascii() for address in (from_addr, *to_addrs)):
        if not connection.has_extn("smtputf8"):
            reply = b"5.6.7 an address is not ASCII and the server does not offer SMTPUTF8"
            if not from_addr.isascii():
                raise smtplib.SMTPSenderRefused(553, reply, from_addr)
            raise smtplib.SMTPRecipientsRefused({a: (553, reply) for a in to_addrs})
        options.append("SMTPUTF8")
    code, reply = connection.mail(from_addr, options)
    if code != 250:
        _refused(connection, code)
        raise smtplib.SMTPSenderRefused(code, reply, from_addr)
    refused = {}
    for address in to_addrs:
        code, reply = connection.rcpt(address)
        if code not in (250, 251):
            refused[address] = (code, reply)
            if code == 421:
                connection.close()
                raise smtplib.SMTPRecipientsRefused(refused)
    if len(refused) == len(to_addrs):
        connection._rset()
        raise smtplib.SMTPRecipientsRefused(refused)
    _check_before_data(connection, before_data)
    _data(connection, message, commit, read=lambda c: c.getreply())
    return refused


def _commit(send: Callable[[], object], commit: Callable[[Callable[[], object]], None] | None):
    """Commit a message through the caller's ``commit`` (which may wait first), or now."""
    if commit is None:
        send()
    else:
        commit(send)


def _local_shortage(exc: OSError) -> bool:
    """The connection could not be made because this machine ran out of something."""
    return exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class SMTPSender:
    """smtplib with one reused connection; reconnects lazily after a drop."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: str = "none",
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        local_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.timeout = timeout
        self.local_hostname = local_hostname or "edm.localdomain"
        self.connection: smtplib.SMTP | None = None

    def open(self) -> None:
        if self.connection is not None:
            return
        try:
            if self.security == "ssl":
                connection: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    local_hostname=self.local_hostname,
                    context=ssl.create_default_context(),
                )
            else:
                connection = smtplib.SMTP(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    local_hostname=self.local_hostname,
                )
                if self.security == "starttls":
                    connection.starttls(context=ssl.create_default_context())
            if self.username:
                connection.login(self.username, self.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise SendError(
                f"authentication refused: {exc.smtp_code} {_text(exc.smtp_error)}",
                kind=SendError.SERVICE,
                code=exc.smtp_code,
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise SendError(f"not supported by server: {exc}", kind=SendError.SERVICE) from None
        except smtplib.SMTPResponseException as exc:
            error = _classify_code(exc.smtp_code, _text(exc.smtp_error), phase="mail")
            error.kind = (
                SendError.THROTTLED if error.kind == SendError.THROTTLED else SendError.SERVICE
            )
            raise error from None
        except ssl.SSLError as exc:
            raise SendError(f"TLS failure: {exc}", kind=SendError.SERVICE) from None
        except OSError as exc:  # smtplib's own errors included (they are OSErrors)
            kind = SendError.LOCAL if _local_shortage(exc) else SendError.SERVICE
            raise SendError(
                f"cannot connect to {self.host}:{self.port}: {exc}", kind=kind
            ) from None
        if not isinstance(connection.sock, ssl.SSLSocket):
            _kernel_timeouts(connection.sock, self.timeout)
        self.connection = connection

    def send(
        self,
        *,
        from_addr: str,
        to_addrs: list[str],
        message: bytes,
        before_data: Callable[[], bool] | None = None,
        commit: Callable[[Callable[[], object]], None] | None = None,
    ) -> None:
        self.open()
        assert self.connection is not None
        try:
            if len(to_addrs) == 1 and _plain_address(from_addr) and _plain_address(to_addrs[0]):
                _transaction(
                    self.connection,
                    from_addr,
                    to_addrs[0],
                    message,
                    before_data=before_data,
                    commit=commit,
                )
                return
            refused = _general_transaction(
                self.connection,
                from_addr,
                to_addrs,
                message,
                before_data=before_data,
                commit=commit,
            )
        except _NoAnswer as exc:
            self._drop()
            raise SendError(
                f"no answer to the end of the message: {exc}", kind=SendError.AMBIGUOUS
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise _classify_code(code, _text(reply), phase="rcpt") from None
        except smtplib.SMTPSenderRefused as exc:
            raise _classify_code(exc.smtp_code, _text(exc.smtp_error), phase="mail") from None
        except smtplib.SMTPDataError as exc:
            raise _classify_code(exc.smtp_code, _text(exc.smtp_error), phase="data") from None
        except smtplib.SMTPServerDisconnected as exc:
            self._drop()
            raise SendError(f"connection lost: {exc}", kind=SendError.TRANSIENT) from None
        except smtplib.SMTPResponseException as exc:
            self._drop()
            raise _classify_code(exc.smtp_code, _text(exc.smtp_error), phase="data") from None
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            raise SendError(f"connection lost: {exc}", kind=SendError.TRANSIENT) from None
        if refused:
            code, reply = next(iter(refused.values()))
            raise _classify_code(code, _text(reply), phase="rcpt")

    def verify(self, *, from_addr: str = "") -> None:
        """Connect, authenticate, and (with ``from_addr``) check the server accepts that
        envelope sender (``MAIL FROM`` then ``RSET``); then ``QUIT``. Sends nothing.

        Raises SendError like :meth:`open` and :meth:`send` do.
        """
        self.open()
        assert self.connection is not None
        try:
            code, reply = self.connection.noop()
            if code != 250:
                raise _classify_code(code, _text(reply), phase="mail")
            if from_addr:
                self.connection.ehlo_or_helo_if_needed()
                code, reply = self.connection.mail(from_addr)
                if code != 250:
                    error = _classify_code(code, _text(reply), phase="mail")
                    if error.kind == SendError.PERMANENT:
                        error.kind = SendError.SERVICE
                    raise error
                self.connection.rset()
        except smtplib.SMTPServerDisconnected as exc:
            self._drop()
            raise SendError(f"connection lost: {exc}", kind=SendError.SERVICE) from None
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            raise SendError(f"connection failed: {exc}", kind=SendError.SERVICE) from None
        finally:
            self.close()

    def _drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
        self.connection = None

    def close(self) -> None:
        if self.connection is None:
            return
        try:
            self.connection.quit()
        except (OSError, smtplib.SMTPException):
            pass
        self._drop()


class ConsoleSender:
    """Writes each message to stdout (development)."""

    def open(self) -> None:
        pass

    def verify(self, *, from_addr: str = "") -> None:
        pass

    def send(
        self,
        *,
        from_addr: str,
        to_addrs: list[str],
        message: bytes,
        before_data: Callable[[], bool] | None = None,
        commit: Callable[[Callable[[], object]], None] | None = None,
    ) -> None:
        _check_before_data(None, before_data)

        def write() -> None:
            sys.stdout.write(f"--- message from {from_addr} to {', '.join(to_addrs)}\n")
            sys.stdout.write(message.decode("utf-8", "replace"))
            sys.stdout.write("\n")
            sys.stdout.flush()

        _commit(write, commit)

    def close(self) -> None:
        pass


class FileSender:
    """Writes each message as an ``.eml`` file into a folder (development)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SendError(
                f"cannot create {self.directory}: {exc.strerror}", kind=SendError.SERVICE
            ) from None

    def verify(self, *, from_addr: str = "") -> None:
        self.open()
        if not os.access(self.directory, os.W_OK):
            raise SendError(f"cannot write to {self.directory}", kind=SendError.SERVICE)

    def send(
        self,
        *,
        from_addr: str,
        to_addrs: list[str],
        message: bytes,
        before_data: Callable[[], bool] | None = None,
        commit: Callable[[Callable[[], object]], None] | None = None,
    ) -> None:
        _check_before_data(None, before_data)

        def write() -> None:
            name = f"{time.time_ns()}-{socket.gethostname()}-{os.getpid()}.eml"
            try:
                (self.directory / name).write_bytes(message)
            except OSError as exc:
                raise SendError(
                    f"cannot write {name}: {exc.strerror}", kind=SendError.SERVICE
                ) from None

        _commit(write, commit)

    def close(self) -> None:
        pass


def smtp_settings(service: EmailService) -> dict:
    """What an SMTP sender of ``service`` connects with (either kind: threaded or on an
    event loop). Raises SendError (kind ``service``) when ``EDM_ENCRYPTION_KEY`` cannot
    decrypt the stored password."""
    from apps.services.crypto import DecryptionError

    try:
        password = service.password
    except DecryptionError as exc:
        raise SendError(str(exc), kind=SendError.SERVICE) from None
    return {
        "host": service.host,
        "port": service.port,
        "security": service.security,
        "username": service.username,
        "password": password,
    }


def sender_for(service: EmailService, *, timeout: float = 30.0) -> Sender:
    """A sender for ``service`` (not yet connected).

    Raises SendError (kind ``service``) when the service cannot be used at all: an
    unknown kind, or a stored password ``EDM_ENCRYPTION_KEY`` cannot decrypt.
    """
    kind = service.kind
    if kind == "smtp":
        return SMTPSender(**smtp_settings(service), timeout=timeout)
    if kind == "console":
        return ConsoleSender()
    if kind == "file":
        from django.conf import settings

        return FileSender(Path(settings.EDM_SINK_DIR) / f"service-{service.pk}")
    raise SendError(f"unknown service kind {kind!r}", kind=SendError.SERVICE)
