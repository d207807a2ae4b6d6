"""API plumbing shared by every app: the one error shape, the permission of operators,
the answer to unknown URLs, the short path of polled GETs, and the health endpoint.

Every 4xx under ``/api/`` has one body::

    {"detail": "<one sentence>", "code": "<machine code>", "errors": {"<field>": ["<reason>", …]}}

``errors`` names the fields (or query parameters) at fault and is ``{}`` when no field is
(an unknown URL, a missing login, a permission). Nested input errors are flattened to
dotted paths (``contacts.3.email``). Browsers asking for HTML who are not logged in get
a page with a link to the login form instead (the API docs, the browsable API).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import quote

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.response import SimpleTemplateResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.errors import ApplicationError, error_body
from apps.core.parsers import RequestTooLarge
from apps.core.tenancy import is_operator

logger = logging.getLogger(__name__)

NON_FIELD = "non_field_errors"

__all__ = [
    "IsOperator",
    "PlainTokenGetMixin",
    "error_body",
    "exception_handler",
    "plain_json_get",
    "validation_body",
]


def _flatten(data, prefix: str = "") -> dict[str, list[str]]:
    """DRF error details (dicts, lists, nested) as ``{dotted.path: [reason, …]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, int) and prefix and _is_reasons(value):
                # An item of a list of plain values: the field is the list.
                out.setdefault(prefix, []).extend(f"item {key}: {v}" for v in value)
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            for path, reasons in _flatten(value, name).items():
                out.setdefault(path, []).extend(reasons)
    elif _is_reasons(data):
        out[prefix or NON_FIELD] = [str(v) for v in data]
    elif isinstance(data, list):
        for index, value in enumerate(data):
            if isinstance(value, str):
                out.setdefault(prefix or NON_FIELD, []).append(value)
            elif value:
                out.update(_flatten(value, f"{prefix}.{index}" if prefix else str(index)))
    elif data not in (None, ""):
        out[prefix or NON_FIELD] = [str(data)]
    return out


def _is_reasons(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _first_code(codes) -> str:
    while isinstance(codes, dict | list):
        if not codes:
            return "invalid"
        codes = next(iter(codes.values())) if isinstance(codes, dict) else codes[0]
    return str(codes or "invalid")


def _summary(errors: dict[str, list[str]]) -> str:
    if not errors:
        return "Invalid input."
    field, reasons = next(iter(errors.items()))
    summary = reasons[0] if field == NON_FIELD else f"{field}: {reasons[0]}"
    more = sum(len(r) for r in errors.values()) - 1
    return summary + (f" (and {more} more)" if more else "")


def validation_body(errors: dict[str, list[str]], *, code: str = "invalid") -> dict:
    """The body of a 400 for ``errors`` (field → reasons)."""
    return error_body(_summary(errors), code=code, errors=errors)


def _wants_html(request) -> bool:
    renderer = getattr(request, "accepted_renderer", None)
    return renderer is not None and renderer.media_type.startswith("text/html")


def login_page(request: HttpRequest, *, status_code: int = 401) -> HttpResponse:
    """For a browser that is not logged in: where to log in, and back."""
    login = "/admin/login/?next=" + quote(request.get_full_path())
    response = SimpleTemplateResponse(
        "api/login_required.html", {"login_url": login}, status=status_code
    )
    response["WWW-Authenticate"] = "Token"
    response.render()
    return response


def exception_handler(exc, context):
    """DRF exception handler: every client error in the one shape (module docstring).

    * ``ApplicationError`` → 400 naming its field;
    * Django and DRF validation errors → 400 with every field's reasons;
    * a body or form over its limit → 413;
    * everything DRF knows (401, 403, 404, 405, 406, 415, 429, parse errors) → its status
      and headers, the body in the one shape.
    """
    if isinstance(exc, RequestTooLarge):
        return Response(exc.as_dict(), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, ApplicationError):
        return Response(exc.as_dict(), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig | TooManyFieldsSent | TooManyFilesSent):
        # Django's own form limits (DATA_UPLOAD_MAX_*), met while DRF reads a form.
        return Response(
            error_body(str(exc), code="request_too_large"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            errors = {
                field: [str(m) for e in errs for m in e.messages]
                for field, errs in exc.error_dict.items()
            }
        else:
            errors = {NON_FIELD: list(exc.messages)}
        return Response(validation_body(errors), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    request = context.get("request")
    if (
        request is not None
        and isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed)
        and _wants_html(request)
    ):
        return login_page(request)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        response.data = validation_body(errors, code=_first_code(exc.get_codes()))
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        if isinstance(detail, dict | list):
            errors = _flatten(detail)
            response.data = error_body(
                _summary(errors), code=_first_code(exc.get_codes()), errors=errors
            )
        else:
            code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
            response.data = error_body(str(detail), code=str(code))
    return response


@csrf_exempt  # a token client sends no CSRF token: its DELETE gets the 404, not a 403 page
def api_not_found(request: HttpRequest, unmatched: str = "") -> JsonResponse:
    """Any ``/api/…`` URL that names no endpoint (also an id that is not a number), with
    any method."""
    detail = f"no API endpoint at {request.path}"
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            detail += f"; did you mean {request.path}/ ?"
    return JsonResponse(error_body(detail, code="not_found"), status=404)


class IsOperator(BasePermission):
    """Operators only (the one rule of :mod:`apps.core.tenancy`)."""

    message = "Only operators may use this endpoint."

    def has_permission(self, request, view) -> bool:
        return is_operator(request.user)


# The last time the database answered the health probe, per connection: probes polled
# hundreds of times a second (load balancers, benchmarks) cost no round trip each.
HEALTH_FRESH_SECONDS = 1.0
_health_ok = threading.local()


def _database_answered_lately() -> bool:
    raw = connection.connection
    seen = getattr(_health_ok, "seen", None)
    return (
        raw is not None
        and not raw.closed
        and seen is not None
        and seen[0] is raw
        and time.monotonic() - seen[1] < HEALTH_FRESH_SECONDS
    )


# What DRF answers a JSON client when the database is fine (the same bytes and headers).
_HEALTH_OK_BODY = b'{"status":"ok","database":"ok"}'
_HEALTH_OK_HEADERS = {"Vary": "Accept", "Allow": "GET, HEAD, OPTIONS"}
# ``Accept`` headers for which DRF's content negotiation picks JSON, as probes send them.
_JSON_ACCEPTS = frozenset({"", "*/*", "application/json"})


def plain_json_get(request: HttpRequest) -> bool:
    """A GET for JSON without a query string (no ``?format=``): DRF would answer JSON."""
    meta = request.META
    return (
        request.method == "GET"
        and not meta.get("QUERY_STRING")
        and meta.get("HTTP_ACCEPT", "") in _JSON_ACCEPTS
    )


# The plain path's last answer for each object, per process (``rendered_once``): its key,
# body and content type; at most ``_RENDERINGS_MAX`` (then it starts over), none over
# ``_RENDERING_MAX_BYTES``.
_renderings: dict[tuple, tuple] = {}
_RENDERINGS_MAX = 1_000
_RENDERING_MAX_BYTES = 64 * 1024


class PlainTokenGetMixin:
    """For an ``APIView`` that API clients poll: a plain GET for JSON (:func:`plain_json_get`)
    with an API token (``Authorization: Token …``) is answered on Django's request,
    without DRF's request wrapper, parsers and content negotiation, which such a request
    needs none of. Everything else is DRF's own, in DRF's order: the view's first
    authentication class decides (the token cache; a bad token is a 401 as ever), then
    the permissions, the throttles (counted, and a 429 when one refuses), the view's
    ``get``; errors go through the exception handler (the one error shape); the response
    is DRF's ``Response``, finalized and rendered by the JSON renderer DRF picks for
    such a request. So the bytes and headers are DRF's, and nothing of the view is
    written twice. Any other request (a browser's ``Accept``, ``?format=``, another
    method, a session or no credentials) goes through DRF's ``dispatch``."""

    def dispatch(self, request, *args, **kwargs):
        authenticator = self.get_authenticators()[0]
        renderer = self.get_renderers()[0]
        keyword = getattr(authenticator, "keyword", "")
        authorization = request.META.get("HTTP_AUTHORIZATION", "")
        if not (
            keyword
            and renderer.media_type == "application/json"
            and plain_json_get(request)
            and authorization[: len(keyword) + 1].lower() == keyword.lower() + " "
        ):
            return super().dispatch(request, *args, **kwargs)
        self.args, self.kwargs, self.request = args, kwargs, request
        self.headers = self.default_response_headers
        self.format_kwarg = None
        request.accepted_renderer, request.accepted_media_type = renderer, renderer.media_type
        request.version, request.versioning_scheme = self.determine_version(request)
        try:
            request.user, request.auth = authenticator.authenticate(request)
            self.check_permissions(request)
            self.check_throttles(request)
            response = self.get(request, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - as DRF's dispatch: the handler decides
            response = self.handle_exception(exc)
        self.response = self.finalize_response(request, response, *args, **kwargs)
        return self.response

    def rendered_once(self, name, key, represent: Callable[[], object]) -> HttpResponse:
        """The response with ``represent()``, the representation of the object ``name``,
        which is the same whenever ``key`` is. On the plain path, the first answer for a
        key is DRF's ``Response``, and this process remembers its body and content type:
        while the key holds, the next requests get those bytes without representing or
        rendering again (``finalize_response`` adds DRF's headers to either). On DRF's
        path it is always DRF's own ``Response``."""
        request = self.request
        if isinstance(request, Request):
            return Response(represent())
        name, key = (type(self), name), (type(request.accepted_renderer), key)
        known = _renderings.get(name)
        if known is not None and known[0] == key:
            return HttpResponse(known[1], content_type=known[2])
        response = Response(represent())

        def remember(rendered) -> None:
            if len(rendered.content) <= _RENDERING_MAX_BYTES and rendered.status_code == 200:
                if len(_renderings) >= _RENDERINGS_MAX:
                    _renderings.clear()
                _renderings[name] = (key, rendered.content, rendered["Content-Type"])

        response.add_post_render_callback(remember)
        return response

    def permission_denied(self, request, message=None, code=None):
        if not isinstance(request, Request):  # authenticated by its token
            raise exceptions.PermissionDenied(detail=message, code=code)
        super().permission_denied(request, message=message, code=code)

    def raise_uncaught_exception(self, exc):
        if isinstance(self.request, Request):
            super().raise_uncaught_exception(exc)
        raise exc


class HealthView(APIView):
    """Liveness: 200 when the database answers, 503 when it does not. No authentication.

    The database is asked at most once a second per connection: within a second of its
    last answer on the same, open connection, the probe answers 200 without a round trip
    (a connection that was closed or lost is asked again). Such a probe (a plain GET
    for JSON) is answered before DRF's request handling, with the bytes and headers DRF
    would send: load balancers poll it, and negotiation and rendering cost more than
    the rest of the request."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []  # load balancers and probes poll it

    def dispatch(self, request, *args, **kwargs):
        if plain_json_get(request) and _database_answered_lately():
            return HttpResponse(
                _HEALTH_OK_BODY, content_type="application/json", headers=_HEALTH_OK_HEADERS
            )
        return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        responses={
            (code, "application/json"): inline_serializer(
                name=f"Health{code}",
                fields={"status": serializers.CharField(), "database": serializers.CharField()},
            )
            for code in (200, 503)
        }
    )
    def get(self, request):
        if _database_answered_lately():
            return Response({"status": "ok", "database": "ok"})
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            _health_ok.seen = (connection.connection, time.monotonic())
        except Exception as exc:  # noqa: BLE001 - any DB failure means "unhealthy"
            logger.warning("health check: database unavailable: %s", exc.__class__.__name__)
            return Response(
                {"status": "unavailable", "database": "unavailable"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response({"status": "ok", "database": "ok"})


_schema_lock = threading.Lock()


class SchemaView(SpectacularAPIView):
    """``/api/schema/``: the OpenAPI document, generated one request at a time.

    drf-spectacular's generation is not thread-safe: the first requests of a threaded
    server (a ``gthread`` worker, the test server) that generate it at the same time
    answered 500 (its extensions are loaded lazily, shared by every thread).
    """

    def _get_schema_response(self, request):
        with _schema_lock:
            return super()._get_schema_response(request)
