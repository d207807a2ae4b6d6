"""Request ids: taken from ``X-Request-ID`` (when sane) or generated, echoed back, logged."""

from __future__ import annotations

import re
import uuid

from apps.core.logging import request_id_var

_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


def _api_error(status: int, detail: str, *, code: str, field: str | None = None):
    from django.http import JsonResponse

    from apps.core.errors import error_body

    errors = {field: [detail]} if field else None
    return JsonResponse(error_body(detail, code=code, errors=errors), status=status)


class ApiRequestLimitsMiddleware:
    """Refuse, before any view reads it, a request that no endpoint can take.

    * A body whose ``Content-Length`` is over the limit: 413 — ``EDM_UPLOAD_MAX_BYTES``
      for a multipart upload (CSV import), ``EDM_API_MAX_BODY_BYTES`` for anything else.
    * A NUL character in the path or the query string (``?search=%00``): 400 naming the
      parameter. PostgreSQL cannot compare or store it.

    Under ``/api/`` the answer is JSON in the API's error shape; elsewhere (the admin) a
    plain-text page with the same status.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        refusal = self._refusal(request)
        if refusal is None:
            return self.get_response(request)
        status, detail, code, field = refusal
        if request.path.startswith("/api/"):
            return _api_error(status, detail, code=code, field=field)
        from django.http import HttpResponse

        return HttpResponse(detail + "\n", status=status, content_type="text/plain")

    def _refusal(self, request) -> tuple[int, str, str, str | None] | None:
        from django.conf import settings

        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return 400, "Content-Length is not a number", "bad_request", None
        upload = request.META.get("CONTENT_TYPE", "").startswith("multipart/form-data")
        limit = settings.EDM_UPLOAD_MAX_BYTES if upload else settings.EDM_API_MAX_BODY_BYTES
        if length > limit:
            return 413, f"the request body is larger than {limit} bytes", "request_too_large", None
        if "\x00" in request.path:
            return 400, "the path contains a NUL character", "invalid", None
        if "%00" in request.META.get("QUERY_STRING", ""):
            for name, values in request.GET.lists():
                if "\x00" in name or any("\x00" in value for value in values):
                    return 400, f"{name}: contains a NUL character", "invalid", name
        return None
