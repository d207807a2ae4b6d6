"""Reads of pools and email services shared by the API, the admin and other apps."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import F, Q, QuerySet

from apps.core.errors import ApplicationError
from apps.core.tenancy import is_operator
from apps.services.models import EmailService, Pool, quota_today


def pool_default() -> Pool:
    """The ``default`` pool. A data migration creates it; this re-creates it if it is gone.

    (Test databases flushed between tests and hand-cleaned databases lose migration data,
    so code that needs the default pool asks here instead of assuming the row.)
    """
    pool, _ = Pool.objects.get_or_create(
        name=Pool.DEFAULT_NAME,
        defaults={"description": "Used when a service or a task names no pool.", "is_shared": True},
    )
    return pool


def pools_for_owner(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Pool]:
    """The pools ``user`` may send through: shared pools and pools dedicated to them.

    Operators (``apps.core.tenancy.is_operator``) may use every pool. An anonymous user
    gets none. A task's pool is checked with :func:`pool_for_task`.
    """
    if not user or not user.is_authenticated:
        return Pool.objects.none()
    if is_operator(user):
        return Pool.objects.all()
    return Pool.objects.filter(Q(is_shared=True) | Q(owners=user)).distinct()


def pool_is_open_to(pool: Pool, user: AbstractBaseUser) -> bool:
    """Whether ``user`` may send through ``pool``."""
    return pools_for_owner(user).filter(pk=pool.pk).exists()


def pool_for_task(*, owner: AbstractBaseUser, ref: int | str | Pool | None) -> Pool:
    """The pool a task of ``owner`` sends through: ``ref`` (id, name or pool), or the
    default pool for ``None``. The one rule for "the pools open to an owner"
    (:func:`pools_for_owner`), for the API and the admin alike.

    Raises ``ApplicationError`` (field ``pool``) for an unknown pool, one that is not
    open to ``owner``, or no ``ref`` when the default pool is gone (it is not re-created
    behind an owner's back: an operator removed it).
    """
    if ref is None or ref == "":
        pool = Pool.objects.filter(name=Pool.DEFAULT_NAME).first()
        if pool is None:
            raise ApplicationError("no pool given and no default pool exists", field="pool")
    else:
        try:
            pool = pool_resolve(ref)
        except Pool.DoesNotExist:
            raise ApplicationError(f"unknown pool {ref}", field="pool") from None
    if not pool_is_open_to(pool, owner):
        raise ApplicationError(f"pool {pool.name!r} is not open to this user", field="pool")
    return pool


def pool_resolve(ref: int | str | Pool | None) -> Pool:
    """A pool from its id, its name or itself; the default pool for ``None``.

    Raises ``Pool.DoesNotExist`` for an unknown reference.
    """
    if ref is None or ref == "":
        return pool_default()
    if isinstance(ref, Pool):
        return ref
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return Pool.objects.get(pk=int(ref))
    if ref == Pool.DEFAULT_NAME:
        return pool_default()
    return Pool.objects.get(name=ref)


def service_list() -> QuerySet[EmailService]:
    return EmailService.objects.select_related("pool").order_by("name")


def service_stats(service: EmailService) -> dict:
    """Live state and statistics of one service (what the admin and ``/stats`` show)."""
    quota_left = service.quota_left_today
    return {
        "id": service.pk,
        "name": service.name,
        "pool": service.pool_id,
        "is_enabled": service.is_enabled,
        "disabled_reason": service.disabled_reason,
        "is_ready": service.is_ready,
        "ready_in_seconds": round(service.ready_in, 3),
        "next_available_at": service.next_available_at,
        "daily_quota": service.daily_quota,
        "quota_used_today": service.quota_used_today,
        "quota_left_today": quota_left,
        "sending_rate": service.sending_rate,
        "last_sent_at": service.last_sent_at,
        "total_sent": service.total_sent,
        "total_failed": service.total_failed,
        "success_rate": service.success_rate,
        "avg_response_time": service.avg_response_time,
        "consecutive_failures": service.consecutive_failures,
    }


def services_disabled() -> list[dict]:
    """The disabled services: ``{id, name, disabled_reason}`` (by name)."""
    return list(
        EmailService.objects.filter(is_enabled=False)
        .order_by("name")
        .values("id", "name", "disabled_reason")
    )


def services_sendable_count() -> int:
    """Enabled services with quota left today (ready now, cooling down or sending)."""
    today = quota_today()
    return (
        EmailService.objects.filter(is_enabled=True)
        .filter(
            Q(daily_quota=0)
            | ~Q(quota_day=today)
            | Q(quota_day__isnull=True)
            | Q(used_quota__lt=F("daily_quota"))
        )
        .count()
    )
