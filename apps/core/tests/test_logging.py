from __future__ import annotations

import logging

from apps.core.logging import RedactSecretsFilter, RequestIdFilter, request_id_var


def make_record(message: str, *args) -> logging.LogRecord:
    return logging.LogRecord("edm", logging.INFO, __file__, 1, message, args, None)


def test_secrets_are_masked_in_log_messages():
    record = make_record("login with password=%s and token: %s", "hunter2", "abc")
    RedactSecretsFilter().filter(record)
    message = record.getMessage()
    assert "hunter2" not in message
    assert "abc" not in message
    assert "password=***" in message


def test_messages_without_secrets_are_untouched():
    record = make_record("sent %d messages", 5)
    RedactSecretsFilter().filter(record)
    assert record.getMessage() == "sent 5 messages"


def test_request_id_is_attached_to_every_record():
    token = request_id_var.set("req-42")
    try:
        record = make_record("hello")
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    assert record.request_id == "req-42"
