"""Misbehaving SMTP servers for the dispatch tests (real aiosmtpd on loopback)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiosmtpd.smtp import AuthResult

from apps.core.smtp_sink import SinkHandler, _QuietController, start_sink


@dataclass
class SlowHandler(SinkHandler):
    """Accepts every message after ``delay`` seconds (a message stays on the wire)."""

    delay: float = 0.02

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(self.delay)
        return reply


@dataclass
class DroppingHandler(SinkHandler):
    """Closes the connection instead of answering the final "." for the listed
    recipients, the first ``times`` times each (nothing is accepted then)."""

    drop: set[str] = field(default_factory=set)
    times: int = 1
    dropped: dict[str, int] = field(default_factory=dict)

    async def handle_DATA(self, server, session, envelope):
        to = envelope.rcpt_tos[0].lower()
        if to in self.drop and self.dropped.get(to, 0) < self.times:
            self.dropped[to] = self.dropped.get(to, 0) + 1
            server.transport.close()
            return "421 closing"
        return await super().handle_DATA(server, session, envelope)


@dataclass
class ThrottlingHandler(SinkHandler):
    """Answers 421 4.7.0 (slow down) to RCPT the first ``times`` times."""

    times: int = 1
    throttled: int = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.throttled < self.times:
            self.throttled += 1
            return "421 4.7.0 slow down"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


def start(handler: SinkHandler):
    controller = start_sink(handler)
    controller.handler = handler
    return controller


def start_refusing_auth():
    """A server that offers AUTH and refuses every credential (535)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler = SinkHandler()
    controller = _QuietController(
        handler, hostname="127.0.0.1", port=port, auth_require_tls=False,
        authenticator=lambda *args: AuthResult(success=False, handled=False),
    )
    controller.start()
    controller.handler = handler
    return controller
