"""Dispatch API routes, mounted under ``/api/`` (see :mod:`apps.dispatch.api`)."""

from __future__ import annotations

from django.urls import path

from apps.dispatch import api

urlpatterns = [
    path("tasks/", api.TaskListCreateView.as_view(), name="task-list"),
    path("tasks/<int:pk>/", api.TaskDetailView.as_view(), name="task-detail"),
    path("tasks/<int:pk>/queue", api.TaskQueueView.as_view(), name="task-queue"),
    path("tasks/<int:pk>/pause", api.TaskPauseView.as_view(), name="task-pause"),
    path("tasks/<int:pk>/resume", api.TaskResumeView.as_view(), name="task-resume"),
    path("tasks/<int:pk>/cancel", api.TaskCancelView.as_view(), name="task-cancel"),
    path(
        "tasks/<int:pk>/requeue-unknown",
        api.TaskRequeueUnknownView.as_view(),
        name="task-requeue-unknown",
    ),
    path("tasks/<int:pk>/subtasks/", api.TaskSubTaskListView.as_view(), name="task-subtasks"),
    path("dlq", api.DeadLetterListView.as_view(), name="dlq-list"),
    path("dlq/stats", api.DeadLetterStatsView.as_view(), name="dlq-stats"),
    path("dlq/reprocess-all", api.DeadLetterReprocessAllView.as_view(), name="dlq-reprocess-all"),
    path(
        "dlq/<int:pk>/reprocess",
        api.DeadLetterReprocessView.as_view(),
        name="dlq-reprocess",
    ),
]
