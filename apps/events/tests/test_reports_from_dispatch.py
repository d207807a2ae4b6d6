"""The reports count what the dispatcher really did: a task sent by a real dispatcher
to a real SMTP sink, counted from the events its statements appended."""

from __future__ import annotations

import pytest

from apps.dispatch.tests.conftest import make_contacts, make_service, pool  # noqa: F401
from apps.dispatch.tests.helpers import ThreadedDispatcher, queue_task, wait_done
from apps.events import projections
from apps.events.models import OwnerDailyCount, TaskDailyCount

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_sent_task_is_counted_per_owner_and_task_from_its_events(
    api,
    user,
    smtp_sink,
    make_contacts,  # noqa: F811 - the fixtures imported above
    make_service,  # noqa: F811
):
    make_contacts(user, 40)
    make_service(port=smtp_sink.port)
    task = queue_task(user)
    with ThreadedDispatcher():
        progress = wait_done(task, timeout=60)
    assert progress["sent"] == 40
    for name in projections.PROJECTIONS:
        projections.projection_catch_up(name=name)
    owner_row = OwnerDailyCount.objects.get(owner=user)
    task_row = TaskDailyCount.objects.get(task_id=task.pk)
    assert (owner_row.queued, owner_row.sent, owner_row.failed) == (40, 40, 0)
    assert (task_row.queued, task_row.sent, task_row.owner_id) == (40, 40, user.pk)
    rows = api.get(f"/api/reports/tasks/{task.pk}/daily").json()["results"]
    assert [(r["queued"], r["sent"]) for r in rows] == [(40, 40)]
