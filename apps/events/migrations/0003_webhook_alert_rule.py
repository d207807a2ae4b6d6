"""The alert rule on webhook endpoints the relay disabled (``apps.events.alerts``);
operators change or disable it like the other seeded rules."""

from django.db import migrations

SEED = "webhook-auto-disabled"


def seed(apps, schema_editor):
    AlertRule = apps.get_model("monitoring", "AlertRule")
    AlertRule.objects.get_or_create(
        seed=SEED,
        defaults={
            "name": "Webhook endpoint disabled after failures",
            "metric": "webhook_auto_disabled",
            "comparison": "gte",
            "threshold": 1,
            "for_seconds": 0,
            "level": "critical",
            "description": "The relay disabled a webhook endpoint that kept failing; its "
            "events wait for it. Enable it once the receiver is fixed.",
        },
    )


def unseed(apps, schema_editor):
    apps.get_model("monitoring", "AlertRule").objects.filter(seed=SEED).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0002_outbox_webhooks_projections"),
        ("monitoring", "0003_seed_alert_rules"),
    ]

    operations = [migrations.RunPython(seed, unseed)]
