"""Demo data: the ``default`` pool and three SMTP services pointing at the local sink."""

from __future__ import annotations

from django.conf import settings

from apps.services.models import EmailService
from apps.services.selectors import pool_default
from apps.services.services import service_create

DEMO_SERVICES = ["demo-smtp-1", "demo-smtp-2", "demo-smtp-3"]


def seed(*, operator, user) -> str:
    """Idempotent: existing demo services are left as they are."""
    pool = pool_default()
    created = 0
    for index, name in enumerate(DEMO_SERVICES, start=1):
        if EmailService.objects.filter(name=name).exists():
            continue
        service_create(
            name=name,
            pool=pool,
            kind=EmailService.Kind.SMTP,
            host=settings.EDM_SINK_HOST,
            port=settings.EDM_SINK_PORT,
            security=EmailService.Security.NONE,
            from_email=f"sender{index}@edm.example",
            from_name="EDM demo",
            daily_quota=1000,
            sending_rate=0.2,
            actor=operator,
        )
        created += 1
    return (
        f"pool {pool.name!r} with {len(DEMO_SERVICES)} SMTP services on "
        f"{settings.EDM_SINK_HOST}:{settings.EDM_SINK_PORT} ({created} created)"
    )
