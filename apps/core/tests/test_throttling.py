"""The API throttles' log in process memory answers exactly as DRF's cache-kept log.

The ``rates`` fixture forgets every count before and after each test."""

from __future__ import annotations

import random
import threading
from types import SimpleNamespace

import pytest
from rest_framework import throttling as drf

from apps.core import throttling


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _pair(rate: str, clock: _Clock):
    """A throttle of ours and DRF's own, on one rate, one key and one clock."""

    class Ours(throttling._ProcessLog, drf.SimpleRateThrottle):
        def get_cache_key(self, request, view):
            return "throttle_test_someone"

    class Theirs(drf.SimpleRateThrottle):
        def get_cache_key(self, request, view):
            return "throttle_test_someone"

    Ours.rate = Theirs.rate = rate
    Ours.timer = Theirs.timer = staticmethod(clock)
    return Ours, Theirs


@pytest.mark.parametrize("rate", ["3/s", "5/min", "1/s", "20/h"])
def test_every_answer_and_wait_is_drfs_for_random_request_times(rates, rate):
    clock = _Clock()
    ours, theirs = _pair(rate, clock)
    allowed_per_period, period = ours().num_requests, ours().duration
    rng = random.Random(rate)
    request = SimpleNamespace()
    answers = []
    for _ in range(400):
        clock.now += rng.expovariate(2 * allowed_per_period / period)  # twice the rate
        a, b = ours(), theirs()
        allowed = (a.allow_request(request, None), b.allow_request(request, None))
        assert allowed[0] == allowed[1], (clock.now, answers[-5:])
        if not allowed[0]:
            assert a.wait() == pytest.approx(b.wait())
        answers.append(allowed[0])
    assert True in answers and False in answers  # both answers were exercised


def test_the_window_slides_as_the_oldest_request_leaves_it(rates):
    clock = _Clock()
    ours, _ = _pair("3/s", clock)
    request = SimpleNamespace()
    for step in (0.0, 0.3, 0.3):
        clock.now += step
        assert ours().allow_request(request, None)
    clock.now += 0.3  # 0.9 s after the first: still three in the window
    refused = ours()
    assert not refused.allow_request(request, None)
    assert refused.wait() == pytest.approx(0.1)
    clock.now += 0.1  # the first request leaves the window
    assert ours().allow_request(request, None)
    assert not ours().allow_request(request, None)


def test_keys_idle_for_their_period_are_forgotten_at_the_sweep(rates):
    clock = _Clock()
    ours, _ = _pair("2/min", clock)
    ours().allow_request(SimpleNamespace(), None)
    assert "throttle_test_someone" in throttling.LOGS.times
    clock.now += throttling.SWEEP_EVERY + 61
    other = type("Other", (ours,), {"get_cache_key": lambda self, r, v: "throttle_test_other"})
    assert other().allow_request(SimpleNamespace(), None)
    assert "throttle_test_someone" not in throttling.LOGS.times
    assert "throttle_test_other" in throttling.LOGS.times


def test_threads_together_never_pass_more_than_the_rate(rates):
    """Sixteen threads asking at once: exactly the rate's number get through."""
    clock = _Clock()
    ours, _ = _pair("100/min", clock)
    allowed = []
    start = threading.Barrier(16)

    def ask():
        start.wait()
        allowed.extend(ours().allow_request(SimpleNamespace(), None) for _ in range(25))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 100
    assert len(allowed) == 400
