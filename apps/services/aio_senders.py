"""The SMTP sender on an event loop: thousands of open connections in one thread.

:class:`AsyncSMTPSender` is :class:`~apps.services.senders.SMTPSender` for asyncio, built
on aiosmtplib (connection, greeting, EHLO, STARTTLS, implicit TLS, AUTH, QUIT): the same
security modes, the same mail transaction in lockstep, the same ``before_data`` and
``commit`` hooks (awaitables here) and the same :class:`~apps.services.senders.SendError`
kinds for the same replies and failures, so the dispatcher records an outcome the same
way whichever sender carried it.

The transaction is written out rather than left to ``aiosmtplib.SMTP.sendmail``: the
position move is awaited between ``RCPT`` and ``DATA`` (``before_data``), and a
rate-limited message holds its final "." until its slot (``commit``). Only plain ASCII
envelopes with one recipient take this path (:func:`takes`); the dispatcher sends the
rest through the threaded sender, which handles quoting and SMTPUTF8.

The transaction's commands go straight to aiosmtplib's protocol (write the line, await
its reply) under one timer per connection instead of ``execute_command``'s lock and
timer per command, a tenth of the event loop's time at a thousand connections. A reply
that does not come within ``timeout`` aborts the connection: the command fails as a lost
connection (ambiguous once the final "." went out), as a read timeout did.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import aiosmtplib

from apps.services.senders import (
    SendError,
    Withdrawn,
    _classify_code,
    _data_bytes,
    _local_shortage,
    _plain_address,
)


def takes(from_addr: str, to_addrs: list[str]) -> bool:
    """Whether this sender carries a message with this envelope (else the threaded one)."""
    return len(to_addrs) == 1 and _plain_address(from_addr) and _plain_address(to_addrs[0])


def _write(protocol, data: bytes) -> None:
    """Write to the server, a reply expected: armed before the write, as aiosmtplib's own
    commands do, so that a reply that comes at once is kept for the read."""
    protocol._response_pending = True
    protocol.write(data)


class AsyncSMTPSender:
    """One SMTP connection on the running event loop; reconnects lazily after a drop."""

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
        self.connection: aiosmtplib.SMTP | None = None
        self._deadline: float | None = None  # of the reply awaited, on the loop's clock
        self._watch: asyncio.TimerHandle | None = None
        self._timed_out = False

    async def open(self) -> None:
        if self.connection is not None and self.connection.is_connected:
            return
        tls = self.security in ("ssl", "starttls")
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            use_tls=self.security == "ssl",
            # never opportunistic: "none" stays plain, as with smtplib
            start_tls=self.security == "starttls",
            tls_context=ssl.create_default_context() if tls else None,
            username=self.username or None,
            password=self.password if self.username else None,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise SendError(
                f"authentication refused: {exc.code} {exc.message}",
                kind=SendError.SERVICE,
                code=exc.code,
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            error = _classify_code(exc.code, exc.message, phase="mail")
            error.kind = (
                SendError.THROTTLED if error.kind == SendError.THROTTLED else SendError.SERVICE
            )
            raise error from None
        except ssl.SSLError as exc:
            raise SendError(f"TLS failure: {exc}", kind=SendError.SERVICE) from None
        except (OSError, aiosmtplib.SMTPException) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            local = isinstance(cause, OSError) and _local_shortage(cause)
            raise SendError(
                f"cannot connect to {self.host}:{self.port}: {exc}",
                kind=SendError.LOCAL if local else SendError.SERVICE,
            ) from None
        self.connection = smtp

    async def alive(self) -> bool:
        """NOOP on an idle connection: ``False`` means open a new one."""
        if self.connection is None or not self.connection.is_connected:
            return False
        try:
            return (await self.connection.noop()).code == 250
        except Exception:  # noqa: BLE001 - any failure means: open a new connection
            return False

    async def send(
        self,
        *,
        from_addr: str,
        to_addrs: list[str],
        message: bytes,
        before_data: Callable[[], Awaitable[bool]] | None = None,
        commit: Callable[[Callable[[], object]], Awaitable[None]] | None = None,
    ) -> None:
        """One transaction (``Sender.send``'s contract; only envelopes :func:`takes`
        accepts). Raises SendError, or Withdrawn when ``before_data`` says no."""
        await self.open()
        smtp = self.connection
        assert smtp is not None
        protocol = smtp.protocol
        phase = "mail"
        try:
            size = b" SIZE=%d" % len(message) if smtp.supports_extension("size") else b""
            reply = await self._command(
                protocol, b"MAIL FROM:<%s>%s\r\n" % (from_addr.encode(), size)
            )
            if reply.code != 250:
                await self._refused(reply.code)
                raise _classify_code(reply.code, reply.message, phase="mail")
            phase = "rcpt"
            reply = await self._command(protocol, b"RCPT TO:<%s>\r\n" % to_addrs[0].encode())
            if reply.code not in (250, 251):
                await self._refused(reply.code)
                raise _classify_code(reply.code, reply.message, phase="rcpt")
            if before_data is not None:
                try:
                    go = await before_data()
                except BaseException:
                    await self._reset()
                    raise
                if not go:
                    await self._reset()
                    raise Withdrawn
            phase = "data"
            reply = await self._command(protocol, b"DATA\r\n")
            if reply.code != 354:
                await self._refused(reply.code)
                raise _classify_code(reply.code, reply.message, phase="data")
            data = _data_bytes(message)
            if commit is None:
                _write(protocol, data)
            else:
                _write(protocol, data[:-3])  # everything up to the final ".\r\n"
                await commit(lambda: protocol.write(b".\r\n"))
            phase = "end"
            reply = await self._reply(protocol)
        except (SendError, Withdrawn):
            raise
        except aiosmtplib.SMTPResponseException as exc:
            self._drop()
            raise _classify_code(exc.code, exc.message, phase="data") from None
        except (OSError, aiosmtplib.SMTPException) as exc:
            error = f"no reply within {self.timeout:g}s" if self._timed_out else str(exc)
            self._drop()
            if phase == "end":
                # The final "." went out: the server may have the message.
                raise SendError(
                    f"no answer to the end of the message: {error or type(exc).__name__}",
                    kind=SendError.AMBIGUOUS,
                ) from None
            raise SendError(f"connection lost: {error}", kind=SendError.TRANSIENT) from None
        if reply.code != 250:
            await self._refused(reply.code)
            raise _classify_code(reply.code, reply.message, phase="data")

    async def _command(self, protocol, line: bytes) -> aiosmtplib.SMTPResponse:
        """Write one command line (CRLF included) and await its reply."""
        _write(protocol, line)
        return await self._reply(protocol)

    async def _reply(self, protocol) -> aiosmtplib.SMTPResponse:
        """The reply to what was just written, within ``timeout`` (module docstring)."""
        loop = protocol._loop
        self._deadline = loop.time() + self.timeout
        if self._watch is None:
            self._watch = loop.call_at(self._deadline, self._check, loop)
        try:
            return await protocol.read_response(timeout=None)
        finally:
            self._deadline = None

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        """The watch: abort the connection whose reply is overdue, else look again at
        the deadline of the reply awaited now (none: the watch ends)."""
        self._watch = None
        if self._deadline is None:
            return
        if loop.time() < self._deadline:
            self._watch = loop.call_at(self._deadline, self._check, loop)
            return
        self._timed_out = True
        transport = self.connection.transport if self.connection is not None else None
        if transport is not None:
            transport.abort()  # the awaited reply fails with "connection lost"

    async def _refused(self, code: int) -> None:
        """What ``sendmail`` does after a refusal: 421 closes, anything else resets."""
        if code == 421:
            self._drop()
        else:
            await self._reset()

    async def _reset(self) -> None:
        if self.connection is None or not self.connection.is_connected:
            return
        try:
            await self.connection.rset()
        except (OSError, aiosmtplib.SMTPException):
            self._drop()

    def _drop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._deadline = None
        self._timed_out = False

    async def close(self) -> None:
        if self.connection is None:
            return
        try:
            if self.connection.is_connected:
                await asyncio.wait_for(self.connection.quit(), timeout=min(5.0, self.timeout))
        except (TimeoutError, OSError, aiosmtplib.SMTPException):
            pass
        self._drop()
