"""API throttles: per authenticated user, per client address, per address when anonymous
(the token endpoint).

Rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (``EDM_THROTTLE_USER``,
``EDM_THROTTLE_ADDRESS``, ``EDM_THROTTLE_ANON``; ``off`` disables one). The client
address is ``REMOTE_ADDR``, or the entry of ``X-Forwarded-For`` that ``EDM_NUM_PROXIES``
names. Counts live in the default cache, so each web process counts its own requests.
A throttled request is answered 429 with ``Retry-After``.
"""

from __future__ import annotations

from rest_framework import throttling
from rest_framework.settings import api_settings


class _CurrentRates:
    """Read the rate when a throttle is made, not when the class was imported, so that a
    changed setting (tests, ``override_settings``) applies."""

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserThrottle(_CurrentRates, throttling.UserRateThrottle):
    """Requests of one authenticated user (anonymous ones are left to the others)."""

    scope = "user"

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class AddressThrottle(_CurrentRates, throttling.SimpleRateThrottle):
    """Every request from one client address, authenticated or not."""

    scope = "address"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class AnonymousThrottle(_CurrentRates, throttling.AnonRateThrottle):
    """Unauthenticated requests from one address (the token endpoint, mostly)."""

    scope = "anon"
