"""Retry delays: fixed, linear, exponential, fibonacci or a custom list, with jitter."""

from __future__ import annotations

import random

from apps.dispatch.conf import DispatchSettings


def retry_delay(attempt: int, conf: DispatchSettings, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next try after failed attempt number ``attempt`` (1-based).

    * fixed: ``initial``
    * linear: ``initial * (1 + multiplier * (attempt - 1))``
    * exponential: ``initial * multiplier^(attempt - 1)``
    * fibonacci: ``initial * F(attempt)`` with F = 1, 1, 2, 3, 5, …
    * custom: the ``attempt``-th value of ``backoff.custom_delays`` (the last one repeats)

    capped at ``backoff.max_delay``, then spread by ``± jitter`` (a fraction), never < 0.
    """
    attempt = max(1, attempt)
    initial = conf.backoff_initial
    strategy = conf.backoff_strategy
    if strategy == "fixed":
        delay = initial
    elif strategy == "linear":
        delay = initial * (1 + conf.backoff_multiplier * (attempt - 1))
    elif strategy == "fibonacci":
        previous, current = 0, 1
        for _ in range(attempt - 1):
            previous, current = current, previous + current
        delay = initial * current
    elif strategy == "custom" and conf.backoff_custom_delays:
        delays = conf.backoff_custom_delays
        delay = delays[min(attempt, len(delays)) - 1]
    else:
        delay = initial * conf.backoff_multiplier ** min(attempt - 1, 64)
    delay = min(delay, conf.backoff_max_delay)
    if conf.backoff_jitter:
        spread = (rng or random).uniform(-conf.backoff_jitter, conf.backoff_jitter)
        delay *= 1 + spread
    return max(0.0, delay)
