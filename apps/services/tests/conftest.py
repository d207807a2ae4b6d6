"""Fixtures of the services tests: real SMTP servers (with AUTH), factories."""

from __future__ import annotations

import socket
import ssl
import warnings
from dataclasses import dataclass

import factory
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from apps.core.smtp_sink import SinkHandler
from apps.services.models import EmailService, Pool
from apps.services.selectors import pool_default

SMTP_USER = "mailer"
SMTP_PASSWORD = "s3cret-Pa55"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


class _AuthController(Controller):
    def factory(self):
        # aiosmtpd warns (per connection) that AUTH without TLS is unsafe: this is a
        # loopback test server.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return super().factory()


@dataclass
class AuthServer:
    port: int
    handler: SinkHandler
    controller: Controller


@pytest.fixture
def smtp_auth_server():
    """A real aiosmtpd server that requires AUTH (PLAIN/LOGIN, no TLS) before MAIL FROM."""
    handler = SinkHandler()
    port = _free_port()
    controller = _AuthController(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    yield AuthServer(port=port, handler=handler, controller=controller)
    controller.stop()


def _self_signed_context(directory) -> ssl.SSLContext:
    """A server TLS context with a fresh self-signed certificate for 127.0.0.1."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edm-test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


@pytest.fixture
def smtp_tls_server(tmp_path):
    """A real aiosmtpd server offering STARTTLS with a self-signed (untrusted) certificate."""
    handler = SinkHandler()
    port = _free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, tls_context=_self_signed_context(tmp_path)
    )
    controller.start()
    yield AuthServer(port=port, handler=handler, controller=controller)
    controller.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    return _free_port()


class PoolFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Pool

    name = factory.Sequence(lambda n: f"pool-{n}")


class EmailServiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EmailService

    pool = factory.LazyFunction(pool_default)
    name = factory.Sequence(lambda n: f"service-{n}")
    kind = EmailService.Kind.SMTP
    host = "127.0.0.1"
    port = 2525
    from_email = factory.Sequence(lambda n: f"sender{n}@example.com")
    daily_quota = 1000
    sending_rate = 0.5


@pytest.fixture
def service(db):
    return EmailServiceFactory()
