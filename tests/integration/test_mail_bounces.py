"""A mail provider's bounce report about mail the SMTP server had accepted (services/notification/bounces.py),
against a real SMTP server (aiosmtpd), on PostgreSQL and SQLite: the delivery becomes ``bounced``, told once as
``notification.failed``; a report quicker than the sender's own record is the outcome; nothing else changes."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from services.notification import domain, sending
from services.notification.bootstrap import bootstrap
from services.notification.mail import SmtpTransport
from services.notification.tables import Delivery, DeliveryAttempt
from shared.config import load_settings
from shared.events import make_event, parse_event
from shared.migrations import upgrade
from shared.tokens import load_private_key_pem
from tests.support.servers import free_port
from tests.support.smtp import SmtpServer

SECRET = "bounce-secret-123"
URL = "/notification/api/v1/mail/bounces"
HEADERS = {"X-Bounce-Secret": SECRET}


@pytest.fixture
def runtime(tmp_path, database_url):
    env = {"LABINOV_DATA_DIR": str(tmp_path), "LABINOV_MAIL_BOUNCE_SECRET": SECRET}
    if database_url:
        env["LABINOV_NOTIFICATION_DATABASE_URL"] = database_url
    runtime = bootstrap(load_settings("notification", env))
    upgrade(runtime)
    load_private_key_pem(runtime.settings)
    yield runtime
    runtime.engine.dispose()


@pytest.fixture
def client(runtime):
    from services.notification.app import create_app

    return create_app(runtime).test_client()


def confirm(runtime, i: int) -> None:
    data = {
        "registration_id": f"r-{i}",
        "session_id": "s-1",
        "session_title": "Sosialisasi",
        "session_starts_at": "2027-03-01T09:00:00+08:00",
        "session_location": "Aula",
        "status": "confirmed",
        "name": f"Peserta {i}",
        "nip": f"198503152010011{i:03d}",
        "email": f"peserta{i}@kaltaraprov.go.id",
        "phone": "+6281200000001",
        "opd": "Dinas Kominfo",
    }
    event = parse_event(make_event("registration.confirmed", data, source="/registration", correlation_id=f"req-{i}"))
    with runtime.unit_of_work() as uow:
        domain.notify_registration(uow, event, ZoneInfo("Asia/Makassar"))
        uow.commit()


def delivery_to(runtime, i: int) -> Delivery:
    with runtime.reading() as uow:
        return uow.session.scalars(select(Delivery).where(Delivery.recipient == f"peserta{i}@kaltaraprov.go.id")).one()


def told(runtime, delivery_id: str) -> list[str]:
    outbox = runtime.outbox.c
    with runtime.engine.connect() as connection:
        payloads = connection.scalars(select(outbox.payload).order_by(outbox.id))
        return [e["type"] for e in map(json.loads, payloads) if e["subject"] == delivery_id]


def tries(runtime, delivery_id: str) -> list[str]:
    with runtime.reading() as uow:
        query = select(DeliveryAttempt.outcome).where(DeliveryAttempt.delivery_id == delivery_id)
        return list(uow.session.scalars(query.order_by(DeliveryAttempt.id)))


def test_a_bounce_about_accepted_mail_marks_it_bounced_and_tells_it_once(runtime, client):
    confirm(runtime, 1)
    confirm(runtime, 2)
    with SmtpServer() as smtp:
        sending.send_due_mail(runtime, SmtpTransport(smtp.url))
        [mail] = smtp.to("peserta1@kaltaraprov.go.id")
    first = delivery_to(runtime, 1)
    assert first.status == "sent" and told(runtime, first.id) == ["notification.delivered"]

    report = {"message_id": mail["Message-ID"], "error": "550 5.1.1 mailbox unknown", "provider": "extra"}
    answer = client.post(URL, json=report, headers=HEADERS)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["status"] == "bounced" and answer.get_json()["last_error"] == "550 5.1.1 mailbox unknown"
    assert told(runtime, first.id) == ["notification.delivered", "notification.failed"]
    assert tries(runtime, first.id) == ["sent", "bounced"]

    again = client.post(URL, json={"message_id": mail["Message-ID"].strip("<>"), "error": "again"}, headers=HEADERS)
    assert again.status_code == 200 and again.get_json()["last_error"] == "550 5.1.1 mailbox unknown"
    assert told(runtime, first.id) == ["notification.delivered", "notification.failed"], "a repeat tells nothing"
    second = delivery_to(runtime, 2)
    assert (second.status, told(runtime, second.id)) == ("sent", ["notification.delivered"]), "others untouched"


def test_a_report_about_mail_that_did_not_go_or_is_not_ours_changes_nothing(runtime, client):
    confirm(runtime, 1)
    queued = delivery_to(runtime, 1)
    answer = client.post(URL, json={"message_id": f"<{queued.id}@labinov.local>"}, headers=HEADERS)
    assert answer.status_code == 200 and answer.get_json()["status"] == "queued"
    assert told(runtime, queued.id) == [] and tries(runtime, queued.id) == []
    for foreign in (f"<{queued.id}@mail.example.com>", "<nobody@labinov.local>", "not-a-message-id"):
        refused = client.post(URL, json={"message_id": foreign}, headers=HEADERS)
        assert refused.status_code == 404 and refused.mimetype == "application/problem+json", foreign
    assert client.post(URL, json={}, headers=HEADERS).status_code == 422


class _BouncingAtOnce:
    """An SMTP server whose provider reports the bounce before it answers the mail's 250: the sender has not
    recorded the mail as sent yet (it is ``sending``)."""

    def __init__(self, client):
        self.client = client
        self.reports = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        report = {"message_id": message["Message-ID"], "error": "550 5.7.1 rejected by the recipient's server"}
        self.reports.append(self.client.post(URL, json=report, headers=HEADERS))
        return "250 Message accepted for delivery"


def test_a_bounce_quicker_than_the_senders_record_is_the_outcome_told_once(runtime, client):
    confirm(runtime, 1)
    handler = _BouncingAtOnce(client)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        sending.send_due_mail(runtime, SmtpTransport(f"smtp://127.0.0.1:{controller.port}"))
    finally:
        controller.stop()
    [report] = handler.reports
    assert report.status_code == 200 and report.get_json()["status"] == "bounced"
    row = delivery_to(runtime, 1)
    assert (row.status, row.attempts) == ("bounced", 1), "the sender's own record found it no longer pending"
    assert told(runtime, row.id) == ["notification.failed"], "never told as delivered, never twice"
    assert tries(runtime, row.id) == ["bounced"]


def test_a_bounced_announcement_mail_counts_as_failed_in_its_progress(runtime, client):
    from services.notification import announcements

    confirm(runtime, 1)
    confirm(runtime, 2)
    with runtime.unit_of_work() as uow:
        data = {"subject": "Info", "body": "Yth. {name}.", "channels": ["email"], "audience": {"session_id": "s-1"}}
        announcement = announcements.create(uow, {**data, "send_at": None}, "panitia@kaltaraprov.go.id", "req-a")
        uow.commit()
    while announcements.expand_due(runtime):
        pass
    with SmtpServer() as smtp:
        while sending.send_due_mail(runtime, SmtpTransport(smtp.url)):
            pass
        [info] = [m for m in smtp.to("peserta2@kaltaraprov.go.id") if str(m["Subject"]) == "Info"]
    report = {"message_id": info["Message-ID"], "error": "550 5.1.1 mailbox unknown"}
    assert client.post(URL, json=report, headers=HEADERS).get_json()["status"] == "bounced"

    with runtime.reading() as uow:
        shown = announcements.progress(uow, announcements.get(uow, announcement.id))
    assert (shown["total"], shown["sent"], shown["failed"], shown["queued"]) == (2, 1, 1, 0)
    assert shown["failures"] == [
        {"recipient": "peserta2@kaltaraprov.go.id", "error": "550 5.1.1 mailbox unknown", "attempts": 1}
    ]
