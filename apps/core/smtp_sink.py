"""A local SMTP sink (aiosmtpd): accepts every message, keeps or stores it.

Used by ``manage.py smtp_sink`` (``make run``: each message saved as an ``.eml`` file and
logged), by the tests (messages kept in memory) and by the benchmarks (only counted).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer

logger = logging.getLogger("edm.sink")


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    received_at: float  # time.time()
    peer_port: int | None = None

    @property
    def headers(self):
        return BytesHeaderParser().parsebytes(self.data)


@dataclass
class SinkHandler:
    """aiosmtpd handler. ``directory`` set: write .eml files; ``keep``: keep in memory.

    ``reject`` maps a recipient address to an ``"NNN text"`` reply, so tests can make a
    recipient bounce (5xx) or defer (4xx).
    """

    directory: Path | None = None
    keep: bool = True
    reject: dict[str, str] = field(default_factory=dict)
    messages: list[ReceivedMessage] = field(default_factory=list)
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.reject.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=envelope.original_content or envelope.content,
            received_at=time.time(),
            peer_port=session.peer[1] if session.peer else None,
        )
        with self.lock:
            self.count += 1
            if self.keep:
                self.messages.append(message)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.eml"
            (self.directory / name).write_bytes(message.data)
            subject = message.headers.get("Subject", "")
            logger.info(
                "sink received mail from %s to %s subject %r -> %s",
                message.mail_from,
                ", ".join(message.rcpt_tos),
                subject,
                self.directory / name,
            )
        return "250 Message accepted for delivery"


class _QuietController(Controller):
    def factory(self):
        return SMTPServer(self.handler, **self.SMTP_kwargs)


def start_sink(
    handler: SinkHandler, *, host: str = "127.0.0.1", port: int = 0, **options
) -> Controller:
    """Start the sink in a background thread; returns the controller (``.port``, ``.stop()``).
    ``options`` go to aiosmtpd's SMTP (``enable_SMTPUTF8=False``, say)."""
    import socket

    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    controller = _QuietController(
        handler,
        hostname=host,
        port=port,
        data_size_limit=50 * 1024 * 1024,
        auth_require_tls=False,
        **options,
    )
    controller.start()
    return controller
