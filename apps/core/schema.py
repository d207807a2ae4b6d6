"""OpenAPI schema: what the server answers, documented where drf-spectacular cannot see it.

* :class:`AutoSchema` — a list that an ``APIView`` pages by hand (``_paginated`` in the
  apps' views) is documented as the page it answers, not as a bare array.
* :func:`error_responses` — the one error shape (:mod:`apps.core.api`), added once as the
  ``Error`` component and referenced by every status code an operation can answer besides
  its own: 400, 401, 403, 404 everywhere; 413 and 415 where a body is taken; 429 where
  a throttle counts (every operation but the health probe); and the web server's own
  414 (an HTML page) for a request line it will not read.
"""

from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.generics import GenericAPIView

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every 4xx answer under /api/ (unknown URL and bad id included).",
    "properties": {
        "detail": {"type": "string", "description": "One sentence for a person."},
        "code": {
            "type": "string",
            "description": "Machine-readable: invalid, required, not_found, "
            "not_authenticated, permission_denied, parse_error, unknown_parameter, "
            "request_too_large, unsupported_media_type, throttled, locked_out…",
        },
        "errors": {
            "type": "object",
            "description": "Reasons by field or query parameter (dotted paths for nested "
            "input, `non_field_errors` for the input as a whole); empty when no field is "
            "at fault.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "required": ["detail", "code", "errors"],
}

# The client errors any endpoint may answer, and why.
ERRORS = {
    "400": "Invalid input or query parameter (named in `errors`).",
    "401": "Not logged in (no or a bad token).",
    "403": "Not allowed for this user.",
    "404": "No such object for this user, or no such URL.",
}
# ... where the operation takes a body.
BODY_ERRORS = {
    "413": "The body is over its limit (EDM_API_MAX_BODY_BYTES, EDM_UPLOAD_MAX_BYTES), "
    "or a form has too many fields.",
    "415": "The body's Content-Type is not one this operation reads.",
}
THROTTLED = {
    "429": "Too many requests (the user's or the address's rate, or failed logins): "
    "retry after `Retry-After` seconds."
}
# Answered by the web server (gunicorn) before EDM sees the request, as its own HTML page.
URI_TOO_LONG = {
    "414": {
        "description": "The request line (the URL with its query string) is longer than "
        "the web server reads (gunicorn: 4,094 bytes).",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
}
# Answered without authentication and without a throttle (load balancers poll it).
UNGUARDED = {"/api/health"}

PAGE_LINK = {"type": "string", "format": "uri", "nullable": True}


class _ApiPage:
    """What an ``APIView`` that pages by hand answers: either paginator of
    :mod:`apps.core.pagination` (``count`` only with page numbers)."""

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "count": {"type": "integer", "description": "numbered pages only"},
                "next": PAGE_LINK,
                "previous": PAGE_LINK,
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list:
        return []  # the views document their own paging parameters


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's, with the pages of hand-paged list views (see module docstring).

    A view that answers a bare list says so with ``pagination_class = None``."""

    def _get_paginator(self):
        if (
            self.method == "GET"
            and not isinstance(self.view, GenericAPIView)
            and not hasattr(self.view, "pagination_class")
        ):
            return _ApiPage()
        return super()._get_paginator()


def _reference() -> dict:
    return {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def error_responses(result: dict, generator=None, request=None, public=None) -> dict:
    """drf-spectacular postprocessing hook: add the ``Error`` component and reference it
    from each status code an operation can answer (those the view documents are kept)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            statuses = dict(ERRORS)
            if "requestBody" in operation:
                statuses.update(BODY_ERRORS)
            if path in UNGUARDED:
                del statuses["401"], statuses["403"]
            else:
                statuses.update(THROTTLED)
            responses = operation["responses"]
            for status, description in statuses.items():
                responses.setdefault(status, {"description": description, **_reference()})
            for status, response in URI_TOO_LONG.items():
                responses.setdefault(status, response)
    return result


@extend_schema_field({"type": "string", "format": "email"})
class EmailAddressField(serializers.CharField):
    """An e-mail address: text the service checks by its own rule
    (:func:`apps.contacts.emails.normalize_email`), documented as ``format: email``."""
