"""Encryption at rest for stored secrets (SMTP passwords, API keys).

Fernet (AES-128-CBC + HMAC-SHA256) with the keys of ``EDM_ENCRYPTION_KEY``; several
comma-separated keys allow rotation: the first encrypts, all of them decrypt.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(Exception):
    """The stored value was encrypted with a key that is not configured any more."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(plaintext: str) -> str:
    if not plaintext:
        return ""
    token = _fernet(tuple(settings.EDM_ENCRYPTION_KEYS)).encrypt(plaintext.encode())
    return token.decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet(tuple(settings.EDM_ENCRYPTION_KEYS)).decrypt(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "stored secret cannot be decrypted with EDM_ENCRYPTION_KEY"
        ) from None
