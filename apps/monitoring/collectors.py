"""Cluster-wide Prometheus figures read from the database at scrape time.

The dispatcher's own counters (:mod:`apps.dispatch.metrics`) live in the processes that
move them; this collector gives every scrape of ``/metrics`` on any web process the
cluster-wide state, from small tables only (services, dispatcher slots, task lanes,
dead-letter counts by status — never a scan of the subtask table):

* ``edm_service_sent_total`` / ``edm_service_failed_total`` per service (counters),
* ``edm_service_success_rate``, ``edm_service_avg_response_seconds``,
  ``edm_service_quota_used_today``, ``edm_service_enabled`` per service (gauges),
* ``edm_dispatcher_slots_live`` (gauge), ``edm_tasks_active`` by status (gauge),
* ``edm_dead_letters`` by status (gauge).

A database error during a scrape yields no EDM figures (the scrape still answers), and
``edm_metrics_collector_up`` says 0.
"""

from __future__ import annotations

import logging

from django.db import connection
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

logger = logging.getLogger(__name__)

SERVICES_SQL = """
SELECT s.name, p.name, s.total_sent, s.total_failed, s.success_rate, s.avg_response_time,
       CASE WHEN s.quota_day = current_date THEN s.used_quota ELSE 0 END, s.is_enabled
  FROM services_emailservice s JOIN services_pool p ON p.id = s.pool_id
"""
SLOTS_SQL = "SELECT count(*) FROM dispatch_dispatcherslot WHERE expires_at > now()"
TASKS_SQL = """
SELECT status, count(*) FROM dispatch_task
 WHERE status IN ('scheduled', 'queued', 'sending', 'paused') GROUP BY status
"""
DEAD_LETTERS_SQL = "SELECT status, count(*) FROM dispatch_deadletter GROUP BY status"


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
        labels = ["service", "pool"]
        sent = CounterMetricFamily("edm_service_sent", "Messages sent by a service.", labels=labels)
        failed = CounterMetricFamily(
            "edm_service_failed", "Failed attempts of a service.", labels=labels
        )
        success = GaugeMetricFamily(
            "edm_service_success_rate", "Moving success rate (0..1).", labels=labels
        )
        response = GaugeMetricFamily(
            "edm_service_avg_response_seconds", "Moving average send time.", labels=labels
        )
        quota = GaugeMetricFamily(
            "edm_service_quota_used_today",
            "Messages counted against today's quota.",
            labels=labels,
        )
        enabled = GaugeMetricFamily(
            "edm_service_enabled", "1 when the service may send.", labels=labels
        )
        with connection.cursor() as cursor:
            cursor.execute(SERVICES_SQL)
            for name, pool, total_sent, total_failed, rate, avg, used, is_enabled in cursor:
                key = [name, pool]
                sent.add_metric(key, total_sent)
                failed.add_metric(key, total_failed)
                success.add_metric(key, rate)
                response.add_metric(key, avg)
                quota.add_metric(key, used)
                enabled.add_metric(key, 1 if is_enabled else 0)
            cursor.execute(SLOTS_SQL)
            slots = GaugeMetricFamily(
                "edm_dispatcher_slots_live", "Dispatcher loops holding a live slot."
            )
            slots.add_metric([], cursor.fetchone()[0])
            tasks = GaugeMetricFamily(
                "edm_tasks_active", "Tasks not yet finished, by status.", labels=["status"]
            )
            cursor.execute(TASKS_SQL)
            for status, count in cursor:
                tasks.add_metric([status], count)
            dead = GaugeMetricFamily(
                "edm_dead_letters", "Dead-letter entries by status.", labels=["status"]
            )
            cursor.execute(DEAD_LETTERS_SQL)
            for status, count in cursor:
                dead.add_metric([status], count)
        return [sent, failed, success, response, quota, enabled, slots, tasks, dead]
