"""The notification pipeline's hot paths stay short, on the real PostgreSQL and a real SMTP server (aiosmtpd).

What ``make bench`` measured the speed of is held here as behaviour, never as a time: how many statements a
registration event costs the consumer (each one is a round trip its thread waits for), that the sender keeps
one SMTP session across batches, and that a session the server dropped meanwhile costs no mail an attempt.
"""

from __future__ import annotations

import collections
import json
from datetime import UTC, datetime
from pathlib import Path
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


# --- batches: the messages already here, settled in one transaction ------------------------------------------


def test_a_batch_of_registration_events_costs_one_inbox_statement_and_one_statement_per_event(runtime):
    consumer = EventProcessor(
        "notification", {"registration.confirmed": _mail_only}, runtime.unit_of_work, runtime.inbox, max_attempts=5
    )
    consumer.process_batch([(_registration(1), {}), (_registration(2), {})])  # first use: statements compiled
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        assert consumer.process_batch([(_registration(n), {}) for n in (3, 4, 5)]) == ["handled"] * 3
    finally:
        event.remove(runtime.engine, "before_cursor_execute", count)

    assert len(statements) == 4, statements
    assert statements[0].startswith("INSERT INTO inbox")
    assert _count(runtime, Delivery) == 5


def test_the_whole_registration_statement_writes_the_inbox_copy_and_the_webhook_delivery_with_the_mail(runtime):
    from services.notification.tables import InboxMessage, Webhook, WebhookDelivery

    with runtime.unit_of_work() as uow:
        uow.session.add(
            Webhook(
                url="https://hooks.example.org/labinov",
                event_types=json.dumps(["registration.confirmed"]),
                secret="whsec_x",
                created_by="organiser-1",
                created_at=datetime.now(UTC),
            )
        )
        uow.commit()
    body = _registration(1, manage_url="https://labinov.example/registration/manage/r?token=secret-token")
    consumer = _processor(runtime)

    assert consumer.process_batch([(body, {}), (body, {})]) == ["handled", "duplicate"]
    assert consumer.process(body, {}) == "duplicate"

    with runtime.reading() as uow:
        [mail] = uow.session.scalars(select(Delivery))
        [copy] = uow.session.scalars(select(InboxMessage))
        [hook] = uow.session.scalars(select(WebhookDelivery))
    assert (copy.caused_by, copy.registration_id, copy.subject) == (
        body["id"],
        body["data"]["registration_id"],
        mail.subject,
    )
    assert hook.event_id == body["id"] and "secret-token" not in hook.payload


# Spawned racers: a function of this module, so that a fresh interpreter can import it.
def _settle_in_batches(data_dir: str, postgres_url: str, bodies: list[dict], size: int, reverse: bool, barrier):
    runtime = migrated_runtime("notification", Path(data_dir), postgres_url)
    consumer = _processor(runtime)
    outcomes: collections.Counter[str] = collections.Counter()
    barrier.wait()
    for start in range(0, len(bodies), size):
        batch = bodies[start : start + size]
        outcomes.update(consumer.process_batch([(b, {}) for b in (batch[::-1] if reverse else batch)]))
    return dict(outcomes)


def test_two_processes_settling_the_same_events_in_batches_handle_each_exactly_once(tmp_path, postgres_url):
    """Every event reaches both processes (as after a redelivery to a competing worker), in batches taken in
    opposite orders, at the same moment: each event is handled by exactly one of them, and nothing is lost."""
    import multiprocessing

    from services.notification.tables import InboxMessage

    migrated_runtime("notification", tmp_path, postgres_url)
    bodies = [_registration(n) for n in range(1, 61)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(2)
    with context.Pool(2) as pool:
        results = pool.starmap(
            _settle_in_batches,
            [(str(tmp_path), postgres_url, bodies, 10, reverse, barrier) for reverse in (False, True)],
        )

    total: collections.Counter[str] = collections.Counter()
    for outcomes in results:
        total.update(outcomes)
    assert dict(total) == {"handled": 60, "duplicate": 60}, results
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    assert _count(runtime, Delivery) == 60 and _count(runtime, InboxMessage) == 60
    with runtime.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(runtime.inbox)) == 60


def test_a_consumer_on_rabbitmq_settles_a_backlog_in_batches_and_acks_every_message(tmp_path, postgres_url, rabbitmq):
    """The messages already waiting are settled several to a transaction; a redelivered one is a duplicate; every
    message is acked only after its batch committed, so the queue ends empty with nothing unacked."""
    import threading

    from shared.messaging.consumer import consume_events
    from tests.support.broker_client import publish_raw
    from tests.support.servers import rabbitmqctl
    from tests.support.waiting import wait_until

    broker_url, vhost = rabbitmq
    runtime = migrated_runtime("notification", tmp_path, postgres_url, broker_url)
    bodies = [_registration(n) for n in range(1, 31)]
    for body in [*bodies, bodies[0]]:  # the first one twice, as a relay that published it again would
        publish_raw(broker_url, body, "registration.confirmed", message_id=body["id"])
    consumer = _processor(runtime)
    sizes: list[int] = []
    settle = consumer.process_batch

    def recording(messages):
        sizes.append(len(messages))
        return settle(messages)

    consumer.process_batch = recording
    stop = threading.Event()
    thread = threading.Thread(target=consume_events, args=(broker_url, consumer, stop))
    thread.start()
    try:
        wait_until(lambda: sum(sizes) >= 31, what="all 31 messages settled")
        wait_until(
            lambda: (
                "notification-events\t0\t0"
                in rabbitmqctl("list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged")
            ),
            what="the queue empty, nothing unacked",
        )
    finally:
        stop.set()
        thread.join(15)
    assert sum(sizes) == 31 and max(sizes) > 1, sizes
    assert _count(runtime, Delivery) == 30
