"""Stopping long-running loops (dispatcher, monitor, relay) cleanly at SIGINT/SIGTERM.

A q2 cluster that stops tells its busy workers with SIGINT (``manage.py qcluster``), then
feeds each worker a STOP. A loop task already waiting in the workers' queue is taken
after that SIGINT, so it never sees one: :func:`stop_on_signals` also looks at the
cluster's own stop event (:func:`cluster_stop_event_set`, inherited by every worker the
sentinel forks) and stops such a loop at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

# The stop event of the q2 cluster this process belongs to (None outside a cluster).
_cluster_stop = None


def cluster_stop_event_set(event) -> None:
    """Called by the cluster's sentinel before it forks its workers (they inherit it)."""
    global _cluster_stop
    _cluster_stop = event


def cluster_stopping() -> bool:
    """True once the q2 cluster this process belongs to has been told to stop."""
    return _cluster_stop is not None and _cluster_stop.is_set()


def set_from_signal_handler(event: threading.Event) -> None:
    """Set ``event`` from a signal handler. Python runs a handler in the main thread
    between two bytecodes, which may fall inside that thread's own ``event.wait()`` while
    it holds the event's lock; ``event.set()`` there would wait for that lock forever. A
    short thread sets it instead, as soon as the lock is free."""
    threading.Thread(target=event.set, name="edm-stop", daemon=True).start()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, signalled: list[int]):
    """Set ``stop`` on SIGINT/SIGTERM while the block runs (main thread only: Python
    delivers signals there), appending the signal to ``signalled``; put the previous
    handlers back after. When the cluster is already stopping (the signal came before
    the block), ``stop`` is set at once and ``signalled`` gets SIGINT, as if it had
    come now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        signalled.append(signum)
        set_from_signal_handler(stop)

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        # After the handlers are in place: the sentinel sets its stop event before it
        # sends SIGINT, so a stop is either seen here or caught by the handler.
        if cluster_stopping():
            signalled.append(signal.SIGINT)
            stop.set()
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
