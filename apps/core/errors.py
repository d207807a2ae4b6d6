"""Errors raised by service functions and mapped to HTTP 400 by the API."""

from __future__ import annotations


class ApplicationError(Exception):
    """A request that cannot be carried out, with the field it concerns when there is one.

    Service functions raise it for rule violations (a duplicate name, a task that is not in
    a state that allows the action...). The API's exception handler turns it into a 400
    ``{"detail": message, "code": code, "errors": {field: [message]}}``; management
    commands turn it into a ``CommandError``.
    """

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code

    def as_dict(self) -> dict:
        return error_body(
            self.message,
            code=self.code,
            errors={self.field: [self.message]} if self.field else None,
        )


def error_body(detail: str, *, code: str, errors: dict[str, list[str]] | None = None) -> dict:
    """The API's one error shape: ``{"detail", "code", "errors": {field: [reasons]}}``."""
    return {"detail": detail, "code": code, "errors": errors or {}}
