"""SMTP over TLS: the mail sender checks the server's certificate and never sends a password in the clear.

A real SMTP server (aiosmtpd) with a certificate from a CA made for the test; the client trusts that CA
through ``SSL_CERT_FILE``, which :func:`ssl.create_default_context` reads like any system CA bundle.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from services.notification import domain, sending
from services.notification.mail import SmtpTransport
from services.notification.tables import Delivery
from shared.events import make_event, parse_event
from tests.support.runtimes import migrated_runtime
from tests.support.servers import free_port


def _certificate(subject: str, issuer_key, issuer: x509.Name | None = None, *, ca: bool = False, dns: str = ""):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _write_pem(path: Path, certificate, key=None) -> Path:
    data = certificate.public_bytes(serialization.Encoding.PEM)
    if key is not None:
        data += key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    path.write_bytes(data)
    return path


@pytest.fixture
def certificates(tmp_path) -> dict[str, Path]:
    """A test CA, a server certificate it signed for ``localhost``, and one signed by nobody trusted."""
    ca_key, ca = _certificate("Labinov test CA", None, ca=True)
    server_key, server = _certificate("localhost", ca_key, ca.subject, dns="localhost")
    stranger_key, stranger = _certificate("localhost", None, dns="localhost")
    return {
        "ca": _write_pem(tmp_path / "ca.pem", ca),
        "server": _write_pem(tmp_path / "server.pem", server, server_key),
        "self-signed": _write_pem(tmp_path / "self-signed.pem", stranger, stranger_key),
    }


class _Handler:
    def __init__(self) -> None:
        self.messages = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
        return "250 Message accepted for delivery"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=True)


@contextmanager
def _smtp_server(handler: _Handler, certificate: Path | None, *, implicit_tls: bool, **options) -> Iterator[int]:
    """``implicit_tls``: TLS from the first byte (smtps); otherwise STARTTLS when there is a certificate."""
    context = None
    if certificate is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate)
    port = free_port()
    # aiosmtpd counts only STARTTLS as encrypted: on smtps it would not offer AUTH without this
    tls = {"ssl_context": context, "auth_require_tls": False} if implicit_tls else {"tls_context": context}
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, authenticator=handler.authenticate, **tls, **options
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def _queue_one_mail(runtime) -> None:
    event = parse_event(
        make_event(
            "registration.confirmed",
            {
                "registration_id": "r-1",
                "session_id": "s-1",
                "session_title": "Sosialisasi",
                "session_starts_at": "2027-03-01T09:00:00+08:00",
                "session_location": "Aula",
                "status": "confirmed",
                "name": "Peserta",
                "nip": "198503152010011001",
                "email": "peserta@kaltaraprov.go.id",
                "phone": "+6281200000001",
                "opd": "Dinas Kominfo",
            },
            source="/registration",
            correlation_id="req-1",
        )
    )
    with runtime.unit_of_work() as uow:
        domain.notify_registration(uow, event, ZoneInfo("Asia/Makassar"))
        uow.commit()


def _delivery(runtime):
    with runtime.engine.connect() as connection:
        return connection.execute(select(Delivery.__table__)).one()


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_mail_goes_out_over_tls_to_a_server_whose_certificate_is_trusted(
    scheme, certificates, tmp_path, postgres_url, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["ca"]))
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_one_mail(runtime)
    handler = _Handler()

    with _smtp_server(handler, certificates["server"], implicit_tls=scheme == "smtps") as port:
        sending.send_due_mail(runtime, SmtpTransport(f"{scheme}://mailer:rahasia@localhost:{port}"))

    assert len(handler.messages) == 1
    assert handler.logins == [(b"mailer", b"rahasia")]
    assert _delivery(runtime).status == "sent"


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
@pytest.mark.parametrize(
    ("certificate", "host", "problem"),
    [
        ("self-signed", "localhost", "certificate verify failed"),  # signed by nobody the client trusts
        ("server", "127.0.0.1", "IP address mismatch"),  # trusted, but for another name
    ],
)
def test_mail_waits_when_the_server_certificate_does_not_check_out(
    scheme, certificate, host, problem, certificates, tmp_path, postgres_url, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["ca"]))
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_one_mail(runtime)
    handler = _Handler()

    with _smtp_server(handler, certificates[certificate], implicit_tls=scheme == "smtps") as port:
        sending.send_due_mail(runtime, SmtpTransport(f"{scheme}://mailer:rahasia@{host}:{port}"))

    assert handler.messages == [] and handler.logins == []
    delivery = _delivery(runtime)
    assert (delivery.status, delivery.attempts) == ("queued", 0)
    assert problem in delivery.last_error


def test_the_password_is_never_sent_over_an_unencrypted_connection(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_one_mail(runtime)
    handler = _Handler()

    with _smtp_server(handler, None, implicit_tls=False, auth_require_tls=False) as port:
        sending.send_due_mail(runtime, SmtpTransport(f"smtp://mailer:rahasia@127.0.0.1:{port}"))

    assert handler.logins == [] and handler.messages == []
    delivery = _delivery(runtime)
    assert (delivery.status, delivery.attempts) == ("queued", 0)
    assert "refusing to send the SMTP password unencrypted" in delivery.last_error


def test_without_credentials_mail_may_go_to_a_server_without_tls(tmp_path, postgres_url):
    """A local mail catcher (docker-compose) offers no TLS and needs no login."""
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_one_mail(runtime)
    handler = _Handler()

    with _smtp_server(handler, None, implicit_tls=False) as port:
        sending.send_due_mail(runtime, SmtpTransport(f"smtp://127.0.0.1:{port}"))

    assert len(handler.messages) == 1
    assert _delivery(runtime).status == "sent"
