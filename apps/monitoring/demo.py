"""Demo data of monitoring: an e-mail channel to the demo operator on every seeded rule
(alert mail goes through the first demo service into the local sink, ``.edm/mail``)."""

from __future__ import annotations

from apps.monitoring.models import AlertRule, NotificationChannel
from apps.monitoring.seeds import rules_seed
from apps.monitoring.services import channel_create

DEMO_CHANNEL = "Operator e-mail (demo)"


def seed(*, operator, user) -> str:
    """Idempotent: an existing demo channel is left as it is."""
    rules_seed(AlertRule)
    channel = NotificationChannel.objects.filter(name=DEMO_CHANNEL).first()
    if channel is None:
        channel, _ = channel_create(
            name=DEMO_CHANNEL, kind="email", target=operator.email or "operator@localhost"
        )
    for rule in AlertRule.objects.exclude(seed=""):
        rule.channels.add(channel)
    return f"alert rules notify {channel.target} through channel {channel.name!r}"
