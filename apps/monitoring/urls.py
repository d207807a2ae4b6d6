"""Monitoring API under ``/api/monitoring/`` (and ``/metrics`` in ``edm/urls.py``)."""

from __future__ import annotations

from django.urls import path

from apps.monitoring import api

urlpatterns = [
    path(
        "monitoring/system-health",
        api.SystemHealthView.as_view(),
        name="monitoring-system-health",
    ),
    path(
        "monitoring/performance-metrics",
        api.PerformanceMetricsView.as_view(),
        name="monitoring-performance-metrics",
    ),
    path("monitoring/queue-status", api.QueueStatusView.as_view(), name="monitoring-queue-status"),
    path("monitoring/alerts", api.AlertListView.as_view(), name="monitoring-alerts"),
    path("monitoring/alerts/<int:pk>", api.AlertDetailView.as_view(), name="monitoring-alert"),
    path(
        "monitoring/alerts/<int:pk>/acknowledge",
        api.AlertAcknowledgeView.as_view(),
        name="monitoring-alert-acknowledge",
    ),
    path(
        "monitoring/alerts/<int:pk>/resolve",
        api.AlertResolveView.as_view(),
        name="monitoring-alert-resolve",
    ),
    path("monitoring/alert-rules/", api.AlertRuleListView.as_view(), name="monitoring-rules"),
    path(
        "monitoring/alert-rules/<int:pk>/",
        api.AlertRuleDetailView.as_view(),
        name="monitoring-rule",
    ),
    path("monitoring/channels/", api.ChannelListView.as_view(), name="monitoring-channels"),
    path(
        "monitoring/channels/<int:pk>/",
        api.ChannelDetailView.as_view(),
        name="monitoring-channel",
    ),
    path(
        "monitoring/channels/<int:pk>/test",
        api.ChannelTestView.as_view(),
        name="monitoring-channel-test",
    ),
]
