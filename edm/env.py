"""Strict readers for settings taken from the environment (12-factor).

Each helper raises :class:`ConfigError` naming the variable and the reason, so a
missing or malformed variable stops start-up with one clear line (``manage.py``,
``wsgi.py`` and ``asgi.py`` print it and exit) instead of a traceback.
"""

from __future__ import annotations

import os
import re

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ImproperlyConfigured):
    """A settings variable is missing or malformed."""


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"{name} is not set")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no)")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


_RATE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")


def env_rate(name: str, default: str) -> str | None:
    """A DRF throttle rate like ``100/s`` or ``30/min``; ``off`` (or ``0``) gives None."""
    value = os.environ.get(name, "").strip() or default
    if value.lower() in {"off", "0", "none"}:
        return None
    if not _RATE.match(value):
        raise ConfigError(f"{name}={value!r} is not a rate like '100/s', '30/min' or 'off'")
    return value


def env_database(name: str = "DATABASE_URL") -> dict:
    """Parse a PostgreSQL URL into a Django ``DATABASES`` entry (the backend of
    :mod:`apps.core.postgresql`)."""
    import dj_database_url

    value = env_str(name)
    if not value.startswith(("postgres://", "postgresql://")):
        raise ConfigError(
            f"{name} must be a postgresql:// URL (got scheme {value.split(':', 1)[0]!r})"
        )
    try:
        config = dj_database_url.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{name} is malformed: {exc}") from None
    if not config.get("NAME"):
        raise ConfigError(f"{name} names no database (postgresql://user@host:port/NAME)")
    config["ENGINE"] = "apps.core.postgresql"
    return config


def env_fernet_keys(name: str, default: str | None) -> list[str]:
    """Comma-separated Fernet keys, newest first (older ones still decrypt)."""
    from cryptography.fernet import Fernet

    keys = [key.strip() for key in env_str(name, default).split(",") if key.strip()]
    for key in keys:
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                f"{name} holds a key that is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes; make one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`)"
            ) from None
    return keys


def bootstrap_settings() -> None:
    """Load settings now; on a configuration error print one line and exit(2)."""
    import sys

    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018 - forces the settings module to load
    except ImproperlyConfigured as exc:
        print(f"edm: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
