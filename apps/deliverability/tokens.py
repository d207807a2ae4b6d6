"""Signed, compact tokens for the links and addresses in a message.

A token is ``<hex ids>.<mac>``: the ids it names (contact, task, subtask) in hex and an
HMAC-SHA256 over them (and, for a click, over the target URL), truncated to 96 bits and
written in lower-case hex so it survives mail systems that fold the case of a local part.
Without ``SECRET_KEY`` a token can be neither forged nor altered, and its ids say nothing
a guess could enumerate: every id needs its own 2**96 guess. Each purpose has its own key,
so an open token cannot be replayed as an unsubscribe token.

Tokens name the contact and the task, not the subtask, so they keep working after the
task (and its subtasks) is deleted. They never expire: an unsubscribe link must work for
as long as the message can be read (RFC 8058 asks for no expiry).

One HMAC costs about a microsecond: tokens are made per message on the send path.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from django.conf import settings

UNSUBSCRIBE = "unsubscribe"
OPEN = "open"
CLICK = "click"
RETURN_PATH = "return-path"
_MAC_HEX = 24  # 96 bits


@lru_cache(maxsize=16)
def _base(purpose: str, secret: str) -> hmac.HMAC:
    key = hashlib.sha256(f"edm.deliverability.{purpose}\0{secret}".encode()).digest()
    return hmac.new(key, digestmod=hashlib.sha256)


def _mac(purpose: str, payload: str, extra: str = "") -> str:
    mac = _base(purpose, settings.SECRET_KEY).copy()
    mac.update(payload.encode("ascii"))
    if extra:
        mac.update(b"\n" + extra.encode("utf-8", "surrogatepass"))
    return mac.hexdigest()[:_MAC_HEX]


def make(purpose: str, *ids: int, extra: str = "") -> str:
    """A token naming ``ids`` (non-negative integers) for ``purpose``; ``extra`` (a URL)
    is covered by the MAC but not written into the token."""
    payload = ".".join(f"{int(i):x}" for i in ids)
    return f"{payload}.{_mac(purpose, payload, extra)}"


def read(purpose: str, token: str, *, count: int, extra: str = "") -> tuple[int, ...] | None:
    """The ``count`` ids of a valid ``token`` for ``purpose``, or None when it is malformed,
    forged or altered (constant-time comparison)."""
    if not isinstance(token, str) or len(token) > 200:
        return None
    parts = token.lower().split(".")
    if len(parts) != count + 1:
        return None
    *id_parts, mac = parts
    try:
        ids = tuple(int(part, 16) for part in id_parts)
    except ValueError:
        return None
    if any(not part or len(part) > 16 for part in id_parts):
        return None
    payload = ".".join(id_parts)
    if not hmac.compare_digest(mac, _mac(purpose, payload, extra)):
        return None
    return ids
