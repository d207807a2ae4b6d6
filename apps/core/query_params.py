"""Unknown query parameters under ``/api/`` are a 400 naming them, never ignored.

The parameters an endpoint accepts are the ones its OpenAPI schema documents (filters,
paging, ``extend_schema(parameters=…)``), plus ``format``: what the schema promises and
what the API accepts cannot drift apart. The schema is built once per process, on the
first API request that has a query string. Endpoints the schema does not describe (the
schema and docs views themselves) are not checked.
"""

from __future__ import annotations

import re
import threading

from django.http import JsonResponse

from apps.core.api import validation_body

ALWAYS_ALLOWED = frozenset({"format"})

_lock = threading.Lock()
_spec: list[tuple[re.Pattern[str], dict[str, frozenset[str]]]] | None = None


def _build() -> list[tuple[re.Pattern[str], dict[str, frozenset[str]]]]:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    spec = []
    for path, operations in schema.get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path.rstrip("/")))
        methods = {
            method: frozenset(
                p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"
            )
            for method, operation in operations.items()
        }
        spec.append((path.count("{"), re.compile(pattern), methods))
    # Literal paths before templated ones (``/contacts/bulk`` before ``/contacts/{id}``).
    spec.sort(key=lambda entry: entry[0])
    return [(pattern, methods) for _, pattern, methods in spec]


def documented_query_parameters(path: str, method: str) -> frozenset[str] | None:
    """The query parameters the schema documents for ``method`` on ``path``; ``None``
    when the schema does not describe that endpoint."""
    global _spec
    if _spec is None:
        with _lock:
            if _spec is None:
                _spec = _build()
    key = path.rstrip("/")
    for pattern, methods in _spec:
        if pattern.fullmatch(key):
            return methods.get(method.lower())
    return None


class ApiQueryParametersMiddleware:
    """Answers 400 in the one error shape for a query parameter the endpoint does not
    document (``?pagesize=`` for ``?page_size=``, ``?staus=``…)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not request.GET or not request.path.startswith("/api/"):
            return None
        allowed = documented_query_parameters(request.path, request.method)
        if allowed is None:
            return None
        unknown = sorted(set(request.GET) - allowed - ALWAYS_ALLOWED)
        if not unknown:
            return None
        known = ", ".join(sorted(allowed)) or "none"
        errors = {
            name: [f"unknown query parameter (this endpoint takes: {known})"] for name in unknown
        }
        return JsonResponse(validation_body(errors, code="unknown_parameter"), status=400)
