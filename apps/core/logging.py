"""Logging filters: the current request id on every record, and secret redaction."""

from __future__ import annotations

import contextvars
import logging
import re

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# key=value / "key": "value" pairs whose key names a secret.
_SECRET = re.compile(
    r"(?i)(password|passwd|secret|token|api[_-]?key|authorization)"
    r"(\"?\s*[:=]\s*\"?)([^\s\",}]+)"
)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class RedactSecretsFilter(logging.Filter):
    """Last line of defence: masks ``password=...``-like values in formatted messages.

    Code must not log secrets in the first place; this catches accidents.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
