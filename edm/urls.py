"""Top-level URLs. Each app mounts its API under ``/api/`` through its own ``urls.py``."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.core.api import HealthView
from apps.core.auth import TokenView
from apps.monitoring.views import metrics

admin.site.site_header = "EDM administration"
admin.site.site_title = "EDM"

api_patterns = [
    path("health", HealthView.as_view(), name="health"),
    path("auth/token/", TokenView.as_view(), name="auth-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("apps.config.urls")),
    path("", include("apps.contacts.urls")),
    path("", include("apps.services.urls")),
    path("", include("apps.dispatch.urls")),
    path("", include("apps.monitoring.urls")),
    path("", include("apps.deliverability.urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    path("metrics", metrics, name="prometheus-django-metrics"),
    # Public, token-signed: unsubscribe, preferences, tracking; provider webhooks.
    path("", include("apps.deliverability.urls_public")),
]
