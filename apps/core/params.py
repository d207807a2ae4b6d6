"""Query-string values shared by the API views: ids and integers validated at the edge.

A query integer is ASCII digits only (``str.isdigit`` also accepts "²" and other Unicode
digits that ``int()`` refuses) and fits PostgreSQL's ``bigint``; anything else is an
``ApplicationError`` naming the parameter (a 400).
"""

from __future__ import annotations

from apps.core.errors import ApplicationError
from apps.core.parsers import INT64_MAX

MAX_SEARCH_LENGTH = 200


def parse_id(text: str, *, field: str, what: str = "an id") -> int:
    """``text`` as a positive id (1 … 2**63 - 1); raises ``ApplicationError`` on ``field``."""
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise ApplicationError(f"{value[:40]!r} is not {what}", field=field)
    number = int(value)
    if not 1 <= number <= INT64_MAX:
        raise ApplicationError(f"{value!r} is not {what}", field=field)
    return number


def query_id(request, name: str) -> int:
    """The query parameter ``name`` as an id."""
    return parse_id(request.query_params.get(name, ""), field=name)


def query_ids(request, name: str, *, what: str = "an id") -> list[int]:
    """Every value of ``name`` (repeated, or comma-separated) as ids."""
    return [
        parse_id(part, field=name, what=what)
        for raw in request.query_params.getlist(name)
        for part in raw.split(",")
        if part.strip()
    ]


def query_search(request, name: str = "search") -> str | None:
    """A free-text search term, stripped, at most ``MAX_SEARCH_LENGTH`` characters."""
    value = (request.query_params.get(name) or "").strip()
    if len(value) > MAX_SEARCH_LENGTH:
        raise ApplicationError(f"{name}: at most {MAX_SEARCH_LENGTH} characters", field=name)
    return value or None
