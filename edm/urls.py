"""Top-level URLs. Each app mounts its API under ``/api/`` through its own ``urls.py``.

Every ``/api/…`` URL that no endpoint claims (an unknown path, an id that is not a
number) ends at :func:`apps.core.api.api_not_found`: a JSON 404 in the API's one error
shape, with DEBUG on or off.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularSwaggerView

from apps.core.api import HealthView, SchemaView, api_not_found
from apps.core.auth import TokenView
from apps.core.views import bench_constant, landing
from apps.monitoring.views import metrics

api_patterns = [
    path("health", HealthView.as_view(), name="health"),
    path("auth/token/", TokenView.as_view(), name="auth-token"),
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Django tries the patterns in order: the task detail, which clients poll, first.
    path("", include("apps.dispatch.urls")),
    path("", include("apps.config.urls")),
    path("", include("apps.contacts.urls")),
    path("", include("apps.services.urls")),
    path("", include("apps.monitoring.urls")),
    path("", include("apps.deliverability.urls")),
    path("", include("apps.events.urls")),
]

if settings.EDM_BENCH_ENDPOINTS:
    api_patterns.insert(0, path("bench/constant", bench_constant, name="bench-constant"))

urlpatterns = [
    path("", landing, name="landing"),
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    # After every API route (so new ones can be appended to ``api_patterns``).
    re_path(r"^api/(?P<unmatched>.*)$", api_not_found, name="api-not-found"),
    path("metrics", metrics, name="prometheus-django-metrics"),
    # Public, token-signed: unsubscribe, preferences, tracking; provider webhooks.
    path("", include("apps.deliverability.urls_public")),
]

handler400 = "apps.core.views.bad_request"
handler403 = "apps.core.views.permission_denied"
handler404 = "apps.core.views.page_not_found"
handler500 = "apps.core.views.server_error"
