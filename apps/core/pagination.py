"""Pagination classes. Every list answers ``{"results": [...], "next": url|null, ...}``."""

from __future__ import annotations

from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    """Default for small lists (counts included)."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000


class KeysetPagination(pagination.CursorPagination):
    """Keyset (cursor) pagination for million-row lists: no COUNT, no OFFSET.

    Every page costs one index range scan, however deep.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = "-id"
