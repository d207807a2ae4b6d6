from __future__ import annotations

import pytest

from apps.services import demo
from apps.services.models import EmailService

pytestmark = pytest.mark.django_db


def test_demo_seeds_three_sink_services_once(settings, staff_user, user):
    settings.EDM_SINK_HOST, settings.EDM_SINK_PORT = "127.0.0.1", 2599
    assert "3 created" in demo.seed(operator=staff_user, user=user)
    assert "0 created" in demo.seed(operator=staff_user, user=user)
    services = EmailService.objects.filter(name__in=demo.DEMO_SERVICES)
    assert services.count() == 3
    for service in services:
        assert (service.host, service.port, service.username) == ("127.0.0.1", 2599, "")
        assert (service.sending_rate, service.daily_quota, service.pool.name) == (
            0.2,
            1000,
            "default",
        )


def test_demo_services_send_to_the_sink(smtp_sink, settings, staff_user, user):
    from apps.services.services import service_test_connection

    settings.EDM_SINK_PORT = smtp_sink.port
    demo.seed(operator=staff_user, user=user)
    service = EmailService.objects.get(name="demo-smtp-1")
    assert service_test_connection(service_id=service.pk).ok
