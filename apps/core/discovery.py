"""Finding the optional per-app modules (``tasks.py``, ``demo.py``) of EDM's apps."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import import_module
from types import ModuleType

from django.apps import apps


def app_modules(name: str, *, order: list[str] | None = None) -> Iterator[ModuleType]:
    """Yield ``apps.<app>.<name>`` for every EDM app that has one.

    ``order`` (app labels) fixes the order and limits the apps; by default every installed
    ``apps.*`` app in ``INSTALLED_APPS`` order. An import error inside a module that does
    exist is raised, never swallowed.
    """
    packages = (
        [f"apps.{label}" for label in order]
        if order is not None
        else [c.name for c in apps.get_app_configs() if c.name.startswith("apps.")]
    )
    for package in packages:
        try:
            yield import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise
