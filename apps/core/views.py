"""Plain Django views of the core app."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse
from django_prometheus import exports


def metrics(request):
    """Prometheus exposition. Open unless ``EDM_METRICS_TOKEN`` is set (then Bearer auth)."""
    token = settings.EDM_METRICS_TOKEN
    if token:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), token.encode()):
            response = HttpResponse("authentication required\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return exports.ExportToDjangoView(request)
