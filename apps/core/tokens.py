"""API tokens (``Authorization: Token …``), looked up once per process and TTL.

Kept apart from :mod:`apps.core.auth`, which imports DRF's views: DRF's settings import
the authentication classes while those load.
"""

from __future__ import annotations

import threading
import time

from django.db.models.base import ModelState
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

_tokens: dict[str, tuple[float, object, Token]] = {}
_tokens_lock = threading.Lock()
_TOKENS_MAX = 10_000


def tokens_forget() -> None:
    """Drop this process's remembered tokens (a token deleted, a user changed)."""
    with _tokens_lock:
        _tokens.clear()


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's ``Authorization: Token …``, with each key's user remembered by the process
    for ``EDM_TOKEN_CACHE_SECONDS`` (5; 0 turns it off): an API client's requests then
    cost no query to authenticate, the most frequent round trip of a small request.

    A token deleted or a user deactivated or changed in this process is forgotten at
    once (signals); in the other web processes within those seconds. Every request gets
    its own copy of the user (permission caches are not shared across requests)."""

    def authenticate_credentials(self, key):
        from django.conf import settings

        ttl = settings.EDM_TOKEN_CACHE_SECONDS
        now = time.monotonic()
        hit = _tokens.get(key) if ttl > 0 else None
        if hit is not None and hit[0] > now:
            return _own_copy(hit[1]), hit[2]
        user, token = super().authenticate_credentials(key)
        if ttl > 0:
            with _tokens_lock:
                if len(_tokens) >= _TOKENS_MAX:
                    _tokens.clear()
                _tokens[key] = (now + ttl, user, token)
            user = _own_copy(user)
        return user, token


def _own_copy(user):
    """What ``copy.copy`` makes of a model instance — its fields, its own state and cache
    of related objects (``Model.__getstate__``) — without the pickle protocol's detour."""
    clone = object.__new__(type(user))
    clone.__dict__.update(user.__dict__)
    state = clone._state = ModelState()
    state.__dict__.update(user._state.__dict__)
    state.fields_cache = dict(user._state.fields_cache)
    return clone
