from __future__ import annotations

import pytest
from django.db import connection, transaction

from apps.events.models import Event
from apps.events.services import event_append, events_append_sql

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_event_commits_with_its_change_and_names_owner_actor_and_subject(
    user, django_user_model
):
    operator = django_user_model.objects.create_user("op", password="x")
    with transaction.atomic():
        event = event_append(
            "tag.created", owner=user, actor=operator, subject=user, payload={"n": 1}
        )
    stored = Event.objects.get(pk=event.pk)
    assert (stored.type, stored.owner_id, stored.actor_id) == ("tag.created", user.pk, operator.pk)
    assert (stored.subject_type, stored.subject_id) == (user._meta.label_lower, str(user.pk))
    assert (
        stored.payload == {"n": 1}
        and stored.uid
        and stored.occurred_at
        and stored.published_at is None
    )


def test_an_event_of_a_rolled_back_transaction_never_appears(user):
    with pytest.raises(RuntimeError), transaction.atomic():
        event_append("tag.created", owner=user)
        raise RuntimeError("the change fails")
    assert not Event.objects.exists()


def test_an_event_outside_a_transaction_is_refused_and_an_unknown_type_too(user):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        event_append("tag.created", owner=user)
    with pytest.raises(ValueError, match="unknown event type"), transaction.atomic():
        event_append("tag.exploded", owner=user)


def test_events_are_appended_set_based_with_database_defaults(user):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            events_append_sql(
                "SELECT 'subtask.sent', %s, NULL, 'dispatch.subtask', n::text, "
                "jsonb_build_object('n', n) FROM generate_series(1, 3) AS n"
            ),
            [user.pk],
        )
    events = list(Event.objects.order_by("id"))
    assert [e.payload["n"] for e in events] == [1, 2, 3]
    assert len({e.uid for e in events}) == 3 and all(e.occurred_at for e in events)
