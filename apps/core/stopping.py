"""Stopping long-running loops (dispatcher, monitor) cleanly at SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, signalled: list[int]):
    """Set ``stop`` on SIGINT/SIGTERM while the block runs (main thread only: Python
    delivers signals there), appending the signal to ``signalled``; put the previous
    handlers back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        signalled.append(signum)
        stop.set()

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
