"""Pagination classes. Every list answers ``{"results": [...], "next": url|null, ...}``.

Paging parameters are checked, never silently ignored: ``?page_size=abc``, ``0`` or more
than the maximum, ``?page=x`` and a cursor that was not issued by the API answer 400
naming the parameter (a page number past the end answers 404, as a missing page does).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import pagination
from rest_framework.exceptions import ValidationError


def _page_size(paginator, request) -> int:
    name = paginator.page_size_query_param
    raw = request.query_params.get(name) if name else None
    if raw is None:
        return paginator.page_size
    if not raw.strip().isdigit() or not 1 <= int(raw) <= paginator.max_page_size:
        raise ValidationError(
            {name: [f"must be a whole number from 1 to {paginator.max_page_size} (got {raw!r})"]}
        )
    return int(raw)


class PageNumberPagination(pagination.PageNumberPagination):
    """Default for small lists (counts included)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request) -> int:
        return _page_size(self, request)

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param, 1)
        if raw in self.last_page_strings:
            return raw
        if not str(raw).strip().isdigit() or int(raw) < 1:
            raise ValidationError(
                {self.page_query_param: [f"must be a page number from 1 (got {raw!r})"]}
            )
        return int(raw)


class KeysetPagination(pagination.CursorPagination):
    """Keyset (cursor) pagination for million-row lists: no COUNT, no OFFSET.

    Every page costs one index range scan, however deep.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = "-id"

    def get_page_size(self, request) -> int:
        return _page_size(self, request)

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except pagination.NotFound:
            cursor = False
        # Keyset positions are ids: anything else was not issued by this API.
        if cursor is False or (
            cursor is not None
            and cursor.position is not None
            and not str(cursor.position).lstrip("-").isdigit()
        ):
            raise ValidationError(
                {self.cursor_query_param: ["invalid cursor: follow the `next` link of a page"]}
            )
        return cursor


PAGE_PARAMETERS = [
    OpenApiParameter("page", OpenApiTypes.INT, description="page number, from 1"),
    OpenApiParameter("page_size", OpenApiTypes.INT, description="rows per page (1-1000)"),
]
CURSOR_PARAMETERS = [
    OpenApiParameter("cursor", OpenApiTypes.STR, description="the cursor of the `next` link"),
    OpenApiParameter("page_size", OpenApiTypes.INT, description="rows per page (1-1000)"),
]
