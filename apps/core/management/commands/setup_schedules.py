"""``manage.py setup_schedules``: create or update every app's django-q2 schedules.

Each app may declare ``SCHEDULES`` in its ``tasks.py``: a list of dicts with ``name``
(unique), ``func`` (dotted path) and any :class:`django_q.models.Schedule` field
(``schedule_type``, ``minutes``, ``cron``, ``kwargs``...). Running the command again
changes nothing (``update_or_create`` on the name). Schedules that an app no longer
declares but that carry the ``edm:`` prefix are removed.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django_q.models import Schedule

from apps.core.discovery import app_modules

PREFIX = "edm:"


def declared_schedules() -> list[dict]:
    return [spec for module in app_modules("tasks") for spec in getattr(module, "SCHEDULES", [])]


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules every app declares (idempotent)."

    def handle(self, *args, **options):
        names = []
        for declared in declared_schedules():
            spec = dict(declared)
            name = PREFIX + spec.pop("name")
            names.append(name)
            _, created = Schedule.objects.update_or_create(name=name, defaults=spec)
            if options["verbosity"] >= 1:
                self.stdout.write(f"{'created' if created else 'updated'} schedule {name}")
        removed, _ = (
            Schedule.objects.filter(name__startswith=PREFIX).exclude(name__in=names).delete()
        )
        if removed and options["verbosity"] >= 1:
            self.stdout.write(f"removed {removed} obsolete schedule(s)")
