"""The notification pipeline's hot paths stay short, on the real PostgreSQL and a real SMTP server (aiosmtpd).

What ``make bench`` measured the speed of is held here as behaviour, never as a time: how many statements a
registration event costs the consumer (each one is a round trip its thread waits for), that the sender keeps
one SMTP session across batches, and that a session the server dropped meanwhile costs no mail an attempt.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import event, func, select

from services.notification import domain, sending
from services.notification.handlers import HANDLERS
from services.notification.mail import SmtpTransport
from services.notification.tables import Delivery, DeliveryAttempt, Recipient, RegistrationView, SessionView
from shared.events import make_event
from shared.messaging.consumer import EventProcessor
from tests.support.runtimes import migrated_runtime
from tests.support.servers import free_port

pytestmark = pytest.mark.postgres


def _registration(number: int = 1, **overrides) -> dict:
    data = {
        "registration_id": f"7d1c1a8e-0000-4000-8000-{number:012d}",
        "session_id": "7d1c1a8e-0000-4000-8000-0000000000aa",
        "session_title": "Sosialisasi Laboratorium Inovasi Kaltara",
        "session_starts_at": datetime(2026, 12, 7, 1, 0, tzinfo=UTC),
        "session_location": "Kantor Gubernur Kaltara, Tanjung Selor",
        "status": "confirmed",
        "name": f"Peserta {number}",
        "nip": f"198503152010012{number:03d}",
        "email": f"peserta{number}@kaltaraprov.go.id",
        "phone": "+6281234567890",
        "opd": "Dinas Kesehatan",
    }
    envelope = make_event(
        "registration.confirmed", {**data, **overrides}, source="/registration", correlation_id=f"c-{number}"
    )
    return json.loads(json.dumps(envelope, default=str))


def _processor(runtime) -> EventProcessor:
    return EventProcessor("notification", HANDLERS, runtime.unit_of_work, runtime.inbox, max_attempts=5)


def _count(runtime, model) -> int:
    with runtime.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(model.__table__))


@pytest.fixture
def runtime(tmp_path, postgres_url):
    return migrated_runtime("notification", tmp_path, postgres_url)


def test_an_event_delivered_twice_on_postgresql_is_handled_once_and_queues_one_mail(runtime):
    consumer = _processor(runtime)
    body = _registration()

    assert consumer.process(body, {}) == "handled"
    assert consumer.process(body, {}) == "duplicate"

    assert _count(runtime, Delivery) == 1
    with runtime.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(runtime.inbox)) == 1


def _mail_only(uow, event) -> None:
    domain.notify_registration(uow, event, ZoneInfo("Asia/Makassar"), hourly_cap=20)


def test_a_registration_event_and_its_mail_cost_the_consumer_two_statements_on_postgresql(runtime):
    """The inbox row, then projections + hourly cap + delivery + wake-up in one statement (and the commit);
    the other channels' writes (channels.after_event) are theirs to count."""
    consumer = EventProcessor(
        "notification", {"registration.confirmed": _mail_only}, runtime.unit_of_work, runtime.inbox, max_attempts=5
    )
    consumer.process(_registration(1), {})  # first use: statements compiled, connection made
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        assert consumer.process(_registration(2), {}) == "handled"
    finally:
        event.remove(runtime.engine, "before_cursor_execute", count)

    assert len(statements) == 2, statements
    assert statements[0].startswith("INSERT INTO inbox")
    assert _count(runtime, Delivery) == 2 and _count(runtime, Recipient) == 2


def test_the_one_statement_keeps_the_projections_as_the_plain_path_does(runtime):
    """A newer event wins, an older one arriving late changes nothing, a missing end keeps the known end."""
    consumer = _processor(runtime)
    ends = "2026-12-07T03:00:00+00:00"
    newer = _registration(1, session_ends_at=ends, name="Nama Baru")
    older = _registration(1, name="Nama Lama")
    older["time"] = "2000-01-02T00:00:00+00:00"
    for body in (newer, older):
        consumer.process(body, {})

    with runtime.reading() as uow:
        registration = uow.session.scalars(select(RegistrationView)).one()
        session = uow.session.scalars(select(SessionView)).one()
    assert registration.name == "Nama Baru"
    assert session.ends_at is not None and session.ends_at.isoformat().startswith("2026-12-07T03:00")


class _CountingSmtp:
    """Accepts every mail and counts the SMTP sessions (EHLO) it was asked for."""

    def __init__(self) -> None:
        self.sessions = 0
        self.accepted: list[str] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.accepted += envelope.rcpt_tos
        return "250 Message accepted for delivery"


def _queue(runtime, count: int, first: int = 1) -> None:
    consumer = _processor(runtime)
    for number in range(first, first + count):
        assert consumer.process(_registration(number), {}) == "handled"


def test_one_smtp_session_carries_batch_after_batch(runtime):
    smtp = _CountingSmtp()
    controller = Controller(smtp, hostname="127.0.0.1", port=free_port())
    controller.start()
    transport = SmtpTransport(f"smtp://127.0.0.1:{controller.port}")
    try:
        _queue(runtime, 3)
        assert sending.send_due_mail(runtime, transport, batch_size=2) == 2
        assert sending.send_due_mail(runtime, transport, batch_size=2) == 1
        _queue(runtime, 1, first=4)
        assert sending.send_due_mail(runtime, transport, batch_size=2) == 1
    finally:
        transport.close()
        controller.stop()

    assert smtp.sessions == 1
    assert len(smtp.accepted) == 4


def test_a_session_the_server_dropped_between_batches_costs_no_mail_an_attempt(runtime):
    port = free_port()
    first_server = Controller(_CountingSmtp(), hostname="127.0.0.1", port=port)
    first_server.start()
    transport = SmtpTransport(f"smtp://127.0.0.1:{port}")
    _queue(runtime, 1)
    sending.send_due_mail(runtime, transport)
    first_server.stop()  # the server goes away while the sender is idle, and comes back
    second = _CountingSmtp()
    second_server = Controller(second, hostname="127.0.0.1", port=port)
    second_server.start()
    try:
        _queue(runtime, 1, first=2)
        assert sending.send_due_mail(runtime, transport) == 1
    finally:
        transport.close()
        second_server.stop()

    assert second.accepted == ["peserta2@kaltaraprov.go.id"]
    with runtime.reading() as uow:
        outcomes = sorted(uow.session.scalars(select(DeliveryAttempt.outcome)))
        attempts = sorted(uow.session.scalars(select(Delivery.attempts)))
    assert outcomes == ["sent", "sent"] and attempts == [1, 1]


def test_the_mails_of_one_batch_are_each_recorded_with_their_attempt_and_event(runtime):
    smtp = _CountingSmtp()
    controller = Controller(smtp, hostname="127.0.0.1", port=free_port())
    controller.start()
    transport = SmtpTransport(f"smtp://127.0.0.1:{controller.port}")
    try:
        _queue(runtime, 5)
        assert sending.send_due_mail(runtime, transport, batch_size=5) == 5
    finally:
        transport.close()
        controller.stop()

    with runtime.engine.connect() as connection:
        events = [json.loads(p) for p in connection.scalars(select(runtime.outbox.c.payload))]
        sent = connection.execute(select(Delivery.id, Delivery.status, Delivery.correlation_id)).all()
        attempts = connection.scalars(select(DeliveryAttempt.delivery_id)).all()
    assert {status for _id, status, _c in sent} == {"sent"}
    assert sorted(attempts) == sorted(row_id for row_id, _s, _c in sent)
    delivered = {e["data"]["delivery_id"]: e["correlationid"] for e in events if e["type"] == "notification.delivered"}
    assert delivered == {row_id: correlation for row_id, _s, correlation in sent}
