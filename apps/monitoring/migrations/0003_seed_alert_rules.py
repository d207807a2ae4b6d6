"""The alert rules EDM starts with (``apps.monitoring.seeds``)."""

from django.db import migrations

from apps.monitoring.seeds import SEEDED_RULES, rules_seed


def seed(apps, schema_editor):
    rules_seed(apps.get_model("monitoring", "AlertRule"))


def unseed(apps, schema_editor):
    AlertRule = apps.get_model("monitoring", "AlertRule")
    AlertRule.objects.filter(seed__in=[rule[0] for rule in SEEDED_RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0002_alerts_samples_channels")]

    operations = [migrations.RunPython(seed, unseed)]
