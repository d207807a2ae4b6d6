"""django-q2 entry points of the contacts app (ids in, a service call, nothing else)."""

from __future__ import annotations

from django.conf import settings

from apps.contacts.services import contact_import_run, contact_imports_fail_stale

SCHEDULES: list[dict] = [
    {
        "name": "contacts-fail-stale-imports",
        "func": "apps.contacts.tasks.fail_stale_imports",
        "schedule_type": "I",
        "minutes": 10,
    },
]


def run_contact_import(import_id: int) -> str:
    """Run a queued CSV import; a duplicated job finds it claimed and does nothing."""
    job = contact_import_run(import_id=import_id)
    if job is None:
        return f"import {import_id}: already claimed"
    return f"import {import_id}: {job.status}, {job.rows_read} rows read"


def fail_stale_imports() -> str:
    """Imports still running well past the q2 timeout lost their worker: mark them failed."""
    limit = int(settings.Q_CLUSTER.get("timeout", 300)) + 60
    return f"{contact_imports_fail_stale(older_than_seconds=limit)} stale import(s) failed"
