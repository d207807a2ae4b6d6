"""Writes on pools and email services: operator actions, audited with their author.

Operator changes are saved with ``save(update_fields=...)`` limited to operator fields,
on a row locked with ``SELECT … FOR UPDATE``: the dispatcher moves the runtime columns
of the same row every few milliseconds with ``update()``, and a plain ``save()`` would
write back the stale counters it loaded (a lost update of ``used_quota`` would let a
service exceed its quota). The hot runtime SQL itself (reserve, record, cool down,
auto-disable) belongs to the dispatcher.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F, ProtectedError
from django.db.models.functions import Least, Now

from apps.config.selectors import config_get
from apps.core.audit import actor_id, event_append
from apps.core.errors import ApplicationError
from apps.services.models import OPERATOR_FIELDS, EmailService, Pool
from apps.services.selectors import pool_resolve
from apps.services.senders import SendError, sender_for

logger = logging.getLogger(__name__)

EDITABLE_FIELDS = frozenset(OPERATOR_FIELDS) - {"password_encrypted"} | {"password"}


def _audited(instance: Any, actor: AbstractBaseUser | None, reason: str) -> None:
    """Attach the history author and reason to the next ``save()`` of ``instance``."""
    instance._history_user = actor if actor is not None and actor.is_authenticated else None
    instance._change_reason = reason


def _event(event_type: str, obj: Any, actor: Any, **payload: Any) -> None:
    event_append(event_type, actor=actor_id(actor), subject=obj, payload=payload)


def _who(actor: AbstractBaseUser | None) -> str:
    return actor.get_username() if actor is not None and actor.is_authenticated else "system"


def _resolve_pool(ref: Any) -> Pool:
    try:
        return pool_resolve(ref)
    except (Pool.DoesNotExist, ValueError):
        raise ApplicationError(f"no pool {ref!r} (give its id or name)", field="pool") from None


# --- pools -----------------------------------------------------------------------------


def pool_create(
    *,
    name: str,
    description: str = "",
    is_shared: bool = True,
    owners: Iterable[AbstractBaseUser] = (),
    actor: AbstractBaseUser | None = None,
) -> Pool:
    """A new pool; shared with everybody, or (``is_shared=False``) open to ``owners``."""
    pool = Pool(name=name.strip(), description=description, is_shared=is_shared)
    pool.full_clean()
    _audited(pool, actor, "created")
    with transaction.atomic():
        pool.save()
        pool.owners.set(list(owners))
        _event("pool.changed", pool, actor, action="created", name=pool.name)
    return pool


def pool_update(
    *,
    pool_id: int,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
    owners: Iterable[AbstractBaseUser] | None = None,
    **changes: Any,
) -> Pool:
    """Change a pool's name, description, sharing or owners. The default keeps its name."""
    unknown = set(changes) - {"name", "description", "is_shared"}
    if unknown:
        raise ApplicationError(
            f"cannot change {', '.join(sorted(unknown))}", field=sorted(unknown)[0]
        )
    with transaction.atomic():
        pool = Pool.objects.select_for_update().get(pk=pool_id)
        if pool.is_default and changes.get("name", pool.name) != pool.name:
            raise ApplicationError("the default pool cannot be renamed", field="name")
        for field, value in changes.items():
            setattr(pool, field, value)
        pool.full_clean()
        _audited(pool, actor, reason or "updated")
        pool.save()
        if owners is not None:
            pool.owners.set(list(owners))
        _event(
            "pool.changed",
            pool,
            actor,
            action="updated",
            name=pool.name,
            fields=sorted(changes) + (["owners"] if owners is not None else []),
        )
    return pool


def pool_delete(*, pool_id: int, actor: AbstractBaseUser | None = None) -> None:
    """Delete an empty pool. The default pool and pools with services stay."""
    with transaction.atomic():
        pool = Pool.objects.select_for_update().get(pk=pool_id)
        if pool.is_default:
            raise ApplicationError("the default pool cannot be deleted", field="pool")
        if pool.services.exists():
            raise ApplicationError(
                f"pool {pool.name!r} still has services; move or delete them first",
                field="pool",
            )
        _audited(pool, actor, "deleted")
        _event("pool.changed", pool, actor, action="deleted", name=pool.name)
        try:
            with transaction.atomic():
                pool.delete()
        except ProtectedError:
            raise ApplicationError(
                f"pool {pool.name!r} is still used (by tasks); it cannot be deleted",
                field="pool",
            ) from None


# --- services --------------------------------------------------------------------------


def service_create(
    *,
    name: str,
    from_email: str,
    pool: Pool | int | str | None = None,
    kind: str = EmailService.Kind.SMTP,
    host: str = "",
    port: int = 25,
    security: str = EmailService.Security.NONE,
    username: str = "",
    password: str = "",
    from_name: str = "",
    daily_quota: int | None = None,
    sending_rate: float | None = None,
    is_enabled: bool = True,
    actor: AbstractBaseUser | None = None,
) -> EmailService:
    """A new email service; the password is stored encrypted.

    ``pool`` is a Pool, its id or its name (the default pool when omitted);
    ``daily_quota``/``sending_rate`` default to ``queue.default_daily_quota`` /
    ``queue.default_sending_rate``. Raises ``ValidationError`` naming each bad field.
    """
    service = EmailService(
        pool=_resolve_pool(pool),
        name=name.strip(),
        kind=kind,
        host=host.strip(),
        port=port,
        security=security,
        username=username,
        from_email=from_email,
        from_name=from_name,
        is_enabled=is_enabled,
        daily_quota=(
            config_get("queue.default_daily_quota") if daily_quota is None else daily_quota
        ),
        sending_rate=(
            config_get("queue.default_sending_rate") if sending_rate is None else sending_rate
        ),
    )
    service.password = password
    service.full_clean()
    _audited(service, actor, "created")
    try:
        with transaction.atomic():
            service.save()
            _event("service.created", service, actor, name=service.name, pool=service.pool_id)
    except IntegrityError:
        raise ApplicationError(f"a service named {name!r} exists", field="name") from None
    return service


def service_update(
    *,
    service_id: int,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
    **changes: Any,
) -> EmailService:
    """Change operator fields of a service (``password``: new secret; omit to keep it).

    Only the given fields are written; runtime counters are left to the dispatcher.
    """
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise ApplicationError(
            f"cannot change {', '.join(sorted(unknown))}", field=sorted(unknown)[0]
        )
    with transaction.atomic():
        service = EmailService.objects.select_for_update().get(pk=service_id)
        fields = set()
        notes = []
        for field, given in changes.items():
            if field == "password":
                service.password = given
                fields.add("password_encrypted")
                notes.append("password changed")
                continue
            value = _resolve_pool(given) if field == "pool" else given
            if getattr(service, field) != value:
                setattr(service, field, value)
                fields.add(field)
        if not fields:
            return service
        if "is_enabled" in fields and service.is_enabled:
            service.disabled_reason = ""
            fields.add("disabled_reason")
        service.full_clean()
        _audited(service, actor, reason or "; ".join(["updated", *notes]))
        try:
            with transaction.atomic():
                service.save(update_fields=[*sorted(fields), "updated_at"])
        except IntegrityError:
            raise ApplicationError(
                f"a service named {service.name!r} exists", field="name"
            ) from None
        _event("service.changed", service, actor, fields=sorted(fields))
        if "is_enabled" in fields:
            _event(
                "service.enabled" if service.is_enabled else "service.disabled",
                service,
                actor,
                reason=reason or "updated",
            )
    return service


def service_delete(*, service_id: int, actor: AbstractBaseUser | None = None) -> None:
    """Delete a service no send refers to (disable it otherwise)."""
    with transaction.atomic():
        service = EmailService.objects.select_for_update().get(pk=service_id)
        _audited(service, actor, "deleted")
        _event("service.deleted", service, actor, name=service.name)
        try:
            with transaction.atomic():
                service.delete()
        except ProtectedError:
            raise ApplicationError(
                f"service {service.name!r} has sent mail; disable it instead of deleting it",
                field="service",
            ) from None


def service_enable(
    *, service_id: int, actor: AbstractBaseUser | None = None, reason: str = ""
) -> bool:
    """Enable a service (clearing its disabled reason, failure streak and cool-down).

    Returns False when it was already enabled (nothing recorded).
    """
    with transaction.atomic():
        service = EmailService.objects.select_for_update().get(pk=service_id)
        if service.is_enabled:
            return False
        service.is_enabled = True
        service.disabled_reason = ""
        _audited(service, actor, reason.strip() or "enabled")
        service.save(update_fields=["is_enabled", "disabled_reason", "updated_at"])
        _event("service.enabled", service, actor, reason=reason.strip() or "enabled")
        # Runtime state, not history: the operator fixed the cause, so the failure
        # streak restarts and a pending cool-down no longer holds the service back.
        EmailService.objects.filter(pk=service_id).update(
            consecutive_failures=0,
            next_available_at=Least(F("next_available_at"), Now()),
        )
    logger.info("email service %s enabled by %s", service.name, _who(actor))
    return True


def service_disable(*, service_id: int, reason: str, actor: AbstractBaseUser | None = None) -> bool:
    """Disable a service with a reason (shown in the admin and the API).

    Returns False when it was already disabled (nothing recorded).
    """
    reason = reason.strip()
    if not reason:
        raise ApplicationError("say why the service is disabled", field="reason")
    with transaction.atomic():
        service = EmailService.objects.select_for_update().get(pk=service_id)
        if not service.is_enabled:
            return False
        service.is_enabled = False
        service.disabled_reason = reason[:255]
        _audited(service, actor, f"disabled: {reason}")
        service.save(update_fields=["is_enabled", "disabled_reason", "updated_at"])
        _event("service.disabled", service, actor, reason=service.disabled_reason)
    logger.warning("email service %s disabled by %s: %s", service.name, _who(actor), reason)
    return True


@dataclass(frozen=True)
class ConnectionTest:
    """The outcome of :func:`service_test_connection`."""

    ok: bool
    latency_ms: float
    error: str = ""
    error_kind: str = ""
    code: int | None = None

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "latency_ms": round(self.latency_ms, 1),
            "error": self.error,
            "error_kind": self.error_kind,
            "code": self.code,
        }


def service_test_connection(*, service_id: int, timeout: float = 10.0) -> ConnectionTest:
    """Connect and authenticate (SMTP: connect, TLS, login, NOOP, QUIT); nothing is sent.

    Reports the latency, or the exact failure (``SendError`` text, kind and SMTP code).
    Changes nothing: a failed test does not cool the service down.
    """
    service = EmailService.objects.get(pk=service_id)
    started = time.perf_counter()
    try:
        sender = sender_for(service, timeout=timeout)
        sender.verify(from_addr=service.from_email)
    except SendError as exc:
        return ConnectionTest(
            ok=False,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=exc.message,
            error_kind=exc.kind,
            code=exc.code,
        )
    return ConnectionTest(ok=True, latency_ms=(time.perf_counter() - started) * 1000)


def services_reset_daily_quotas() -> int:
    """Zero ``used_quota`` of every service whose count belongs to an earlier day.

    Idempotent and safe to run late, twice or concurrently with the dispatcher: the
    ``WHERE quota_day < current_date`` is re-checked on the locked row, so a row the
    dispatcher already moved to today is skipped. (The reservation statement also resets
    a stale day itself; this job keeps what the admin and the API show honest.) Uses the
    database's date, like the dispatcher. Returns the number of rows reset.
    """
    table = EmailService._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET used_quota = 0, quota_day = current_date "
            "WHERE quota_day < current_date"
        )
        return cursor.rowcount


def service_take_send(*, service_id: int) -> float | None:
    """Take one send of a service for a message outside the dispatcher (an alert
    notification), with the dispatcher's rules: the service is enabled, has quota left
    today and its ``next_available_at`` has come; the send is charged to today's quota
    and the next one waits ``sending_rate`` seconds. One statement on the locked row (it
    waits for a tick's short transaction, never for a send), so "never twice within
    ``sending_rate``" and the daily quota hold with dispatchers sending through the same
    service.

    Returns ``0.0`` when the send is taken (send now), the seconds until it may be tried
    again when the service is held or cooling, or ``None`` when it cannot send today
    (disabled, quota used up, or no such service). Times are the statement's
    (``statement_timestamp()``, the clock ``db_default=Now()`` writes), so a caller's
    longer transaction does not see a service as busy that just became free."""
    table = EmailService._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {table} SET
                used_quota = CASE WHEN quota_day = current_date THEN used_quota ELSE 0 END + 1,
                quota_day = current_date,
                next_available_at = statement_timestamp() + make_interval(secs => sending_rate)
            WHERE id = %s AND is_enabled AND next_available_at <= statement_timestamp()
              AND (daily_quota = 0 OR quota_day IS DISTINCT FROM current_date
                   OR used_quota < daily_quota)
            RETURNING id
            """,
            [service_id],
        )
        if cursor.fetchone() is not None:
            return 0.0
        cursor.execute(
            f"""
            SELECT is_enabled AND (daily_quota = 0 OR quota_day IS DISTINCT FROM current_date
                                   OR used_quota < daily_quota),
                   GREATEST(0, EXTRACT(EPOCH FROM next_available_at
                                           - statement_timestamp()))::float8
            FROM {table} WHERE id = %s
            """,
            [service_id],
        )
        row = cursor.fetchone()
    if row is None or not row[0]:
        return None
    return max(0.01, row[1])


def service_reserve_one(*, service_id: int, wait: float = 5.0) -> None:
    """Take one sending slot of a service for a message sent outside the dispatcher (a
    test send): the same rules as the dispatcher's reservation — enabled, quota left
    for today, ``next_available_at`` reached — and the same charges (one of today's
    quota, ``next_available_at`` moved by ``sending_rate``), so a service never sends
    twice within its rate nor beyond its quota, whoever sends.

    Waits up to ``wait`` seconds for a busy service. The database is the clock: each
    statement reads its own ``statement_timestamp()`` (``now()`` would stand still for a
    caller that holds one transaction open while it waits).
    Raises ``ApplicationError`` (field ``service``) when it is disabled, has no quota
    left today, or is still busy after ``wait``.
    """
    table = EmailService._meta.db_table
    deadline = time.monotonic() + wait
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE {table} s SET
                    next_available_at = statement_timestamp()
                                        + make_interval(secs => s.sending_rate),
                    used_quota = CASE WHEN s.quota_day = current_date
                                      THEN s.used_quota + 1 ELSE 1 END,
                    quota_day = current_date
                WHERE s.id = %s AND s.is_enabled AND s.next_available_at <= statement_timestamp()
                  AND (s.daily_quota = 0 OR s.quota_day IS DISTINCT FROM current_date
                       OR s.used_quota < s.daily_quota)
                RETURNING s.id
                """,
                [service_id],
            )
            if cursor.fetchone() is not None:
                return
            cursor.execute(
                f"""
                SELECT s.name, s.is_enabled,
                       s.daily_quota > 0 AND s.quota_day = current_date
                           AND s.used_quota >= s.daily_quota,
                       GREATEST(0, EXTRACT(EPOCH FROM s.next_available_at - statement_timestamp()))
                FROM {table} s WHERE s.id = %s
                """,
                [service_id],
            )
            row = cursor.fetchone()
        if row is None:
            raise ApplicationError(f"service {service_id} does not exist", field="service")
        name, enabled, quota_used_up, ready_in = row
        if not enabled:
            raise ApplicationError(f"service {name!r} is disabled", field="service")
        if quota_used_up:
            raise ApplicationError(f"service {name!r} has used its daily quota", field="service")
        left = deadline - time.monotonic()
        if float(ready_in) > left:
            raise ApplicationError(
                f"service {name!r} is busy for {float(ready_in):.1f} s more; try again or "
                "choose another service",
                field="service",
            )
        time.sleep(max(0.01, float(ready_in)))
