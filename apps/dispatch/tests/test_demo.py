"""The demo seed of the dispatch app."""

from __future__ import annotations

from apps.dispatch import demo
from apps.dispatch.models import Task
from apps.services.models import Pool


def test_demo_queues_one_task_once(user, staff_user, pool, make_contacts):
    assert "no tagged contacts" in demo.seed(operator=staff_user, user=user)
    make_contacts(user, 3)
    assert demo.seed(operator=staff_user, user=user).startswith("queued demo task")
    assert "already there" in demo.seed(operator=staff_user, user=user)
    task = Task.objects.get(owner=user)
    assert task.status == Task.Status.QUEUED and task.total == 3


def test_demo_without_a_default_pool_does_nothing(user, staff_user, make_contacts):
    make_contacts(user, 1)
    Pool.objects.filter(name=Pool.DEFAULT_NAME).delete()
    assert "no default pool" in demo.seed(operator=staff_user, user=user)
    assert not Task.objects.exists()
