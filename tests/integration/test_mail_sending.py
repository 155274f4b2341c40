"""The notification worker's mail sender against a real SMTP server (aiosmtpd) and the real PostgreSQL."""

from __future__ import annotations

import json

from sqlalchemy import select, update

from services.notification import domain
from services.notification.mail import SmtpTransport
from services.notification.tables import Delivery
from shared.clock import utcnow
from shared.events import make_event, parse_event
from tests.support.runtimes import migrated_runtime
from tests.support.servers import free_port
from tests.support.smtp import SmtpServer


def _queue_confirmations(runtime, count: int) -> None:
    for i in range(count):
        event = parse_event(
            make_event(
                "registration.confirmed",
                {
                    "registration_id": f"r-{i}",
                    "session_id": "s-1",
                    "session_title": "Sosialisasi",
                    "session_starts_at": "2027-03-01T09:00:00+08:00",
                    "session_location": "Aula",
                    "status": "confirmed",
                    "name": f"Peserta {i}",
                    "nip": f"198503152010011{i + 1:03d}",
                    "email": f"peserta{i}@kaltaraprov.go.id",
                    "phone": "+6281200000001",
                    "opd": "Dinas Kominfo",
                },
                source="/registration",
                correlation_id=f"req-{i}",
            )
        )
        with runtime.unit_of_work() as uow:
            domain.notify_registration(uow, event)
            uow.commit()


def _deliveries(runtime) -> list:
    with runtime.engine.connect() as connection:
        return connection.execute(select(Delivery.__table__).order_by(Delivery.recipient)).all()


def _outbox_types(runtime) -> list[str]:
    with runtime.engine.connect() as connection:
        return [json.loads(p)["type"] for p in connection.scalars(select(runtime.outbox.c.payload))]


def test_a_batch_goes_out_over_one_smtp_session_and_each_delivery_reports_sent(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 5)

    with SmtpServer() as smtp:
        attempted = domain.send_due_mail(runtime, SmtpTransport(smtp.url))
        received = smtp.messages

    assert attempted == 5
    assert sorted(str(m["To"]) for m in received) == [f"peserta{i}@kaltaraprov.go.id" for i in range(5)]
    assert all(m["Message-ID"] and m["Date"] for m in received)
    assert [d.status for d in _deliveries(runtime)] == ["sent"] * 5
    assert _outbox_types(runtime).count("notification.delivered") == 5
    assert domain.send_due_mail(runtime, SmtpTransport(smtp.url)) == 0  # nothing is sent twice


def test_an_unreachable_mail_server_only_delays_mail(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 2)
    nowhere = SmtpTransport(f"smtp://127.0.0.1:{free_port()}")

    domain.send_due_mail(runtime, nowhere)

    waiting = _deliveries(runtime)
    assert [d.status for d in waiting] == ["pending", "pending"]
    assert all(d.attempts == 1 and "ConnectionRefusedError" in d.last_error for d in waiting)
    assert all(d.next_attempt_at > utcnow() for d in waiting)  # backed off, not hammering the server
    assert "notification.delivered" not in _outbox_types(runtime)

    with runtime.engine.begin() as connection:  # time passes: the retry is due
        connection.execute(update(Delivery.__table__).values(next_attempt_at=utcnow()))
    with SmtpServer() as smtp:
        domain.send_due_mail(runtime, SmtpTransport(smtp.url))
        assert len(smtp.messages) == 2
    assert [d.status for d in _deliveries(runtime)] == ["sent", "sent"]


def test_a_delivery_that_keeps_failing_ends_failed_and_says_so(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 1)
    nowhere = SmtpTransport(f"smtp://127.0.0.1:{free_port()}")

    for _ in range(domain.MAX_SEND_ATTEMPTS):
        with runtime.engine.begin() as connection:
            connection.execute(update(Delivery.__table__).values(next_attempt_at=utcnow()))
        domain.send_due_mail(runtime, nowhere)

    [delivery] = _deliveries(runtime)
    assert delivery.status == "failed"
    assert delivery.attempts == domain.MAX_SEND_ATTEMPTS
    assert _outbox_types(runtime) == ["notification.failed"]
