"""Deliverability API routes, mounted under ``/api/``."""

from __future__ import annotations

from django.urls import path

from apps.deliverability import api

urlpatterns = [
    path("suppressions/", api.SuppressionListView.as_view(), name="suppression-list"),
    path("suppressions/import", api.SuppressionImportView.as_view(), name="suppression-import"),
    path("suppressions/export", api.SuppressionExportView.as_view(), name="suppression-export"),
    path("suppressions/<int:pk>/lift", api.SuppressionLiftView.as_view(), name="suppression-lift"),
    path("tasks/<int:pk>/stats", api.TaskStatsView.as_view(), name="task-stats"),
]
