"""Changing configuration: validated, audited, seen by every process within ~1 s.

Every write validates all values first and changes nothing when one is bad; it then
saves each row with ``save()`` (so django-simple-history records the user, the time,
the new value and the reason). A statement trigger on the table (migration
``0002_version_trigger``) advances :class:`~apps.config.models.ConfigVersion` in the same
transaction, whatever the write path, which is what other processes' caches watch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from apps.config.models import SystemConfig
from apps.config.registry import KEYS, ConfigValueError, get_key
from apps.config.selectors import config_cache_clear
from apps.core.audit import event_append
from apps.core.errors import ApplicationError

logger = logging.getLogger(__name__)

DEFAULT_REASON = "no reason given"


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any


def config_validate(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Clean every value; returns ``(cleaned, errors)`` where errors maps key → reason."""
    cleaned: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, value in values.items():
        try:
            cleaned[key] = get_key(key).clean(value)
        except ConfigValueError as exc:
            errors[key] = str(exc)
    return cleaned, errors


def config_set(
    *, key: str, value: Any, reason: str = "", actor: AbstractBaseUser | None = None
) -> Change | None:
    """Set one key. Returns the change, or ``None`` when the value was already that.

    Raises ``ValidationError`` ``{"value": [reason]}`` for a bad value and
    ``ApplicationError`` (field ``key``) for an unknown key.
    """
    try:
        definition = get_key(key)
    except ConfigValueError as exc:
        raise ApplicationError(str(exc), field="key", code="unknown_key") from None
    try:
        cleaned = definition.clean(value)
    except ConfigValueError as exc:
        raise ValidationError({"value": [f"{key}: {exc}"]}) from None
    changes = _write({key: cleaned}, reason=reason, actor=actor)
    return changes[0] if changes else None


def config_set_many(
    *, values: dict[str, Any], reason: str = "", actor: AbstractBaseUser | None = None
) -> list[Change]:
    """Set several keys at once, all or nothing.

    Every value is validated before anything is written; if any is bad (or a key is
    unknown) nothing changes and ``ValidationError`` maps each bad key to its reason.
    Returns the changes made (values already equal are skipped).
    """
    if not isinstance(values, dict) or not values:
        raise ApplicationError("give at least one key and value", field="values")
    cleaned, errors = config_validate(values)
    if errors:
        raise ValidationError({key: [reason] for key, reason in errors.items()})
    return _write(cleaned, reason=reason, actor=actor)


def config_rollback(
    *, key: str, history_id: int, reason: str = "", actor: AbstractBaseUser | None = None
) -> Change | None:
    """Set ``key`` back to the value it had in history entry ``history_id``.

    The rollback is itself an audited change (reason ``rollback to #id: …``). Raises
    ``ApplicationError`` when the entry does not belong to ``key`` and
    ``ValidationError`` when that old value is no longer valid for the key.
    """
    get_key(key)
    record = SystemConfig.history.filter(key=key, history_id=history_id).first()
    if record is None:
        raise ApplicationError(
            f"no history entry {history_id} for {key}", field="history_id", code="not_found"
        )
    note = f"rollback to #{history_id}" + (f": {reason}" if reason.strip() else "")
    return config_set(key=key, value=record.value, reason=note, actor=actor)


def config_import(
    *, data: Any, reason: str = "", actor: AbstractBaseUser | None = None
) -> list[Change]:
    """Apply an export (``{"values": {...}}`` or a plain ``{key: value}`` mapping).

    All or nothing, like :func:`config_set_many`.
    """
    return config_set_many(values=import_values(data), reason=reason, actor=actor)


def import_values(data: Any) -> dict[str, Any]:
    """The ``{key: value}`` mapping of an export; raises ApplicationError on a bad shape."""
    if isinstance(data, dict) and "values" in data:
        if data.get("format", "edm-config") != "edm-config":
            raise ApplicationError(f"unknown format {data.get('format')!r}", field="format")
        data = data["values"]
    if not isinstance(data, dict):
        raise ApplicationError(
            'expected a JSON object {"values": {"key": value, ...}}', field="values"
        )
    return data


def config_diff(values: dict[str, Any]) -> tuple[list[Change], dict[str, str]]:
    """What applying ``values`` would change, and the reasons the bad ones would fail."""
    cleaned, errors = config_validate(values)
    current = dict(SystemConfig.objects.filter(key__in=list(cleaned)).values_list("key", "value"))
    changes = []
    for key, new in sorted(cleaned.items()):
        old = current.get(key, KEYS[key].default)
        if old != new:
            changes.append(Change(key=key, old=old, new=new))
    return changes, errors


def config_sync_defaults() -> int:
    """Create a row (with its registered default) for every key that has none.

    Idempotent; runs after ``migrate``. Keeps each row's category and description in
    step with the registry. Returns the number of rows created.
    """
    created = 0
    with transaction.atomic():
        existing = {row.key: row for row in SystemConfig.objects.filter(key__in=KEYS)}
        for name, definition in KEYS.items():
            row = existing.get(name)
            if row is None:
                row = SystemConfig(
                    key=name,
                    category=definition.category,
                    value=definition.default,
                    description=definition.description,
                )
                row._change_reason = "default registered in code"
                row.save()
                created += 1
            elif (row.category, row.description) != (definition.category, definition.description):
                # Descriptive metadata only: update() so it is not a history entry.
                SystemConfig.objects.filter(pk=row.pk).update(
                    category=definition.category, description=definition.description
                )
    config_cache_clear()
    return created


def _write(cleaned: dict[str, Any], *, reason: str, actor: AbstractBaseUser | None) -> list[Change]:
    """Save the changed keys (history with author and reason) and append one
    ``config.changed`` per key: who, key, old → new, reason."""
    reason = reason.strip() or DEFAULT_REASON
    user = actor if actor is not None and actor.is_authenticated else None
    changes: list[Change] = []
    with transaction.atomic():
        # Lock the rows in key order: two batches touching the same keys wait for each
        # other instead of deadlocking, and nobody changes a value between our read of
        # "old" and our write.
        rows = {
            row.key: row
            for row in SystemConfig.objects.select_for_update()
            .filter(key__in=list(cleaned))
            .order_by("key")
        }
        for key in sorted(cleaned):
            new = cleaned[key]
            definition = KEYS[key]
            row = rows.get(key)
            old = row.value if row is not None else definition.default
            if row is not None and old == new and type(old) is type(new):
                continue
            if row is None:
                row = SystemConfig(
                    key=key, category=definition.category, description=definition.description
                )
            row.value = new
            row.updated_by = user
            row._history_user = user
            row._change_reason = reason
            row.save()
            changes.append(Change(key=key, old=old, new=new))
            event_append(
                "config.changed",
                actor=user,
                subject=row,
                payload={"key": key, "old": old, "new": new, "reason": reason},
            )
        if changes:
            # The rows' trigger has advanced ConfigVersion in this transaction.
            transaction.on_commit(config_cache_clear)
    if changes:
        config_cache_clear()
        author = user.get_username() if user is not None else "system"

        def log() -> None:
            for change in changes:
                logger.info(
                    "configuration %s: %s -> %s by %s (%s)",
                    change.key,
                    json.dumps(change.old),
                    json.dumps(change.new),
                    author,
                    reason,
                )

        transaction.on_commit(log)
    return changes
