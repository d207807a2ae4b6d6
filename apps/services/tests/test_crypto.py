"""Passwords are encrypted at rest; a wrong key is a clear error."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core import checks
from django.db import connection

from apps.services import crypto
from apps.services.apps import check_stored_secrets
from apps.services.services import service_create
from apps.services.tests.conftest import EmailServiceFactory

pytestmark = pytest.mark.django_db

PASSWORD = "Very-Secret-Passw0rd"


def _raw_password_column(service_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT password_encrypted FROM services_emailservice WHERE id = %s", [service_id]
        )
        return cursor.fetchone()[0]


def test_the_raw_column_never_holds_the_password():
    service = service_create(
        name="s1",
        from_email="a@example.com",
        host="smtp.example.com",
        username="u",
        password=PASSWORD,
    )
    raw = _raw_password_column(service.pk)
    assert raw and PASSWORD not in raw
    assert raw.startswith("gAAAA")  # a Fernet token
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM services_emailservice WHERE services_emailservice::text LIKE %s",
            [f"%{PASSWORD}%"],
        )
        assert cursor.fetchone()[0] == 0
        cursor.execute(
            "SELECT count(*) FROM services_historicalemailservice WHERE "
            "services_historicalemailservice::text LIKE %s",
            [f"%{PASSWORD}%"],
        )
        assert cursor.fetchone()[0] == 0
    service.refresh_from_db()
    assert service.password == PASSWORD


def test_the_same_password_encrypts_differently_each_time():
    assert crypto.encrypt(PASSWORD) != crypto.encrypt(PASSWORD)
    assert crypto.encrypt("") == ""


def test_a_wrong_key_is_a_clear_error(settings):
    service = EmailServiceFactory(password=PASSWORD)
    settings.EDM_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    service.refresh_from_db()
    with pytest.raises(crypto.DecryptionError, match="EDM_ENCRYPTION_KEY"):
        service.password  # noqa: B018


def test_the_start_up_check_names_services_the_key_cannot_decrypt(settings):
    EmailServiceFactory(name="readable", password=PASSWORD)
    assert check_stored_secrets(databases=["default"]) == []
    settings.EDM_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    errors = check_stored_secrets(databases=["default"])
    assert [e.id for e in errors] == ["services.E001"]
    assert errors[0].level == checks.ERROR
    assert "readable" in errors[0].msg
    assert PASSWORD not in errors[0].msg


def test_rotation_keeps_old_secrets_readable_and_reencrypts_with_the_new_key(settings):
    old_key = settings.EDM_ENCRYPTION_KEYS[0]
    token = crypto.encrypt(PASSWORD)
    new_key = Fernet.generate_key().decode()
    settings.EDM_ENCRYPTION_KEYS = [new_key, old_key]
    assert crypto.decrypt(token) == PASSWORD
    rotated = crypto.reencrypt(token)
    settings.EDM_ENCRYPTION_KEYS = [new_key]
    assert crypto.decrypt(rotated) == PASSWORD


def test_manage_py_check_with_the_database_fails_on_a_wrong_key(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    EmailServiceFactory(name="locked-out", password=PASSWORD)
    settings.EDM_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(SystemCheckError, match=r"services\.E001.*locked-out"):
        call_command("check", databases=["default"])


def test_rotate_encryption_key_command_moves_every_password_to_the_new_key(settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    old_key = settings.EDM_ENCRYPTION_KEYS[0]
    first = EmailServiceFactory(name="one", password=PASSWORD)
    EmailServiceFactory(name="two", password="other-Passw0rd")
    EmailServiceFactory(name="none", password="")
    new_key = Fernet.generate_key().decode()
    settings.EDM_ENCRYPTION_KEYS = [new_key, old_key]
    out = StringIO()
    call_command("rotate_encryption_key", stdout=out)
    assert "2 secret(s) re-encrypted" in out.getvalue()
    assert "services.emailservice.password_encrypted: 2" in out.getvalue()
    settings.EDM_ENCRYPTION_KEYS = [new_key]  # the old key is gone
    first.refresh_from_db()
    assert first.password == PASSWORD
    # Without a key that reads them: a command error, and nothing changes.
    before = _raw_password_column(first.pk)
    settings.EDM_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("rotate_encryption_key")
    assert _raw_password_column(first.pk) == before


def test_rotation_covers_every_stored_secret_of_every_app(settings):
    """SMTP passwords, alert-channel secrets and DKIM keys all move to the new key, so the
    old key can be dropped; a secret field added to any model is found the same way."""
    from django.core.management import call_command

    from apps.deliverability.models import DkimKey
    from apps.monitoring.services import channel_create
    from apps.services.management.commands.rotate_encryption_key import encrypted_fields

    labels = {f"{model._meta.label_lower}.{name}" for model, name in encrypted_fields()}
    assert {
        "services.emailservice.password_encrypted",
        "monitoring.notificationchannel.secret_encrypted",
        "deliverability.dkimkey.private_key_encrypted",
    } <= labels

    service = EmailServiceFactory(name="one", password=PASSWORD)
    channel, channel_secret = channel_create(
        name="hook", kind="webhook", target="https://example.org/hook"
    )
    dkim = DkimKey(domain="example.org", selector="s1", public_key="AAAA")
    dkim.private_key = "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n"
    dkim.save()

    new_key = Fernet.generate_key().decode()
    settings.EDM_ENCRYPTION_KEYS = [new_key, *settings.EDM_ENCRYPTION_KEYS]
    call_command("rotate_encryption_key", stdout=StringIO())
    settings.EDM_ENCRYPTION_KEYS = [new_key]  # the old key is gone

    for obj in (service, channel, dkim):
        obj.refresh_from_db()
    assert service.password == PASSWORD
    assert channel.secret == channel_secret
    assert dkim.private_key.startswith("-----BEGIN PRIVATE KEY-----")
