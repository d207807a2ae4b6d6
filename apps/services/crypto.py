"""Encryption at rest for stored secrets (SMTP passwords, API keys).

Fernet (AES-128-CBC + HMAC-SHA256) with the keys of ``EDM_ENCRYPTION_KEY``; several
comma-separated keys allow rotation: the first encrypts, all of them decrypt
(``manage.py check --database default`` then reports secrets none of them can read;
:func:`reencrypt` moves a value to the first key).
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(Exception):
    """The stored value was encrypted with a key that is not configured (any more)."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.EDM_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    """A Fernet token for ``plaintext`` ("" stays "")."""
    if not plaintext:
        return ""
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """The plaintext of ``token``; raises DecryptionError when no configured key fits."""
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "a stored secret cannot be decrypted with EDM_ENCRYPTION_KEY: the key is wrong, "
            "or the key it was encrypted with was removed (keep old keys after the new one, "
            "comma-separated, while rotating)"
        ) from None


def reencrypt(token: str) -> str:
    """``token`` encrypted again with the first (newest) key."""
    if not token:
        return ""
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "a stored secret cannot be decrypted with EDM_ENCRYPTION_KEY"
        ) from None


def secret(field: str) -> property:
    """A model property for a secret encrypted at rest in the text field ``field``.

    ``password = crypto.secret("password_encrypted")``: reading ``obj.password`` decrypts
    (raising :class:`DecryptionError` when no configured key fits), assigning encrypts, and
    ``""`` stays ``""``; as a property it is accepted by the model's constructor and
    ``objects.create()``. Never log the plain value. ``manage.py rotate_encryption_key``
    re-encrypts every ``*_encrypted`` field, so name the field that way.
    """

    def read(obj) -> str:
        return decrypt(getattr(obj, field))

    def write(obj, value: str) -> None:
        setattr(obj, field, encrypt(value))

    return property(read, write, doc=f"The decrypted value of ``{field}``. Never log it.")
