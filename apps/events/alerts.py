"""The alert when the relay disables a failing webhook endpoint.

Monitoring's rules watch metrics (``apps.monitoring.rules.METRICS``); this module adds
``webhook_auto_disabled`` — 1 per endpoint the relay disabled after
``events.webhook_disable_after`` consecutive failed attempts, for its owner — and the
migration ``0003_webhook_alert_rule`` seeds the rule "Webhook endpoint disabled after
failures" (critical) on it. The alert resolves once the endpoint is enabled again (its
failures cleared); notifications go through monitoring's channels like any other alert.
"""

from __future__ import annotations

METRIC = "webhook_auto_disabled"
RULE_SEED = "webhook-auto-disabled"


def webhook_auto_disabled(snap) -> list:
    from apps.events.models import WebhookEndpoint
    from apps.events.relay import AUTO_DISABLED_MARK
    from apps.monitoring.rules import Observation

    disabled = WebhookEndpoint.objects.filter(
        is_enabled=False, disabled_reason__contains=AUTO_DISABLED_MARK
    ).values("id", "url", "owner_id", "disabled_reason")[:1000]
    return [
        Observation(
            f"webhook:{e['id']}",
            1.0,
            f"webhook endpoint {e['url']!r} ({e['disabled_reason']})",
            owner_id=e["owner_id"],
        )
        for e in disabled
    ]


def metric_register() -> None:
    """Make the metric known to monitoring's rules (idempotent)."""
    from apps.monitoring.rules import METRICS, Metric

    METRICS.setdefault(
        METRIC,
        Metric(METRIC, "1 per webhook endpoint disabled after failures.", webhook_auto_disabled),
    )
