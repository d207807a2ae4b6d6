"""Prometheus figures of the events relay, read from the database at scrape time.

* ``edm_events_publish_lag_seconds`` — how long the oldest unpublished event has waited
  (0 when none waits);
* ``edm_events_projection_lag_seconds{projection}`` — per projection, how long the
  oldest event it has not consumed has waited; ``edm_events_projection_paused``;
* ``edm_webhook_deliveries_pending`` and ``edm_webhook_endpoints_disabled``;
* ``edm_events_relays_live`` — relay loops holding a live lease.

A database error yields none of these (the scrape still answers).
"""

from __future__ import annotations

import logging

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)


class EventsCollector:
    def describe(self):
        return []

    def collect(self):
        try:
            families = list(self._families())
        except Exception as exc:  # noqa: BLE001 - a scrape must never fail on the database
            logger.warning("events collector: database unavailable: %s", exc.__class__.__name__)
            return
        yield from families

    def _families(self):
        from apps.events import projections, relay
        from apps.events.models import RelayLease, WebhookDelivery, WebhookEndpoint

        lag = GaugeMetricFamily(
            "edm_events_publish_lag_seconds", "Age of the oldest unpublished event."
        )
        lag.add_metric([], relay.publish_lag_seconds())
        yield lag
        status = projections.projections_status()
        projection_lag = GaugeMetricFamily(
            "edm_events_projection_lag_seconds",
            "Age of the oldest event a projection has not consumed.",
            labels=["projection"],
        )
        paused = GaugeMetricFamily(
            "edm_events_projection_paused", "1 when a projection is paused.", labels=["projection"]
        )
        for row in status:
            projection_lag.add_metric([row["name"]], row["lag_seconds"])
            paused.add_metric([row["name"]], 1 if row["status"] == "paused" else 0)
        yield projection_lag
        yield paused
        pending = GaugeMetricFamily(
            "edm_webhook_deliveries_pending", "Webhook deliveries waiting to be delivered."
        )
        pending.add_metric([], WebhookDelivery.objects.filter(status="pending").count())
        yield pending
        disabled = GaugeMetricFamily(
            "edm_webhook_endpoints_disabled", "Webhook endpoints that are disabled."
        )
        disabled.add_metric([], WebhookEndpoint.objects.filter(is_enabled=False).count())
        yield disabled
        live = GaugeMetricFamily("edm_events_relays_live", "Relay loops holding a live lease.")
        live.add_metric([], RelayLease.objects.filter(expires_at__gt=timezone.now()).count())
        yield live
