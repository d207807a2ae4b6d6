"""Models of the dispatch app."""

from __future__ import annotations
