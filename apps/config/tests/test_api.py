from __future__ import annotations

import pytest

from apps.config.models import SystemConfig
from apps.config.registry import KEYS
from apps.config.selectors import config_get, config_history

pytestmark = pytest.mark.django_db


def test_anonymous_users_are_refused(anon_api):
    assert anon_api.get("/api/system-config").status_code == 401


def test_users_read_every_key_with_its_type_and_rules(api):
    response = api.get("/api/system-config")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == len(KEYS)
    item = next(i for i in body["results"] if i["key"] == "backoff.strategy")
    assert item["type"] == "enum"
    assert item["value"] == "exponential"
    assert "fibonacci" in item["choices"]
    assert item["category"] == "backoff"


def test_a_category_lists_only_its_keys(api):
    body = api.get("/api/system-config/recovery").json()
    assert body["results"]
    assert {item["category"] for item in body["results"]} == {"recovery"}


def test_a_key_is_read_alone(api):
    body = api.get("/api/system-config/queue.batch_size").json()
    assert body["key"] == "queue.batch_size"
    assert body["value"] == 1000
    assert body["min"] == 1


def test_unknown_key_and_category_answer_404(api):
    assert api.get("/api/system-config/queue.nope").status_code == 404
    assert api.get("/api/system-config/nope").status_code == 404


def test_non_staff_users_cannot_write(api):
    response = api.put("/api/system-config/queue.batch_size", {"value": 5}, format="json")
    assert response.status_code == 403
    assert config_get("queue.batch_size") == 1000


def test_staff_change_a_key_and_the_history_names_them(staff_api):
    response = staff_api.put(
        "/api/system-config/queue.batch_size",
        {"value": 350, "reason": "more per tick"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["value"] == 350
    assert response.json()["changed"] is True
    history = staff_api.get("/api/system-config/queue.batch_size/history").json()["results"]
    assert history[0]["changed_by"] == "operator"
    assert history[0]["old_value"] == 1000
    assert history[0]["reason"] == "more per tick"


def test_a_bad_value_answers_400_naming_the_key_and_reason(staff_api):
    response = staff_api.put(
        "/api/system-config/backoff.strategy", {"value": "random", "reason": "x"}, format="json"
    )
    assert response.status_code == 400
    assert "backoff.strategy: must be one of" in response.json()["errors"]["value"][0]


def test_a_missing_value_answers_400(staff_api):
    response = staff_api.put("/api/system-config/backoff.strategy", {"reason": "x"}, format="json")
    assert response.status_code == 400
    assert "value" in response.json()["errors"]


def test_batch_is_all_or_nothing(staff_api):
    response = staff_api.put(
        "/api/system-config/batch",
        {
            "queue.batch_size": 10,
            "backoff.jitter": 3,
            "backoff.strategy": "nope",
        },
        format="json",
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"backoff.jitter", "backoff.strategy"}
    assert "at most 1" in errors["backoff.jitter"][0]
    assert config_get("queue.batch_size") == 1000


def test_batch_applies_all_values_with_the_reason(staff_api):
    response = staff_api.put(
        "/api/system-config/batch",
        {
            "values": {"queue.batch_size": 10, "backoff.strategy": "linear"},
            "reason": "load test",
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert {c["key"] for c in response.json()["changed"]} == {
        "queue.batch_size",
        "backoff.strategy",
    }
    assert config_get("backoff.strategy") == "linear"
    assert config_history("backoff.strategy")[0]["reason"] == "load test"


def test_flat_batch_may_carry_a_reason(staff_api):
    response = staff_api.put(
        "/api/system-config/batch", {"queue.dispatchers": 3, "reason": "scale"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert config_history("queue.dispatchers")[0]["reason"] == "scale"


def test_batch_by_non_staff_is_refused(api):
    response = api.put("/api/system-config/batch", {"queue.batch_size": 10}, format="json")
    assert response.status_code == 403


def test_rollback_through_the_api(staff_api):
    staff_api.put(
        "/api/system-config/queue.batch_size", {"value": 10, "reason": "a"}, format="json"
    )
    first = SystemConfig.history.filter(key="queue.batch_size").order_by("history_id").first()
    response = staff_api.post(
        "/api/system-config/queue.batch_size/rollback",
        {"history_id": first.history_id, "reason": "undo"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["value"] == 1000
    assert config_history("queue.batch_size")[0]["reason"] == (
        f"rollback to #{first.history_id}: undo"
    )


def test_rollback_to_an_unknown_history_id_answers_400(staff_api):
    response = staff_api.post(
        "/api/system-config/queue.batch_size/rollback", {"history_id": 999999}, format="json"
    )
    assert response.status_code == 400
    assert "history_id" in response.json()["errors"]
