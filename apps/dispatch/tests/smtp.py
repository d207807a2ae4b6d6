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
class StallingHandler(SinkHandler):
    """Accepts every message, but answers the final "." of the listed recipients only
    after ``stall`` seconds, the first ``times`` times each (longer than the sender's
    timeout: the message was delivered, the sender never hears so)."""

    stall_for: set[str] = field(default_factory=set)
    stall: float = 4.0
    times: int = 1
    stalled: dict[str, int] = field(default_factory=dict)

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        to = envelope.rcpt_tos[0].lower()
        if to in self.stall_for and self.stalled.get(to, 0) < self.times:
            self.stalled[to] = self.stalled.get(to, 0) + 1
            await asyncio.sleep(self.stall)
        return reply


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
        handler,
        hostname="127.0.0.1",
        port=port,
        auth_require_tls=False,
        authenticator=lambda *args: AuthResult(success=False, handled=False),
    )
    controller.start()
    controller.handler = handler
    return controller


@dataclass
class LatencyHandler(SinkHandler):
    """Answers MAIL, RCPT and the end of DATA each ``latency`` seconds after the command
    (a remote provider); a message's ``received_at`` is when its data arrived. Notes
    when each ``MAIL FROM`` arrived, per envelope sender (``mail_at``)."""

    latency: float = 0.05
    mail_at: dict[str, list[float]] = field(default_factory=dict)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        import time

        self.mail_at.setdefault(address, []).append(time.time())
        await asyncio.sleep(self.latency)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await asyncio.sleep(self.latency)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(self.latency)
        return reply


def _serve_latency(conn, latency: float) -> None:
    """Child process of :func:`start_latency_process`."""
    import gc

    gc.disable()  # no collector pause shifts the receive times
    handler = LatencyHandler(latency=latency)
    controller = start(handler)
    lags: list[tuple[float, float]] = []
    watch = asyncio.run_coroutine_threadsafe(_watch_lag(lags), controller.loop)
    conn.send(controller.port)
    conn.recv()  # "stop"
    watch.cancel()
    controller.stop()
    conn.send(([(m.mail_from, m.rcpt_tos, m.received_at) for m in handler.messages], lags))
    conn.close()


async def _watch_lag(lags: list[tuple[float, float]], *, tick: float = 0.002) -> None:
    """Note when the server's own event loop ran late (the machine did not give it the
    processor): ``(when it woke, how late)`` for every wake-up over 2 ms late. A message
    handled then got a receive time that late, and a gap measured from it is that much
    shorter than the one on the wire."""
    import time

    while True:
        asked = time.time() + tick
        await asyncio.sleep(tick)
        woke = time.time()
        if woke - asked > 0.002:
            lags.append((woke, woke - asked))


class LatencyProcess:
    """A :class:`LatencyHandler` server in a process of its own (its own interpreter and
    processor time: the receive times it notes are not held up by the test process).
    ``stop()`` returns what it received: ``(mail_from, rcpt_tos, received_at)`` each;
    ``late_by(t)`` then says how late the server itself was around time ``t``."""

    def __init__(self, process, conn, port: int) -> None:
        self.process, self.conn, self.port = process, conn, port
        self.lags: list[tuple[float, float]] = []

    def stop(self) -> list[tuple[str, list[str], float]]:
        self.conn.send("stop")
        received, self.lags = self.conn.recv()
        self.process.join(10)
        return received

    def late_by(self, when: float, *, window: float = 0.25) -> float:
        """The most the server's loop was late on waking within ``window`` s after
        ``when``: how much later than its arrival a message at ``when`` may have been
        noted."""
        return max(
            (lag for woke, lag in self.lags if when - 0.01 <= woke <= when + window),
            default=0.0,
        )


def start_latency_process(latency: float) -> LatencyProcess:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve_latency, args=(child, latency), daemon=True)
    process.start()
    if not parent.poll(30):
        process.terminate()
        raise RuntimeError("the SMTP server process did not start")
    return LatencyProcess(process, parent, parent.recv())
