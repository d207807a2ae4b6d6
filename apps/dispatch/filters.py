"""Query-string filters of the dispatch API (django-filter).

A bad value (an unknown status, a task that is not a number) answers 400 naming the
parameter; filters never widen what a caller may see (the views scope the queryset first).
"""

from __future__ import annotations

import django_filters

from apps.dispatch.models import DeadLetter, SubTask, Task


class TaskFilter(django_filters.FilterSet):
    """``?status=`` (one of the task statuses) and ``?pool=`` (pool id)."""

    status = django_filters.ChoiceFilter(choices=Task.Status.choices)
    pool = django_filters.NumberFilter(field_name="pool_id")

    class Meta:
        model = Task
        fields = ["status", "pool"]


class SubTaskFilter(django_filters.FilterSet):
    """``?status=`` (one of the subtask statuses)."""

    status = django_filters.ChoiceFilter(choices=SubTask.Status.choices)

    class Meta:
        model = SubTask
        fields = ["status"]


class DeadLetterFilter(django_filters.FilterSet):
    """``?task=`` (task id), ``?error_type=``, ``?status=``, ``?owner=`` (user id; only
    narrows what the caller already sees, so it matters to staff alone)."""

    task = django_filters.NumberFilter(field_name="task_id")
    error_type = django_filters.CharFilter(field_name="error_type")
    status = django_filters.ChoiceFilter(choices=DeadLetter.Status.choices)
    owner = django_filters.NumberFilter(field_name="owner_id")

    class Meta:
        model = DeadLetter
        fields = ["task", "error_type", "status", "owner"]
