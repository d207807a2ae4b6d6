"""Events API under ``/api/webhooks/`` and ``/api/reports/``."""

from __future__ import annotations

from django.urls import path

from apps.events import api

urlpatterns = [
    path("webhooks/", api.WebhookListView.as_view(), name="webhooks"),
    path("webhooks/<int:pk>/", api.WebhookDetailView.as_view(), name="webhook"),
    path(
        "webhooks/<int:pk>/rotate-secret",
        api.WebhookRotateView.as_view(),
        name="webhook-rotate-secret",
    ),
    path(
        "webhooks/<int:pk>/deliveries/",
        api.WebhookDeliveryListView.as_view(),
        name="webhook-deliveries",
    ),
    path(
        "webhooks/deliveries/<int:pk>/",
        api.WebhookDeliveryDetailView.as_view(),
        name="webhook-delivery",
    ),
    path(
        "webhooks/deliveries/<int:pk>/replay",
        api.WebhookReplayView.as_view(),
        name="webhook-delivery-replay",
    ),
    path("reports/daily", api.OwnerDailyReportView.as_view(), name="reports-daily"),
    path(
        "reports/tasks/<int:task_id>/daily",
        api.TaskDailyReportView.as_view(),
        name="reports-task-daily",
    ),
    path("reports/projections/", api.ProjectionListView.as_view(), name="reports-projections"),
] + [
    path(
        f"reports/projections/<str:name>/{action}",
        view.as_view(),
        name=f"reports-projection-{action}",
    )
    for action, view in api.PROJECTION_VIEWS.items()
]
