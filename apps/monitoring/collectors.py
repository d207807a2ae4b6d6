"""Cluster-wide Prometheus figures read from the database at scrape time.

Whichever web process is scraped, these are the whole cluster's — every dispatcher on
every node writes the same tables — and a send is counted once, by the database:

* ``edm_messages_total{outcome}`` — subtasks that reached ``sent``, ``failed``,
  ``dead``, ``skipped``, ``cancelled``, ``unknown`` over every stored task (the sum of
  the progress counters; it only goes down when tasks are deleted, which Prometheus
  reads as a counter reset);
* ``edm_queue_messages{status}`` — queue depth of the live tasks: ``pending``,
  ``allocated``, ``sending``; ``edm_queue_waiting_messages{reason}`` — the waiting
  queue: ``retry`` (back-off) and ``scheduled``; ``edm_queue_oldest_pending_seconds``;
  ``edm_retry_next_due_seconds`` (when the next retry falls due);
* ``edm_service_sends_total{service,outcome}`` (``sent``/``failed`` attempts) and
  ``edm_services{state}`` (``ready``, ``cooling``, ``held``, ``exhausted``,
  ``disabled``);
* ``edm_task_wait_seconds`` — a gauge histogram of the waits (queue entry → first send)
  of the tasks first sent in the last 24 hours;
* ``edm_task_waiting_longest_seconds`` — the longest current wait for a first send;
* ``edm_tasks_active{status}`` (every live status, 0 included);
* ``edm_services_auto_disabled``; ``edm_dead_letters_pending``,
  ``edm_dead_letters_reprocessing``;
  ``edm_dead_letters_entered_recent`` (within ``alerts.event_window``);
* ``edm_dispatcher_slots_live``, ``edm_dispatcher_heartbeat_age_seconds``,
  ``edm_monitor_heartbeat_age_seconds``, ``edm_monitor_round_milliseconds``;
* ``edm_alerts{level,status}`` — open alerts.

Per service only the send counters (``failed`` from a service's first failure on): a
scrape stays small with hundreds of services (the rest of a service's state is on the
dashboard and the API). A database
error yields no EDM figures (the scrape still answers) and ``edm_metrics_collector_up 0``.
"""

from __future__ import annotations

import logging

from django.db import connection
from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
)

from apps.config.selectors import config_get
from apps.dispatch import selectors as dispatch
from apps.monitoring.models import Alert, Level, MonitorLease, TaskWaitMetric
from apps.monitoring.rules import service_auto_disabled

logger = logging.getLogger(__name__)

# The collectors of cluster-wide figures read from the database at scrape time: this
# app's and other apps' (the events relay's), exposed the same in either mode of
# ``/metrics`` (``views.exposition``).
_cluster_collectors: list = []


def cluster_collector_register(collector) -> None:
    """Expose ``collector`` on ``/metrics``: in this process's registry, and beside the
    counters merged from the multiprocess directory. One of each type per process
    (``ready()`` may run again in tests that reload the app registry)."""
    from prometheus_client import REGISTRY

    if any(type(known) is type(collector) for known in _cluster_collectors):
        return
    _cluster_collectors.append(collector)
    REGISTRY.register(collector)


def cluster_collectors() -> list:
    return list(_cluster_collectors)


WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
SERVICE_STATES = ("ready", "cooling", "held", "exhausted", "disabled")
OUTCOMES = ("sent", "failed", "dead", "skipped", "cancelled", "unknown")


class DatabaseCollector:
    def describe(self):
        # Declared lazily: describing must not touch the database at registration time.
        return []

    def collect(self):
        up = GaugeMetricFamily(
            "edm_metrics_collector_up", "1 when the database figures could be read."
        )
        try:
            families = list(self._families())
        except Exception as exc:  # noqa: BLE001 - a scrape must never fail on the database
            logger.warning("metrics collector: database unavailable: %s", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self):
        now = timezone.now()
        yield from self._messages()
        yield from self._queue(now)
        yield from self._services()
        yield self._waits()
        yield from self._dispatchers(now)
        yield from self._alerts()

    def _messages(self):
        totals = dispatch.progress_totals()
        family = CounterMetricFamily(
            "edm_messages", "Messages that reached an outcome, over every stored task.",
            labels=["outcome"],
        )  # fmt: skip
        for outcome in OUTCOMES:
            family.add_metric([outcome], totals[outcome])
        yield family

    def _queue(self, now):
        tasks = dispatch.tasks_live()
        progress = dispatch.tasks_progress([t["id"] for t in tasks])
        times = dispatch.tasks_queue_times(
            [t["id"] for t in tasks if t["status"] in ("queued", "sending")]
        )
        depth = GaugeMetricFamily(
            "edm_queue_messages", "Messages of live tasks by status.", labels=["status"]
        )
        for status in ("pending", "allocated", "sending"):
            depth.add_metric([status], sum(progress[t["id"]][status] for t in tasks))
        yield depth
        waiting = GaugeMetricFamily(
            "edm_queue_waiting_messages",
            "Pending messages waiting for a later moment: retry back-off, a schedule.",
            labels=["reason"],
        )
        waiting.add_metric(["retry"], sum(q["waiting"] for q in times.values()))
        waiting.add_metric(
            ["scheduled"],
            sum(progress[t["id"]]["pending"] for t in tasks if t["status"] == "scheduled"),
        )
        yield waiting
        ready = [q["ready_since"] for q in times.values() if q["ready_since"]]
        oldest = GaugeMetricFamily(
            "edm_queue_oldest_pending_seconds", "Age of the oldest ready message (0: none)."
        )
        oldest.add_metric([], max(0.0, (now - min(ready)).total_seconds()) if ready else 0.0)
        yield oldest
        due = [q["next_waiting_at"] for q in times.values() if q["next_waiting_at"]]
        next_due = GaugeMetricFamily(
            "edm_retry_next_due_seconds", "Seconds until the next retry falls due (0: none)."
        )
        next_due.add_metric([], max(0.0, (min(due) - now).total_seconds()) if due else 0.0)
        yield next_due
        waits = [(now - t["waiting_since"]).total_seconds() for t in tasks if t["waiting_since"]]
        longest = GaugeMetricFamily(
            "edm_task_waiting_longest_seconds",
            "Longest wait of a queued task for its first send, right now (0: none waits).",
        )
        longest.add_metric([], max([0.0, *waits]))
        yield longest
        active = GaugeMetricFamily(
            "edm_tasks_active", "Tasks not yet finished, by status.", labels=["status"]
        )
        for status in dispatch.LIVE_STATUSES:
            active.add_metric([status], sum(1 for t in tasks if t["status"] == status))
        yield active

    def _services(self):
        services = dispatch.service_states()
        sends = CounterMetricFamily(
            "edm_service_sends", "Send attempts of a service by outcome (sent, failed).",
            labels=["service", "outcome"],
        )  # fmt: skip
        states = dict.fromkeys(SERVICE_STATES, 0)
        for service in services:
            sends.add_metric([service["name"], "sent"], service["total_sent"])
            if service["total_failed"]:
                sends.add_metric([service["name"], "failed"], service["total_failed"])
            states[service["state"]] += 1
        yield sends
        by_state = GaugeMetricFamily("edm_services", "Email services by state.", labels=["state"])
        for state, count in states.items():
            by_state.add_metric([state], count)
        yield by_state
        auto = GaugeMetricFamily(
            "edm_services_auto_disabled", "Services the dispatcher disabled after faults."
        )
        auto.add_metric([], len(service_auto_disabled(None, services=services)))
        yield auto
        window = float(config_get("alerts.event_window"))
        dead = dispatch.dead_letters_overview(since_seconds=window)
        pending = GaugeMetricFamily("edm_dead_letters_pending", "Dead letters waiting.")
        pending.add_metric([], dead["pending"])
        yield pending
        reprocessing = GaugeMetricFamily(
            "edm_dead_letters_reprocessing", "Dead letters being sent again (reprocessed)."
        )
        reprocessing.add_metric([], dead["reprocessing"])
        yield reprocessing
        entered = GaugeMetricFamily(
            "edm_dead_letters_entered_recent",
            "Dead letters entered within alerts.event_window (default 15 minutes).",
        )
        entered.add_metric([], dead["entered"])
        yield entered

    def _waits(self):
        cutoff = timezone.now() - timezone.timedelta(days=1)
        buckets = ", ".join(f"count(*) FILTER (WHERE wait_seconds <= {b})" for b in WAIT_BUCKETS)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {buckets}, count(*), coalesce(sum(wait_seconds), 0) "
                f"FROM {TaskWaitMetric._meta.db_table} WHERE first_sent_at > %s",
                [cutoff],
            )
            row = cursor.fetchone()
        counts, total, total_sum = row[: len(WAIT_BUCKETS)], row[-2], row[-1]
        family = GaugeHistogramMetricFamily(
            "edm_task_wait_seconds",
            "Queue entry to first send of the tasks first sent in the last 24 hours.",
            buckets=[(str(float(b)), c) for b, c in zip(WAIT_BUCKETS, counts, strict=True)]
            + [("+Inf", total)],
            gsum_value=float(total_sum),
        )
        return family

    def _dispatchers(self, now):
        slots = dispatch.dispatcher_slots()
        lease = MonitorLease.objects.filter(name="monitor").first()
        live = GaugeMetricFamily(
            "edm_dispatcher_slots_live", "Dispatcher loops holding a live slot."
        )
        live.add_metric([], sum(1 for slot in slots if slot["live"]))
        yield live
        beats = [slot["heartbeat_at"] for slot in slots]
        if lease is not None and lease.last_dispatcher_heartbeat_at:
            beats.append(lease.last_dispatcher_heartbeat_at)
        if beats:
            age = GaugeMetricFamily(
                "edm_dispatcher_heartbeat_age_seconds",
                "Seconds since the newest dispatcher heartbeat.",
            )
            age.add_metric([], max(0.0, (now - max(beats)).total_seconds()))
            yield age
        if lease is not None and lease.heartbeat_at:
            monitor = GaugeMetricFamily(
                "edm_monitor_heartbeat_age_seconds",
                "Seconds since the monitor loop renewed its lease.",
            )
            monitor.add_metric([], max(0.0, (now - lease.heartbeat_at).total_seconds()))
            yield monitor
            round_ms = GaugeMetricFamily(
                "edm_monitor_round_milliseconds", "Duration of the last alert evaluation round."
            )
            round_ms.add_metric([], lease.last_round_ms)
            yield round_ms

    def _alerts(self):
        counts = {
            (level, status): n
            for level, status, n in Alert.objects.exclude(status=Alert.Status.RESOLVED)
            .values_list("level", "status")
            .annotate(n=Count("id"))
            .values_list("level", "status", "n")
        }
        family = GaugeMetricFamily("edm_alerts", "Open alerts.", labels=["level", "status"])
        for level in Level.values:
            for status in (Alert.Status.FIRING, Alert.Status.ACKNOWLEDGED):
                family.add_metric([level, status], counts.get((level, status), 0))
        yield family
