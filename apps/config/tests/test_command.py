from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.config.registry import KEYS
from apps.config.selectors import config_get, config_history

pytestmark = pytest.mark.django_db


def _run(*args) -> str:
    out = StringIO()
    call_command("config", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_export_writes_every_key(tmp_path):
    target = tmp_path / "config.json"
    _run("export", "--output", str(target))
    data = json.loads(target.read_text())
    assert data["format"] == "edm-config"
    assert set(data["values"]) == set(KEYS)
    assert json.loads(_run("export"))["values"]["queue.batch_size"] == 1000


def test_import_applies_everything_with_the_reason_and_user(tmp_path, staff_user):
    path = tmp_path / "prod.json"
    path.write_text(json.dumps({"values": {"queue.batch_size": 400, "backoff.strategy": "fixed"}}))
    output = _run("import", str(path), "--reason", "promote staging", "--user", "operator")
    assert "queue.batch_size: 1000 -> 400" in output
    assert config_get("backoff.strategy") == "fixed"
    entry = config_history("queue.batch_size")[0]
    assert (entry["changed_by"], entry["reason"]) == ("operator", "promote staging")


def test_import_with_one_bad_value_changes_nothing_and_names_it(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps({"values": {"queue.batch_size": 400, "backoff.jitter": 5, "queue.gone": 1}})
    )
    with pytest.raises(CommandError) as caught:
        _run("import", str(path), "--reason", "x")
    assert "backoff.jitter: must be at most 1" in str(caught.value)
    assert "queue.gone: unknown configuration key" in str(caught.value)
    assert config_get("queue.batch_size") == 1000


def test_import_of_a_file_that_is_not_json_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "values": {,}\n}')
    with pytest.raises(CommandError, match="line 2"):
        _run("import", str(path), "--reason", "x")


def test_diff_shows_what_would_change_and_changes_nothing(tmp_path):
    path = tmp_path / "next.json"
    path.write_text(
        json.dumps({"queue.batch_size": 1000, "queue.dispatchers": 6, "backoff.jitter": 2})
    )
    output = _run("diff", str(path))
    assert "queue.dispatchers: 2 -> 6" in output
    assert "backoff.jitter: INVALID (must be at most 1" in output
    assert "queue.batch_size" not in output
    assert config_get("queue.dispatchers") == 2


def test_export_then_import_round_trips(tmp_path):
    path = tmp_path / "same.json"
    _run("export", "--output", str(path))
    assert "0 key(s) changed" in _run("import", str(path), "--reason", "noop")


def test_set_one_key_from_the_command_line():
    assert "recovery.stuck_threshold: 1800 -> 2700" in _run(
        "set", "recovery.stuck_threshold", "45m", "--reason", "slow provider"
    )
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        _run("set", "queue.batch_size", "5", "--reason", "x", "--user", "ghost")
