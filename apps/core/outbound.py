"""Safe outbound HTTP for URLs that users configure (alert channels, webhooks).

One call, :func:`post`, and one error, :class:`OutboundError`::

    from apps.core import outbound

    try:
        response = outbound.post(url, body, headers={"Content-Type": "application/json"})
    except outbound.OutboundError as exc:
        exc.permanent  # True: retrying the same request cannot help (bad URL, 4xx, …)
        exc.status     # the HTTP status when the server answered, else None

:func:`check_url` validates a URL when it is configured (``ValueError`` with the reason),
so a form or serializer can refuse it before anything is stored.

What makes it safe for a URL typed by a tenant:

* **Addresses** — the host is resolved once and every address it resolves to must be
  public: loopback, private, link-local, shared (CGNAT), multicast, reserved and
  unspecified addresses are refused, unless ``settings.EDM_WEBHOOKS_ALLOW_PRIVATE``
  (``EDM_WEBHOOKS_ALLOW_PRIVATE=1``: tests, private networks). The connection goes to
  the address that was checked (the ``Host`` header and the TLS server name stay the
  host's), so a second DNS answer cannot swap in an internal address.
* **Scheme** — ``https`` only when ``settings.EDM_OUTBOUND_HTTPS_ONLY`` (on by default
  with ``DEBUG`` off); certificates are verified.
* **No redirects** — a 3xx is an error, never followed (a redirect could point inside).
* **Short timeouts** — ``timeout`` seconds to connect and for each read (default 5), and
  at most ``MAX_RESPONSE_BYTES`` of the answer is read.

For many requests to the same receivers (webhook deliveries), a :class:`Session` keeps
one connection per origin open between requests (HTTP keep-alive) under the same rules:
each new connection resolves and checks the host again, and a connection is not reused
after ``Session.max_age`` seconds, so a changed DNS answer is seen within that time::

    with outbound.Session() as session:
        for body in bodies:
            session.post(url, body, headers=..., timeout=5)

Errors are classified for retrying: a refused address or scheme, a malformed URL, a
redirect and a 4xx answer (but 408 and 429) are permanent; DNS failures, connection
errors, timeouts, 5xx, 408 and 429 are transient.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings

DEFAULT_TIMEOUT = 5.0
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "EDM-outbound/1"
_RETRYABLE_4XX = {408, 425, 429}
# Not covered by ipaddress's is_private on Python 3.11: shared address space (RFC 6598).
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class OutboundError(Exception):
    """A request that did not succeed; ``permanent`` says whether a retry may help."""

    def __init__(self, message: str, *, permanent: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status


@dataclass(frozen=True)
class Response:
    """A 2xx answer: status, headers (lower-case names) and up to 64 KB of the body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str


def _parse(url: str) -> _Target:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise ValueError("the URL must start with https:// (or http:// where allowed)")
    if scheme == "http" and getattr(settings, "EDM_OUTBOUND_HTTPS_ONLY", True):
        raise ValueError("only https:// URLs are allowed")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    if parts.username or parts.password:
        raise ValueError("credentials in the URL are not allowed; use the channel's secret")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80), path)


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED)
    )


def _allow_private() -> bool:
    return bool(getattr(settings, "EDM_WEBHOOKS_ALLOW_PRIVATE", False))


def _literal_address(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def check_url(url: str) -> None:
    """Raise ``ValueError`` (the reason) for a URL :func:`post` would refuse outright:
    scheme, syntax, credentials, or a literal address that is not public. Host names are
    resolved only when sending (their addresses may change)."""
    target = _parse(url)
    literal = _literal_address(target.host)
    if literal and not _allow_private() and not _address_allowed(literal):
        raise ValueError(f"{literal} is not a public address")


def _resolve(target: _Target, timeout: float) -> str:
    """The first address of the host, after checking every address it resolves to."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundError(
            f"cannot resolve {target.host}: {exc.strerror}", permanent=False
        ) from None
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise OutboundError(f"{target.host} has no address", permanent=False)
    if not _allow_private():
        refused = [a for a in addresses if not _address_allowed(a)]
        if refused:
            raise OutboundError(
                f"{target.host} resolves to {refused[0]}, which is not a public address "
                "(EDM_WEBHOOKS_ALLOW_PRIVATE=1 allows it)",
                permanent=True,
            )
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to ``address`` while speaking to ``host`` (Host header)."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """TLS to ``address`` with the certificate verified for ``host``."""

    default_port = 443

    def connect(self) -> None:
        super().connect()
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)


def _connection_for(target: _Target, timeout: float) -> _PinnedHTTPConnection:
    address = _resolve(target, timeout)
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    return connection_class(target.host, target.port, address=address, timeout=timeout)


def _exchange(
    connection: _PinnedHTTPConnection, target: _Target, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes, bool]:
    """One request on ``connection``: status, headers, body (capped), and whether the
    server keeps the connection open. Raises the OS / http.client errors as they come."""
    connection.request("POST", target.path, body=body, headers=headers)
    answer = connection.getresponse()
    content = answer.read(MAX_RESPONSE_BYTES)
    if not answer.isclosed():
        # More than we read: drop the connection rather than read an unbounded body.
        answer.close()
        connection.close()
    status = answer.status
    answer_headers = {name.lower(): value for name, value in answer.getheaders()}
    return status, answer_headers, content, not answer.will_close


def _headers(body: bytes, headers: dict[str, str] | None) -> dict[str, str]:
    all_headers = {"User-Agent": USER_AGENT, "Content-Length": str(len(body))}
    all_headers.update(headers or {})
    return all_headers


def _transport_error(target: _Target, exc: BaseException) -> OutboundError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return OutboundError(f"TLS certificate refused: {exc.verify_message}", permanent=True)
    reason = "timed out" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
    return OutboundError(f"{target.host}: {reason}", permanent=False)


def _outcome(status: int, answer_headers: dict[str, str], content: bytes) -> Response:
    if 200 <= status < 300:
        return Response(status=status, headers=answer_headers, body=content)
    if 300 <= status < 400:
        raise OutboundError(
            f"answered {status} (redirects are not followed)", permanent=True, status=status
        )
    permanent = 400 <= status < 500 and status not in _RETRYABLE_4XX
    snippet = content[:200].decode("utf-8", "replace").strip()
    message = f"answered {status}" + (f": {snippet}" if snippet else "")
    raise OutboundError(message, permanent=permanent, status=status)


def post(
    url: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Response:
    """POST ``body`` to ``url`` with the rules above; the 2xx :class:`Response`, or
    :class:`OutboundError` (also for a malformed or refused URL)."""
    try:
        target = _parse(url)
    except ValueError as exc:
        raise OutboundError(str(exc), permanent=True) from None
    connection = _connection_for(target, timeout)
    try:
        status, answer_headers, content, _ = _exchange(
            connection, target, body, _headers(body, headers)
        )
    except (OSError, http.client.HTTPException) as exc:
        raise _transport_error(target, exc) from None
    finally:
        connection.close()
    return _outcome(status, answer_headers, content)


# Errors of a reused keep-alive connection that the server closed while it was idle: the
# request did not reach it, and it is sent once more on a new connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Session:
    """Keep-alive connections for many POSTs (see the module docstring). Not thread-safe:
    one per thread. ``close()`` (or leaving the ``with`` block) closes them."""

    max_age = 30.0
    max_connections = 64

    def __init__(self) -> None:
        self._connections: dict[tuple[str, str, int], tuple[_PinnedHTTPConnection, float]] = {}

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for connection, _ in self._connections.values():
            connection.close()
        self._connections.clear()

    def _drop(self, key) -> None:
        connection, _ = self._connections.pop(key, (None, 0.0))
        if connection is not None:
            connection.close()

    def post(
        self,
        url: str,
        body: bytes,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Response:
        """Like :func:`post`, on a kept connection to the URL's origin when one is open."""
        try:
            target = _parse(url)
        except ValueError as exc:
            raise OutboundError(str(exc), permanent=True) from None
        key = (target.scheme, target.host, target.port)
        kept = self._connections.get(key)
        if kept is not None and time.monotonic() - kept[1] > self.max_age:
            self._drop(key)
            kept = None
        all_headers = _headers(body, headers)
        for attempt in (1, 2):
            if kept is None:
                if len(self._connections) >= self.max_connections:
                    self._drop(next(iter(self._connections)))
                kept = (_connection_for(target, timeout), time.monotonic())
                self._connections[key] = kept
                reused = False
            else:
                reused = True
            connection = kept[0]
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            try:
                status, answer_headers, content, keep = _exchange(
                    connection, target, body, all_headers
                )
            except _STALE as exc:
                self._drop(key)
                kept = None
                if reused and attempt == 1:
                    continue
                raise _transport_error(target, exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(key)
                raise _transport_error(target, exc) from None
            if not keep:
                self._drop(key)
            return _outcome(status, answer_headers, content)
        raise AssertionError("unreachable")
