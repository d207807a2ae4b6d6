"""The API's JSON parser: bounded size and depth, no NUL characters, 64-bit integers.

Checked once here for every endpoint, before any serializer or service sees the data:

* a body longer than ``EDM_API_MAX_BODY_BYTES`` → 413 (the middleware usually answers
  first, from ``Content-Length``; this catches a body longer than it announced);
* nesting deeper than ``EDM_API_MAX_JSON_DEPTH`` → 400 (Python's recursive code, and
  PostgreSQL's ``jsonb``, have limits of their own that would otherwise answer 500);
* a NUL character in any string or key → 400 (PostgreSQL text and ``jsonb`` cannot
  store it);
* an integer outside the signed 64-bit range → 400 (ids are ``bigint``; no column EDM
  has holds more).

Each refusal names the place in the document (``contacts.3.attributes.note``).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from apps.core.errors import ApplicationError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class RequestTooLarge(ApplicationError):
    """A request body (or form) over its limit: answered 413."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="request_too_large")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_document(data: Any, *, max_depth: int) -> None:
    """Raise ``ApplicationError`` naming the path of the first string or key with a NUL
    character, integer outside 64 bits, or value nested deeper than ``max_depth``.
    Iterative: a document's depth cannot exhaust the stack here."""
    stack: list[tuple[Any, tuple, int]] = [(data, (), 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                _refuse(path, "contains a NUL character")
            continue
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            _refuse(path, "is an integer outside the signed 64-bit range")
        if not isinstance(value, dict | list):
            continue
        if depth > max_depth:
            _refuse(path, f"is nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    _refuse(path, "has a key with a NUL character")
                stack.append((item, (*path, key), depth + 1))
        else:
            stack.extend((item, (*path, index), depth + 1) for index, item in enumerate(value))


def _refuse(path: tuple, reason: str) -> None:
    field = ".".join(str(part) for part in path) or "non_field_errors"
    raise ApplicationError(f"{field}: {reason}", field=field, code="invalid_json")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with the checks of this module."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.EDM_API_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise RequestTooLarge(f"the request body is larger than {limit} bytes")
        charset = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        try:
            text = raw.decode(charset)
            data = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise ApplicationError(
                "the JSON document is nested too deeply", code="invalid_json"
            ) from None
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError included
            raise ParseError(f"JSON parse error - {exc}") from None
        check_document(data, max_depth=settings.EDM_API_MAX_JSON_DEPTH)
        return data
