"""Plain Django views of the core app: the landing page, error pages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.urls import reverse
from django.views import defaults

from apps.core.errors import error_body


def landing(request: HttpRequest) -> HttpResponseRedirect:
    """``/``: the admin is where people work."""
    return HttpResponseRedirect(reverse("admin:index"))


_CONSTANT = b'{"status":"ok"}'


def bench_constant(request: HttpRequest) -> HttpResponse:
    """The API benchmark's ceiling: a constant JSON body behind the whole middleware
    stack, no authentication, no database (mounted only with ``EDM_BENCH_ENDPOINTS``)."""
    return HttpResponse(_CONSTANT, content_type="application/json")


# Django's error pages, in the API's one error shape under /api/ (with DEBUG off: with
# DEBUG on, Django shows its debugging pages; unknown API URLs never reach them, see
# ``edm.urls``).


def _api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    if _api(request):
        return JsonResponse(error_body("Bad request.", code="bad_request"), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _api(request):
        detail = str(exception or "") or "You do not have permission to do this."
        return JsonResponse(error_body(detail, code="permission_denied"), status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception=None):
    if _api(request):
        return JsonResponse(
            error_body(f"no API endpoint at {request.path}", code="not_found"), status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _api(request):
        return JsonResponse(error_body("Server error.", code="server_error"), status=500)
    return defaults.server_error(request)
