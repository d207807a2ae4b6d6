from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.config import services
from apps.config.models import SystemConfig
from apps.config.registry import KEYS
from apps.config.selectors import config_get, config_history, config_version
from apps.core.errors import ApplicationError

pytestmark = pytest.mark.django_db


def test_a_fresh_database_has_a_row_with_the_default_of_every_key():
    assert SystemConfig.objects.count() == len(KEYS)
    assert config_get("queue.batch_size") == KEYS["queue.batch_size"].default
    # Running the sync again creates nothing.
    assert services.config_sync_defaults() == 0


def test_config_get_answers_the_default_when_the_row_is_missing():
    SystemConfig.objects.filter(key="backoff.max_retries").delete()
    assert config_get("backoff.max_retries") == 5


def test_unknown_key_raises_key_error():
    with pytest.raises(KeyError):
        config_get("queue.nope")


def test_set_records_who_when_old_new_and_why(staff_user):
    before = config_version()
    change = services.config_set(
        key="queue.batch_size", value="300", reason="bigger ticks", actor=staff_user
    )
    assert change == services.Change("queue.batch_size", 1000, 300)
    assert config_get("queue.batch_size") == 300
    assert config_version() > before
    latest = config_history("queue.batch_size")[0]
    assert latest["changed_by"] == "operator"
    assert latest["old_value"] == 1000
    assert latest["value"] == 300
    assert latest["reason"] == "bigger ticks"
    assert latest["type"] == "changed"
    row = SystemConfig.objects.get(key="queue.batch_size")
    assert row.updated_by == staff_user


def test_setting_the_same_value_again_records_nothing(staff_user):
    services.config_set(key="queue.batch_size", value=300, reason="a", actor=staff_user)
    count = SystemConfig.history.filter(key="queue.batch_size").count()
    assert services.config_set(key="queue.batch_size", value="300", actor=staff_user) is None
    assert SystemConfig.history.filter(key="queue.batch_size").count() == count


def test_a_bad_value_changes_nothing():
    with pytest.raises(ValidationError) as caught:
        services.config_set(key="queue.batch_size", value=-1, reason="oops")
    assert "queue.batch_size: must be at least 1" in caught.value.message_dict["value"][0]
    assert config_get("queue.batch_size") == 1000


def test_an_unknown_key_is_refused():
    with pytest.raises(ApplicationError, match=r"unknown configuration key 'queue\.nope'"):
        services.config_set(key="queue.nope", value=1)


def test_batch_is_all_or_nothing_and_names_each_bad_key(staff_user):
    version = config_version()
    with pytest.raises(ValidationError) as caught:
        services.config_set_many(
            values={
                "queue.batch_size": 50,
                "backoff.strategy": "random",
                "backoff.jitter": 7,
                "queue.unknown": 1,
            },
            reason="batch",
            actor=staff_user,
        )
    errors = caught.value.message_dict
    assert set(errors) == {"backoff.strategy", "backoff.jitter", "queue.unknown"}
    assert "one of fixed" in errors["backoff.strategy"][0]
    assert "at most 1" in errors["backoff.jitter"][0]
    assert config_get("queue.batch_size") == 1000
    assert config_version() == version


def test_batch_applies_every_value_in_one_version(staff_user):
    version = config_version()
    changes = services.config_set_many(
        values={"queue.batch_size": 50, "backoff.strategy": "linear", "backoff.jitter": 0.1},
        reason="tune",
        actor=staff_user,
    )
    assert {c.key for c in changes} == {"queue.batch_size", "backoff.strategy"}
    assert config_get("backoff.strategy") == "linear"
    assert config_version() > version


def test_rollback_restores_an_old_value_as_a_new_audited_change(staff_user, make_user):
    other = make_user("second-operator", is_staff=True)
    services.config_set(key="backoff.max_retries", value=7, reason="more", actor=staff_user)
    services.config_set(key="backoff.max_retries", value=9, reason="even more", actor=staff_user)
    target = config_history("backoff.max_retries")[1]
    assert target["value"] == 7
    change = services.config_rollback(
        key="backoff.max_retries", history_id=target["id"], reason="too many", actor=other
    )
    assert change == services.Change("backoff.max_retries", 9, 7)
    assert config_get("backoff.max_retries") == 7
    latest = config_history("backoff.max_retries")[0]
    assert latest["changed_by"] == "second-operator"
    assert latest["reason"] == f"rollback to #{target['id']}: too many"
    assert (latest["old_value"], latest["value"]) == (9, 7)


def test_rollback_to_another_keys_history_is_refused(staff_user):
    services.config_set(key="backoff.max_retries", value=7, actor=staff_user)
    foreign = SystemConfig.history.filter(key="queue.batch_size").first()
    with pytest.raises(ApplicationError, match="no history entry"):
        services.config_rollback(key="backoff.max_retries", history_id=foreign.history_id)


def test_diff_lists_changes_and_invalid_values():
    changes, errors = services.config_diff(
        {"queue.batch_size": 1000, "queue.dispatchers": 4, "backoff.jitter": 9}
    )
    assert changes == [services.Change("queue.dispatchers", 2, 4)]
    assert set(errors) == {"backoff.jitter"}


def test_any_write_path_moves_the_version_the_caches_watch():
    before = config_version()
    SystemConfig.objects.filter(key="queue.batch_size").update(value=123)
    assert config_version() == before + 1
