"""A counting SMTP sink (aiosmtpd) in its own process, for the dispatch benchmarks.

The sink runs in a separate process so that its CPU (aiosmtpd parses every SMTP line in
Python) does not compete with the sender for one GIL, and so that its CPU time can be
reported apart. Per message it keeps only what the benchmarks check: how many times each
recipient got a message and when (no MIME parsing, no message bodies).

Usage::

    with start_sink_process() as sink:          # or sink = start_sink_process(); sink.stop()
        send_everything_to("127.0.0.1", sink.port)
        check = sink.verify(recipients)          # every recipient exactly once?
        assert check["ok"], check
        print(sink.stats())                      # counts, first/last receive time, CPU

``stats(detail=True)`` adds the per-recipient counts and the receive times per sender
(the SMTP login if the client logged in, else the envelope sender) and per client
connection (``record_times=True``), for checks of rate limits per service. ``reset()`` clears everything between runs. AUTH (PLAIN/LOGIN) is offered
without TLS and any credentials are accepted, so senders configured with a login work.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import multiprocessing
import os
import re
import resource
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["SinkProcess", "start_sink_process"]


class _CountingHandler:
    """aiosmtpd handler that counts deliveries per recipient and notes their times.

    With ``latency`` (seconds) it answers MAIL, RCPT and the end of DATA each that long
    after the command arrived, as a remote provider does; a message's receive time is
    when its data arrived (before that wait)."""

    def __init__(self, *, record_times: bool, latency: float = 0.0) -> None:
        self.record_times = record_times
        self.latency = latency
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.messages = 0
        self.deliveries = 0
        self.per_recipient: collections.Counter[str] = collections.Counter()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.times_by_sender: dict[str, list[float]] = collections.defaultdict(list)
        self.times_by_peer: dict[str, list[float]] = collections.defaultdict(list)

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        if self.latency:
            await asyncio.sleep(self.latency)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        if self.latency:
            await asyncio.sleep(self.latency)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        now = time.time()
        self._count(session, envelope, now)
        if self.latency:
            await asyncio.sleep(self.latency)
        return "250 OK"

    def _count(self, session, envelope, now: float) -> None:
        # The stats request is served from another thread of this process.
        with self.lock:
            self.messages += 1
            self.deliveries += len(envelope.rcpt_tos)
            self.per_recipient.update(envelope.rcpt_tos)
            if self.first_at is None:
                self.first_at = now
            self.last_at = now
            if self.record_times:
                login = getattr(session.auth_data, "login", None)
                sender = login or envelope.mail_from or ""
                if isinstance(sender, bytes):
                    sender = sender.decode("utf-8", "replace")
                self.times_by_sender[str(sender)].append(now)
                peer = session.peer
                self.times_by_peer[f"{peer[0]}:{peer[1]}" if peer else "?"].append(now)

    def stats(self, *, detail: bool) -> dict[str, Any]:
        with self.lock:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            figures: dict[str, Any] = {
                "messages": self.messages,
                "deliveries": self.deliveries,
                "distinct_recipients": len(self.per_recipient),
                "duplicate_deliveries": self.deliveries - len(self.per_recipient),
                "first_at": self.first_at,
                "last_at": self.last_at,
                "cpu_user_s": usage.ru_utime,
                "cpu_system_s": usage.ru_stime,
            }
            if detail:
                figures["per_recipient"] = dict(self.per_recipient)
                figures["times_by_sender"] = {k: list(v) for k, v in self.times_by_sender.items()}
                figures["times_by_peer"] = {k: list(v) for k, v in self.times_by_peer.items()}
            return figures

    def verify(self, expected: list[str]) -> dict[str, Any]:
        """Compare the deliveries with the recipients that should each get one message."""
        with self.lock:
            counts = self.per_recipient
            wanted = set(expected)
            missing = sum(1 for r in wanted if counts.get(r, 0) == 0)
            duplicated = sum(1 for r in wanted if counts.get(r, 0) > 1)
            unexpected = sum(1 for r in counts if r not in wanted)
            return {
                "expected": len(wanted),
                "delivered": self.deliveries,
                "missing": missing,
                "duplicated": duplicated,
                "unexpected": unexpected,
                "ok": missing == duplicated == unexpected == 0
                and len(wanted) == len(expected)
                and self.deliveries == len(wanted),
            }


def _fast_data_server_class():
    """aiosmtpd's SMTP with a DATA reader that takes the message in a few large reads.

    aiosmtpd reads DATA one line at a time through a Python loop (~5 µs a line here), so
    a 3 KB quoted-printable message costs the sink ~0.3 ms of CPU: on two cores the sink
    would take the CPU the senders under test need. Reading up to each ".<CRLF>" and
    checking for the "<CRLF>.<CRLF>" terminator costs a few reads per message instead.
    The rest of the SMTP dialogue is aiosmtpd's own (pinned 1.4.6: the private
    ``_call_handler_hook`` and ``_set_post_data_state`` are used as in its smtp_DATA).
    Plain ``<local@domain>`` envelope addresses skip aiosmtpd's RFC 5322 parser likewise.
    """
    import asyncio

    from aiosmtpd.smtp import MISSING, SMTP

    angle_addr = re.compile(r"\s*<([^<>\s\"]*)>(.*)")

    class FastDataSMTP(SMTP):
        def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
            # aiosmtpd parses MAIL/RCPT addresses with the email package's header parser
            # (~100 µs a message here); a plain <local@domain> needs no such parser.
            match = angle_addr.fullmatch(arg or "")
            if match is None:
                return super()._getaddr(arg)
            return match[1], match[2]

        async def smtp_DATA(self, arg: str) -> None:
            if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
                return
            if not self.envelope.rcpt_tos:
                await self.push("503 Error: need RCPT command")
                return
            if arg:
                await self.push("501 Syntax: DATA")
                return
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            # The CRLF that ended the DATA command counts as the terminator's first CRLF.
            received = bytearray(b"\r\n")
            while not received.endswith(b"\r\n.\r\n"):
                try:
                    received += await self._reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as error:
                    # No ".<CRLF>" within the reader's limit: take what cannot hold one.
                    received += await self._reader.readexactly(error.consumed)
            # Undo SMTP dot-stuffing (RFC 5321 4.5.2); the first line follows our CRLF too.
            body = bytes(received.replace(b"\r\n..", b"\r\n.")[2:-3])
            self.envelope.content = self.envelope.original_content = body
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            await self.push("250 OK" if status is MISSING else status)

    return FastDataSMTP


def _accept_any_login(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult

    # Kept on the session (aiosmtpd does so): the login names the sending service.
    return AuthResult(success=True, auth_data=auth_data)


def _serve(conn, host: str, port: int, record_times: bool, latency: float) -> None:
    """Child process: run aiosmtpd in a thread, answer commands from the parent."""
    import logging

    from aiosmtpd.controller import Controller

    # aiosmtpd 1.4 logs a warning about its own use of Session.login_data on each AUTH.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    server_class = _fast_data_server_class()

    class SinkController(Controller):
        def factory(self):
            return server_class(self.handler, **self.SMTP_kwargs)

        def _create_server(self):
            # Thousands of clients connect at once: a listen backlog for all of them
            # (asyncio's default of 100 would drop connection attempts, retried a second
            # later).
            return self.loop.create_server(
                self._factory_invoker,
                host=self.hostname,
                port=self.port,
                backlog=4096,
            )

    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    # One connection per sender thread of the runs, thousands of them: as many open
    # files as this machine lets a process have.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # No collector pauses in the instrument: a full collection over the per-recipient
    # counts (100,000 entries and more) stalls every connection at once for tens of
    # milliseconds, which shifts receive times (what proves the rate limits) and rates.
    gc.disable()
    if latency:
        # The latency sink is the instrument whose receive times prove the rate limits:
        # ahead of other work on a shared machine, so that its own lag does not shift
        # them (allowed to root only; elsewhere it runs at the normal priority).
        try:
            os.nice(-10)
        except OSError:
            pass
    handler = _CountingHandler(record_times=record_times, latency=latency)
    controller = SinkController(
        handler,
        hostname=host,
        port=port,
        server_hostname="sink.invalid",  # no getfqdn() lookup per connection
        data_size_limit=50 * 1024 * 1024,
        auth_require_tls=False,
        authenticator=_accept_any_login,
    )
    controller.start()
    conn.send(("ready", port))
    try:
        while True:
            command, argument = conn.recv()
            if command == "stats":
                conn.send(handler.stats(detail=argument))
            elif command == "verify":
                conn.send(handler.verify(argument))
            elif command == "reset":
                with handler.lock:
                    handler.reset()
                conn.send(None)
            elif command == "stop":
                break
    except EOFError:
        pass  # the parent went away: stop too
    finally:
        controller.stop()
        conn.close()


class SinkProcess:
    """Handle on a running sink process: ``.port``, ``.stats()``, ``.verify()``,
    ``.reset()``, ``.stop()``; also a context manager that stops it."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn, host: str, port: int):
        self.process = process
        self.host = host
        self.port = port
        self._conn = conn
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def _ask(self, command: str, argument: Any = None) -> Any:
        with self._lock:
            self._conn.send((command, argument))
            return self._conn.recv()

    def stats(self, *, detail: bool = False) -> dict[str, Any]:
        """Counts so far: ``messages``, ``deliveries`` (one per recipient of a message),
        ``distinct_recipients``, ``duplicate_deliveries``, ``first_at``/``last_at``
        (``time.time()``), the sink's own CPU seconds; with ``detail``, also
        ``per_recipient`` counts and ``times_by_sender``/``times_by_peer``."""
        return self._ask("stats", detail)

    def verify(self, recipients: Iterable[str]) -> dict[str, Any]:
        """Whether every address in ``recipients`` got exactly one message and nobody
        else got any: ``{"ok", "expected", "delivered", "missing", "duplicated",
        "unexpected"}``."""
        return self._ask("verify", list(recipients))

    def reset(self) -> None:
        """Forget every delivery (between two benchmark runs)."""
        self._ask("reset")

    def wait_for(self, deliveries: int, *, timeout: float = 60.0) -> dict[str, Any]:
        """Poll until ``deliveries`` deliveries arrived (or ``timeout``); return stats."""
        deadline = time.monotonic() + timeout
        while True:
            figures = self.stats()
            if figures["deliveries"] >= deliveries or time.monotonic() > deadline:
                return figures
            time.sleep(0.05)

    def stop(self) -> None:
        if not self.process.is_alive():
            return
        try:
            with self._lock:
                self._conn.send(("stop", None))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self._conn.close()

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_sink_process(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    record_times: bool = False,
    latency: float = 0.0,
) -> SinkProcess:
    """Start the sink in a new process listening on ``host:port`` (a free port when 0)
    and return once it accepts connections. ``record_times`` keeps every receive time
    per sender (login, else envelope sender) and per client connection (for
    ``stats(detail=True)``); ``latency`` (seconds) delays the replies to MAIL, RCPT and
    the end of DATA, as a remote provider's."""
    context = multiprocessing.get_context("spawn")
    parent_conn, child_conn = context.Pipe()
    process = context.Process(
        target=_serve,
        args=(child_conn, host, port, record_times, latency),
        name="smtp-sink",
        daemon=True,
    )
    process.start()
    child_conn.close()
    if not parent_conn.poll(30):
        process.terminate()
        raise RuntimeError("the SMTP sink process did not start within 30 s")
    status, bound_port = parent_conn.recv()
    if status != "ready":
        raise RuntimeError(f"the SMTP sink process failed to start: {status}")
    return SinkProcess(process, parent_conn, host, bound_port)
