"""API throttles: per authenticated user, per client address, per address when anonymous
(the token endpoint).

Rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (``EDM_THROTTLE_USER``,
``EDM_THROTTLE_ADDRESS``, ``EDM_THROTTLE_ANON``; ``off`` disables one). The client
address is ``REMOTE_ADDR``, or the entry of ``X-Forwarded-For`` that ``EDM_NUM_PROXIES``
names. A throttled request is answered 429 with ``Retry-After``.

The rule is DRF's: at most N requests in any window of the rate's period, a sliding log
of request times per user or address. The log is kept in this process's memory
(:class:`_ProcessLog`), so each web process counts its own requests (as with the
per-process cache the counts lived in before): DRF keeps it in the cache as one list,
which every request reads, unpickles, grows at its front and pickles back — work that
grows with the rate, and at a few hundred requests a second per client cost more than
the rest of a task detail. Here a request costs the same whatever the rate: the log's
expired times are dropped from its old end, the new one added at its new end.
"""

from __future__ import annotations

import threading
from collections import deque

from rest_framework import throttling
from rest_framework.settings import api_settings

# Logs whose newest request is older than their period are dropped this often (seconds).
SWEEP_EVERY = 60.0


class _Logs:
    """Request times per throttle key (oldest first) in this process, and each key's
    period; one lock for all (a request holds it for a few dictionary and deque steps)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, deque[float]] = {}
        self.periods: dict[str, int] = {}
        self.next_sweep = 0.0

    def sweep(self, now: float) -> None:
        """Forget the keys with no request within their period (lock held)."""
        for key in [k for k, log in self.times.items() if log[-1] <= now - self.periods[k]]:
            del self.times[key], self.periods[key]
        self.next_sweep = now + SWEEP_EVERY

    def clear(self) -> None:
        with self.lock:
            self.times.clear()
            self.periods.clear()
            self.next_sweep = 0.0


LOGS = _Logs()


def reset() -> None:
    """Forget every count of this process (tests; a new rate applies to new requests)."""
    LOGS.clear()


class _ProcessLog:
    """DRF's ``SimpleRateThrottle`` rule and answers (``allow_request``, ``wait``) over a
    log kept in this process's memory (module docstring)."""

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = now = self.timer()
        cutoff = now - self.duration
        with LOGS.lock:
            if now >= LOGS.next_sweep:
                LOGS.sweep(now)
            log = LOGS.times.get(self.key)
            if log is None:
                log = LOGS.times[self.key] = deque()
                LOGS.periods[self.key] = self.duration
            while log and log[0] <= cutoff:
                log.popleft()
            if len(log) >= self.num_requests:
                self.oldest, self.counted = (log[0] if log else None), len(log)
                return self.throttle_failure()
            log.append(now)
        return self.throttle_success()

    def throttle_success(self):
        return True

    def wait(self):
        """Seconds until the oldest request in the window leaves it (DRF's answer)."""
        if self.oldest is None:
            return self.duration
        available = self.num_requests - self.counted + 1
        if available <= 0:
            return None
        return (self.duration - (self.now - self.oldest)) / available


class _CurrentRates:
    """Read the rate when a throttle is made, not when the class was imported, so that a
    changed setting (tests, ``override_settings``) applies."""

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserThrottle(_CurrentRates, _ProcessLog, throttling.UserRateThrottle):
    """Requests of one authenticated user (anonymous ones are left to the others)."""

    scope = "user"

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class AddressThrottle(_CurrentRates, _ProcessLog, throttling.SimpleRateThrottle):
    """Every request from one client address, authenticated or not."""

    scope = "address"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class AnonymousThrottle(_CurrentRates, _ProcessLog, throttling.AnonRateThrottle):
    """Unauthenticated requests from one address (the token endpoint, mostly)."""

    scope = "anon"
