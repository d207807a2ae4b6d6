"""Prometheus metrics of the dispatcher (prometheus_client, exported on ``/metrics``).

Counters live in the process that moves them: a dispatcher running in the django-q2
cluster exports them only where a multiprocess registry is configured
(``PROMETHEUS_MULTIPROC_DIR``); the cluster-wide view (services, slots, tasks, dead
letters) is read from the database at scrape time by :mod:`apps.monitoring.collectors`.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

DISPATCH_MESSAGES = Counter(
    "edm_dispatch_messages_total",
    "Messages handled by the dispatcher, by outcome "
    "(sent, retry, requeued, failed, dead, cancelled, lost, service_fault).",
    ["outcome"],
)
DISPATCH_CLAIMED = Counter("edm_dispatch_claimed_total", "Subtasks claimed by dispatcher ticks.")
DISPATCH_TICK_SECONDS = Histogram(
    "edm_dispatch_tick_seconds",
    "Duration of one tick's reserve + fair pick transaction.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
DISPATCH_RECOVERED = Counter(
    "edm_dispatch_recovered_total",
    "Subtasks moved by stuck-work recovery, by what became of them (pending, unknown).",
    ["to"],
)
