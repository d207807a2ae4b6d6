from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


@checks.register(checks.Tags.security)
def check_public_url(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Unsubscribe links must be https in production (RFC 8058 one-click needs it)."""
    from django.conf import settings

    if settings.DEBUG or settings.EDM_PUBLIC_URL.startswith("https://"):
        return []
    return [
        checks.Warning(
            f"EDM_PUBLIC_URL is {settings.EDM_PUBLIC_URL!r}: unsubscribe and tracking links "
            "should be https (mailbox providers ignore one-click unsubscribe over http)",
            id="deliverability.W001",
        )
    ]


class DeliverabilityConfig(AppConfig):
    name = "apps.deliverability"
    label = "deliverability"
    verbose_name = "Deliverability"

    def ready(self) -> None:
        # Connects the receiver of django-anymail's tracking signal.
        from apps.deliverability import webhooks  # noqa: F401
