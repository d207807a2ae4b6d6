"""OpenAPI schema additions: the one error shape, documented once and referenced by every
operation's 4xx answers (see :mod:`apps.core.api`)."""

from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every 4xx answer under /api/ (unknown URL and bad id included).",
    "properties": {
        "detail": {"type": "string", "description": "One sentence for a person."},
        "code": {
            "type": "string",
            "description": "Machine-readable: invalid, required, not_found, "
            "not_authenticated, permission_denied, parse_error, unknown_parameter…",
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


def error_responses(result: dict, generator=None, request=None, public=None) -> dict:
    """drf-spectacular postprocessing hook: add the ``Error`` component and reference it
    from each operation's 400/401/403/404 (those the view documents itself are kept)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, description in ERRORS.items():
                if status == "401" and path == "/api/health":
                    continue
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    },
                )
    return result
