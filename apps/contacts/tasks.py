"""django-q2 entry points of the contacts app (ids in, a service call, nothing else)."""

from __future__ import annotations

from apps.contacts.services import contact_import_run

SCHEDULES: list[dict] = []


def run_contact_import(import_id: int) -> str:
    """Run a queued CSV import; a duplicated job finds it claimed and does nothing."""
    job = contact_import_run(import_id=import_id)
    if job is None:
        return f"import {import_id}: already claimed"
    return f"import {import_id}: {job.status}, {job.rows_read} rows read"
