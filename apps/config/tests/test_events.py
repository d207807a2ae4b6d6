"""A configuration change is an event naming who, the key, old → new and the reason."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.config import services
from apps.events.models import Event

pytestmark = pytest.mark.django_db


def test_a_change_records_key_old_new_and_actor(staff_user):
    services.config_set(key="queue.batch_size", value=300, reason="a", actor=staff_user)
    services.config_set(key="queue.batch_size", value=400, reason="bigger", actor=staff_user)
    event = Event.objects.filter(type="config.changed").latest("id")
    assert event.actor_id == staff_user.pk
    assert event.payload == {"key": "queue.batch_size", "old": 300, "new": 400, "reason": "bigger"}


def test_a_refused_batch_records_nothing(staff_user):
    with pytest.raises(ValidationError) as refused:
        services.config_set_many(
            values={"queue.batch_size": 321, "backoff.max_retries": "many"}, actor=staff_user
        )
    assert list(refused.value.message_dict) == ["backoff.max_retries"]
    assert not Event.objects.filter(type="config.changed").exists()


def test_a_value_set_again_records_nothing(staff_user):
    services.config_set(key="queue.batch_size", value=350, actor=staff_user)
    before = Event.objects.count()
    services.config_set(key="queue.batch_size", value=350, actor=staff_user)
    assert Event.objects.count() == before
