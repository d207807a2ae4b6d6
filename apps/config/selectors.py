"""Reading configuration values."""

from __future__ import annotations

from typing import Any

from apps.config.models import SystemConfig
from apps.config.registry import KEYS


def config_get(key: str) -> Any:
    """The current value of ``key`` (its registered default when never set).

    Raises ``KeyError`` for a key that is not registered.
    """
    definition = KEYS[key]
    row = SystemConfig.objects.filter(key=key).values_list("value", flat=True).first()
    return definition.default if row is None else row
