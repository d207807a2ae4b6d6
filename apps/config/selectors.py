"""Reading configuration values.

:func:`config_get` is called on hot paths (every dispatcher tick, every retry), so it
reads a per-process snapshot of every value instead of the database. The snapshot is
validated by a cheap version check: at most once per ``EDM_CONFIG_CHECK_INTERVAL``
seconds (1 s by default) one primary-key lookup of :class:`ConfigVersion`; only when
the version moved are the values read again. A change committed by any process is
therefore seen by every other process within about one interval, and a read between
two checks costs a clock call and a dictionary lookup (no query).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection

from apps.config.models import ConfigVersion, SystemConfig
from apps.config.registry import KEYS, ConfigValueError, get_key

logger = logging.getLogger(__name__)

DEFAULT_CHECK_INTERVAL = 1.0


@dataclass(frozen=True)
class _Snapshot:
    values: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    # time.monotonic() after which the version must be checked again.
    expires_at: float = float("-inf")


_snapshot = _Snapshot()
_refresh_lock = threading.Lock()


def config_get(key: str) -> Any:
    """The current value of ``key`` (its registered default when never set).

    Served from the per-process snapshot; raises ``KeyError`` for a key that is not
    registered. Do not mutate a returned list or dict: it is shared by the process.
    """
    snapshot = _snapshot
    if time.monotonic() >= snapshot.expires_at:
        snapshot = _refresh()
    return snapshot.values[key]


def config_values() -> dict[str, Any]:
    """A copy of every registered key's current value (from the snapshot)."""
    snapshot = _snapshot
    if time.monotonic() >= snapshot.expires_at:
        snapshot = _refresh()
    return dict(snapshot.values)


def config_cache_clear() -> None:
    """Forget the snapshot: the next read checks the version and reloads the values.

    Writers call it right after their change (so their own process reads it back at
    once) and again on commit.
    """
    global _snapshot
    _snapshot = _Snapshot()


def config_version() -> int:
    """The committed configuration version (0 before the first change)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT version FROM {ConfigVersion._meta.db_table} WHERE id = 1")
        row = cursor.fetchone()
    return row[0] if row else 0


def _load_values() -> dict[str, Any]:
    """Every key's stored value, or its default when it has none. A stored value that
    its key no longer accepts (written before a rule was tightened, or by hand in SQL) is
    served as the default and logged: one bad row must not stop every dispatcher."""
    values = {name: definition.default for name, definition in KEYS.items()}
    for key, value in SystemConfig.objects.filter(key__in=KEYS).values_list("key", "value"):
        try:
            values[key] = KEYS[key].clean(value)
        except ConfigValueError as exc:
            logger.error(
                "configuration %s: the stored value %r is refused (%s); using the default %r",
                key,
                value,
                exc,
                KEYS[key].default,
            )
    return values


def _refresh() -> _Snapshot:
    """Check the version; reload the values when it moved. Returns the new snapshot.

    If the database cannot be read, a snapshot that was loaded before keeps being served
    (and checked again at the next interval): a configuration read must not take a
    dispatcher down during a database blip. With nothing loaded yet the error propagates.
    """
    global _snapshot
    loaded = _snapshot.version is not None
    # While one thread checks, the others keep serving the loaded values rather than
    # queueing behind a query that may be slow; with nothing loaded they must wait.
    if not _refresh_lock.acquire(blocking=not loaded):
        return _snapshot
    try:
        current = _snapshot
        now = time.monotonic()
        if now < current.expires_at:  # another thread refreshed while we waited
            return current
        interval = float(getattr(settings, "EDM_CONFIG_CHECK_INTERVAL", DEFAULT_CHECK_INTERVAL))
        try:
            # Version first, values second: a change committed in between gives newer
            # values under an older version, which only costs one extra reload later.
            version = config_version()
            values = current.values if version == current.version else _load_values()
        except DatabaseError as exc:
            if current.version is None:
                raise
            logger.warning("configuration check failed, serving cached values: %s", exc)
            version, values = current.version, current.values
        _snapshot = _Snapshot(values=values, version=version, expires_at=now + interval)
        return _snapshot
    finally:
        _refresh_lock.release()


def config_items(*, category: str | None = None) -> list[dict]:
    """Every registered key (optionally of one category) with its stored state.

    Reads the database (not the snapshot): for the API and the admin, where who changed
    a value and when matters.
    """
    rows = {
        row.key: row
        for row in SystemConfig.objects.select_related("updated_by").filter(key__in=KEYS)
    }
    items = []
    for name in sorted(KEYS, key=lambda k: (KEYS[k].category, k)):
        definition = KEYS[name]
        if category is not None and definition.category != category:
            continue
        row = rows.get(name)
        items.append(config_item(name, row))
    return items


def config_item(key: str, row: SystemConfig | None = None) -> dict:
    """One key as data: value, type, validation, default, last change."""
    definition = get_key(key)
    if row is None:
        row = SystemConfig.objects.select_related("updated_by").filter(key=key).first()
    value = row.value if row is not None else definition.default
    return {
        "key": key,
        "category": definition.category,
        "value": value,
        "description": definition.description,
        **definition.describe(),
        "is_default": value == definition.default,
        "updated_at": row.updated_at if row is not None else None,
        "updated_by": row.updated_by.get_username() if row and row.updated_by else None,
    }


def config_history(key: str) -> list[dict]:
    """Every recorded version of ``key``, newest first, each with the value it replaced."""
    get_key(key)
    records = list(
        SystemConfig.history.filter(key=key).select_related("history_user").order_by("history_id")
    )
    entries = []
    previous: Any = None
    for index, record in enumerate(records):
        entries.append(
            {
                "id": record.history_id,
                "changed_at": record.history_date,
                "changed_by": record.history_user.get_username() if record.history_user else None,
                "type": {"+": "created", "~": "changed", "-": "deleted"}[record.history_type],
                "old_value": previous if index else None,
                "value": record.value,
                "reason": record.history_change_reason or "",
            }
        )
        previous = record.value
    entries.reverse()
    return entries


def config_export() -> dict:
    """Every registered key's current value, as written by ``manage.py config export``."""
    return {
        "format": "edm-config",
        "version": 1,
        "values": {item["key"]: item["value"] for item in config_items()},
    }
