"""The notification worker's mail sender against a real SMTP server (aiosmtpd) and the real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import event, select, update
from sqlalchemy.exc import DBAPIError

from services.notification import domain, rules, sending
from services.notification.mail import SmtpTransport
from services.notification.tables import Delivery
from shared.clock import utcnow
from shared.events import make_event, parse_event
from shared.observability import current_correlation_id, reset_correlation_id, set_correlation_id
from tests.support.runtimes import migrated_runtime
from tests.support.servers import free_port
from tests.support.smtp import SmtpServer

deliveries = Delivery.__table__


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
            domain.notify_registration(uow, event, ZoneInfo("Asia/Makassar"))
            uow.commit()


def _address(i: int) -> str:
    return f"peserta{i}@kaltaraprov.go.id"


def _deliveries(runtime) -> list:
    with runtime.engine.connect() as connection:
        return connection.execute(select(deliveries).order_by(Delivery.recipient)).all()


def _delivery_to(runtime, address: str):
    [row] = [d for d in _deliveries(runtime) if d.recipient == address]
    return row


def _change_deliveries(runtime, *where, **values) -> None:
    with runtime.engine.begin() as connection:
        connection.execute(update(deliveries).where(*where).values(**values))


def _make_all_due(runtime) -> None:
    """Time passes: every pending delivery's retry is due."""
    _change_deliveries(runtime, deliveries.c.status.in_(("queued", "sending")), next_attempt_at=utcnow())


def _events(runtime) -> list[dict]:
    with runtime.engine.connect() as connection:
        return [json.loads(p) for p in connection.scalars(select(runtime.outbox.c.payload))]


def _outbox_types(runtime) -> list[str]:
    return [event["type"] for event in _events(runtime)]


class _ScriptedHandler:
    """An aiosmtpd handler that refuses some recipients for now (450) or for good (550), answers 421 from the
    n-th mail on, hangs up while receiving the n-th mail, or runs a hook."""

    def __init__(
        self,
        refuse: set[str] = frozenset(),
        refuse_for_good: set[str] = frozenset(),
        closing_from: int | None = None,
        on_message: Callable[[EmailMessage], None] | None = None,
        hang_up_on: int | None = None,
    ) -> None:
        self.refuse = refuse
        self.refuse_for_good = refuse_for_good
        self.closing_from = closing_from
        self.hang_up_on = hang_up_on
        self.on_message = on_message
        self.messages: list[EmailMessage] = []

    async def handle_RCPT(self, server, smtp_session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refuse_for_good:
            return "550 5.1.1 No such user here"
        if address in self.refuse:
            return "450 4.2.1 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, smtp_session, envelope):  # noqa: N802
        if self.hang_up_on is not None and len(self.messages) == self.hang_up_on:
            server.transport.abort()  # drops the connection without a reply, as a crashing server would
            return None
        if self.closing_from is not None and len(self.messages) >= self.closing_from:
            return "421 4.3.2 Service shutting down, closing transmission channel"
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        self.messages.append(message)
        if self.on_message:
            self.on_message(message)
        return "250 Message accepted for delivery"


@contextmanager
def _scripted_smtp(handler: _ScriptedHandler) -> Iterator[SmtpTransport]:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpTransport(f"smtp://127.0.0.1:{controller.port}")
    finally:
        controller.stop()


def _recipients(messages: list[EmailMessage]) -> list[str]:
    return [str(m["To"]) for m in messages]


# --- a batch -------------------------------------------------------------------------------------------------


def test_a_batch_goes_out_over_one_smtp_session_and_each_delivery_reports_sent(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 5)

    with SmtpServer() as smtp:
        attempted = sending.send_due_mail(runtime, SmtpTransport(smtp.url))
        received = smtp.messages

    assert attempted == 5
    assert sorted(_recipients(received)) == [_address(i) for i in range(5)]
    assert all(m["Message-ID"] and m["Date"] for m in received)
    assert [d.status for d in _deliveries(runtime)] == ["sent"] * 5
    assert _outbox_types(runtime).count("notification.delivered") == 5
    assert sending.send_due_mail(runtime, SmtpTransport(smtp.url)) == 0  # nothing is sent twice


def test_mail_goes_out_oldest_due_first(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 5)
    by_id = sorted(_deliveries(runtime), key=lambda d: d.id)
    for waited, delivery in enumerate(by_id, start=1):  # the highest id has waited longest
        _change_deliveries(
            runtime, deliveries.c.id == delivery.id, next_attempt_at=utcnow() - timedelta(minutes=waited)
        )

    with SmtpServer() as smtp:
        sending.send_due_mail(runtime, SmtpTransport(smtp.url))
        received = smtp.messages

    assert _recipients(received) == [d.recipient for d in reversed(by_id)]


def test_a_resent_delivery_keeps_its_message_id(tmp_path, postgres_url):
    """The crash window (mail accepted, outcome not committed) resends; mail clients must see one message."""
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 1)
    [delivery] = _deliveries(runtime)

    with SmtpServer() as smtp:
        sending.send_due_mail(runtime, SmtpTransport(smtp.url))
        _change_deliveries(runtime, status="queued", claim_token=None, claimed_until=None, next_attempt_at=utcnow())
        sending.send_due_mail(runtime, SmtpTransport(smtp.url))
        first, resent = smtp.messages

    assert first["Message-ID"] == resent["Message-ID"] == f"<{delivery.id}@labinov.local>"
    assert first["Date"] and resent["Date"]


def test_delivered_and_failed_events_carry_the_correlation_id_of_the_registration(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 3)
    _change_deliveries(runtime, deliveries.c.recipient == _address(1), attempts=rules.MAX_SEND_ATTEMPTS - 1)
    _change_deliveries(runtime, deliveries.c.recipient == _address(2), correlation_id=None)
    worker_loop = set_correlation_id("mail-loop")
    try:
        with _scripted_smtp(_ScriptedHandler(refuse={_address(1)})) as transport:
            sending.send_due_mail(runtime, transport)
        assert current_correlation_id() == "mail-loop"  # the worker's own context is left as it was
    finally:
        reset_correlation_id(worker_loop)

    correlation = {(e["type"], e["data"]["recipient"]): e["correlationid"] for e in _events(runtime)}
    assert correlation[("notification.delivered", _address(0))] == "req-0"
    assert correlation[("notification.failed", _address(1))] == "req-1"
    assert correlation[("notification.delivered", _address(2))] not in ("mail-loop", "req-0", "req-1")


def test_deliveries_queued_at_the_same_moment_page_in_a_stable_order(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 8)
    _change_deliveries(runtime, created_at=datetime(2027, 3, 1, 9, 0, tzinfo=UTC))
    ids = sorted(d.id for d in _deliveries(runtime))

    with runtime.unit_of_work() as uow:
        pages = [delivery.id for offset in range(8) for delivery in domain.list_deliveries(uow, limit=1, offset=offset)]

    assert pages == ids


# --- one bad mail --------------------------------------------------------------------------------------------


def test_a_mail_that_cannot_be_composed_costs_only_itself_an_attempt(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 3)
    _change_deliveries(runtime, deliveries.c.recipient == _address(1), subject="Sosialisasi\nBcc: all@example.org")

    with SmtpServer() as smtp:
        sending.send_due_mail(runtime, SmtpTransport(smtp.url))
        received = smtp.messages

    assert sorted(_recipients(received)) == [_address(0), _address(2)]
    bad = _delivery_to(runtime, _address(1))
    assert (bad.status, bad.attempts, bad.claim_token) == ("queued", 1, None)
    assert "linefeed" in bad.last_error
    assert bad.next_attempt_at > utcnow()
    assert [d.status for d in _deliveries(runtime)] == ["sent", "queued", "sent"]


def test_a_refused_recipient_costs_only_its_own_delivery_an_attempt(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 3)
    handler = _ScriptedHandler(refuse={_address(1)})

    with _scripted_smtp(handler) as transport:
        sending.send_due_mail(runtime, transport)

    assert sorted(_recipients(handler.messages)) == [_address(0), _address(2)]
    refused = _delivery_to(runtime, _address(1))
    assert (refused.status, refused.attempts) == ("queued", 1)
    assert "SMTPRecipientsRefused" in refused.last_error


def test_a_delivery_the_server_keeps_refusing_ends_failed_and_says_so(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 1)

    with _scripted_smtp(_ScriptedHandler(refuse={_address(0)})) as transport:
        for _ in range(rules.MAX_SEND_ATTEMPTS):
            _make_all_due(runtime)
            sending.send_due_mail(runtime, transport)

    [delivery] = _deliveries(runtime)
    assert delivery.status == "failed"
    assert delivery.attempts == rules.MAX_SEND_ATTEMPTS
    assert _outbox_types(runtime) == ["notification.failed"]


# --- the connection ------------------------------------------------------------------------------------------


def test_an_unreachable_mail_server_only_delays_mail(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 2)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    _change_deliveries(runtime, deliveries.c.recipient == _address(1), created_at=an_hour_ago)
    nowhere = SmtpTransport(f"smtp://127.0.0.1:{free_port()}")

    before = utcnow()
    sending.send_due_mail(runtime, nowhere)

    fresh, waiting_long = _deliveries(runtime)
    for delivery in (fresh, waiting_long):
        assert (delivery.status, delivery.attempts, delivery.claim_token) == ("queued", 0, None)
        assert "ConnectionRefusedError" in delivery.last_error
    # backed off (not hammering the server), the longer a mail has waited the longer, up to 10 minutes
    assert before + timedelta(seconds=30) <= fresh.next_attempt_at <= utcnow() + timedelta(minutes=1)
    assert before + timedelta(minutes=10) <= waiting_long.next_attempt_at <= utcnow() + timedelta(minutes=10)
    assert "notification.delivered" not in _outbox_types(runtime)

    _make_all_due(runtime)
    with SmtpServer() as smtp:
        sending.send_due_mail(runtime, SmtpTransport(smtp.url))
        assert len(smtp.messages) == 2
    assert [d.status for d in _deliveries(runtime)] == ["sent", "sent"]


def test_a_long_outage_does_not_fail_mail(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 1)
    nowhere = SmtpTransport(f"smtp://127.0.0.1:{free_port()}")

    for _ in range(rules.MAX_SEND_ATTEMPTS + 2):
        _make_all_due(runtime)
        sending.send_due_mail(runtime, nowhere)

    [delivery] = _deliveries(runtime)
    assert (delivery.status, delivery.attempts) == ("queued", 0)
    assert _outbox_types(runtime) == []


def test_mail_older_than_the_maximum_age_fails_when_it_still_cannot_go_out(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 2)
    too_old = datetime.now(UTC) - rules.MAX_DELIVERY_AGE - timedelta(minutes=1)
    _change_deliveries(runtime, deliveries.c.recipient == _address(0), created_at=too_old)

    sending.send_due_mail(runtime, SmtpTransport(f"smtp://127.0.0.1:{free_port()}"))

    old, young = _deliveries(runtime)
    assert (old.status, old.attempts) == ("failed", 0)
    assert "ConnectionRefusedError" in old.last_error
    assert young.status == "queued"
    assert [(e["type"], e["data"]["recipient"]) for e in _events(runtime)] == [("notification.failed", _address(0))]


def test_a_server_closing_the_session_mid_batch_costs_the_unsent_mail_no_attempt(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 3)
    handler = _ScriptedHandler(closing_from=1)

    with _scripted_smtp(handler) as transport:
        sending.send_due_mail(runtime, transport)

    [sent] = handler.messages
    for delivery in _deliveries(runtime):
        if delivery.recipient == str(sent["To"]):
            assert delivery.status == "sent"
        else:
            assert (delivery.status, delivery.attempts, delivery.claim_token) == ("queued", 0, None)
            assert "421" in delivery.last_error
            assert delivery.next_attempt_at > utcnow()


def test_a_database_error_after_the_server_accepted_a_mail_does_not_schedule_it_again(tmp_path, postgres_url):
    """The lease keeps the mail from being resent at once; after it, the resend keeps its Message-ID."""
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 1)
    with runtime.engine.begin() as connection:  # the database fails exactly when the outcome is recorded
        connection.exec_driver_sql(
            "CREATE FUNCTION refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the database went away'; END $$"
        )
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse_outcome BEFORE UPDATE ON deliveries FOR EACH ROW "
            "WHEN (NEW.status = 'sent') EXECUTE FUNCTION refuse_outcome()"
        )

    with SmtpServer() as smtp:
        with pytest.raises(DBAPIError, match="the database went away"):
            sending.send_due_mail(runtime, SmtpTransport(smtp.url))
        assert sending.send_due_mail(runtime, SmtpTransport(smtp.url)) == 0
        assert len(smtp.messages) == 1

    [delivery] = _deliveries(runtime)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sending", 0, None)
    assert delivery.claimed_until > utcnow()  # still leased: nobody sends it again before the lease ends


# --- the lease -----------------------------------------------------------------------------------------------


class _SendersClock:
    """The mail sender's clock (``sending.utcnow``), which a test moves on as a slow server would."""

    def __init__(self, monkeypatch) -> None:
        self.ahead = timedelta(0)
        monkeypatch.setattr(sending, "utcnow", lambda: utcnow() + self.ahead)


def _lease_renewals(runtime) -> list[str]:
    """The statements that renew a batch's lease, as the sender sends them (filled in as it runs)."""
    renewals: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("UPDATE deliveries SET claimed_until"):
            renewals.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", seen)
    return renewals


def test_a_delivery_another_worker_took_over_mid_batch_is_not_sent_twice(tmp_path, postgres_url, monkeypatch):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 3)
    clock = _SendersClock(monkeypatch)
    other_worker: dict = {}

    def the_first_mail_is_slow(message: EmailMessage) -> None:
        if other_worker:
            return
        # the lease of the rest of the batch runs out meanwhile — on this sender's clock and on the other
        # worker's — and another worker claims those mails
        clock.ahead = sending.SEND_LEASE + timedelta(seconds=1)
        other_worker["first"] = str(message["To"])
        _change_deliveries(
            runtime,
            deliveries.c.status.in_(("queued", "sending")),
            deliveries.c.recipient != other_worker["first"],
            claimed_until=utcnow() - timedelta(seconds=1),
        )
        other_worker["token"], other_worker["rows"] = sending.delivery_queue(runtime.engine).claim(20)

    handler = _ScriptedHandler(on_message=the_first_mail_is_slow)
    with _scripted_smtp(handler) as transport:
        sending.send_due_mail(runtime, transport)

    assert _recipients(handler.messages) == [other_worker["first"]]
    assert len(other_worker["rows"]) == 2
    for delivery in _deliveries(runtime):
        if delivery.recipient == other_worker["first"]:
            assert delivery.status == "sent"
        else:  # left alone (as its claims marked it) for the worker that holds it now
            assert (delivery.status, delivery.attempts, delivery.claim_token) == ("sending", 0, other_worker["token"])


def test_a_batch_is_marked_sending_by_its_claim_and_its_lease_is_not_renewed_per_mail(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 6)
    renewals = _lease_renewals(runtime)
    states_during_the_first_mail: list[str] = []

    def look(message: EmailMessage) -> None:
        if not states_during_the_first_mail:
            states_during_the_first_mail.extend(d.status for d in _deliveries(runtime))

    handler = _ScriptedHandler(on_message=look)
    with _scripted_smtp(handler) as transport:
        assert sending.send_due_mail(runtime, transport) == 6

    assert states_during_the_first_mail == ["sending"] * 6
    assert renewals == []  # the claim's lease is still long: no round trip before any of the six mails
    assert [d.status for d in _deliveries(runtime)] == ["sent"] * 6


def test_a_batch_whose_lease_runs_low_renews_it_once_for_the_rest_and_sends_on(tmp_path, postgres_url, monkeypatch):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 4)
    clock = _SendersClock(monkeypatch)
    renewals = _lease_renewals(runtime)
    leases_seen: list = []

    def the_first_mail_is_slow(message: EmailMessage) -> None:
        if not leases_seen:
            # less than RENEW_WHEN_LEFT of the lease is left on the sender's clock, but it has not run out
            clock.ahead = sending.SEND_LEASE - sending.RENEW_WHEN_LEFT + timedelta(seconds=1)
            leases_seen.append({d.recipient: d.claimed_until for d in _deliveries(runtime)})
        elif len(leases_seen) == 1:
            leases_seen.append({d.recipient: d.claimed_until for d in _deliveries(runtime)})

    handler = _ScriptedHandler(on_message=the_first_mail_is_slow)
    with _scripted_smtp(handler) as transport:
        sending.send_due_mail(runtime, transport)

    assert len(handler.messages) == 4
    assert len(renewals) == 1  # one statement for every row of the batch not yet recorded, then none
    before, after = leases_seen
    moved_on = sending.SEND_LEASE - sending.RENEW_WHEN_LEFT
    assert all(after[address] >= before[address] + moved_on for address in before)  # the sent one's too
    assert [d.status for d in _deliveries(runtime)] == ["sent"] * 4


def test_a_connection_that_breaks_while_a_mail_is_in_flight_charges_that_mail_only(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 3)
    handler = _ScriptedHandler(hang_up_on=1)

    with _scripted_smtp(handler) as transport:
        sending.send_due_mail(runtime, transport)

    [sent] = handler.messages
    outcomes = sorted((d.status, d.attempts) for d in _deliveries(runtime))
    assert outcomes == [("queued", 0), ("queued", 1), ("sent", 1)]


# --- permanent refusals and the record of attempts ----------------------------------------------------------


def test_a_recipient_the_server_refuses_for_good_fails_at_once_and_is_never_tried_again(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 2)
    handler = _ScriptedHandler(refuse_for_good={_address(0)})

    with _scripted_smtp(handler) as transport:
        sending.send_due_mail(runtime, transport)
        _make_all_due(runtime)
        assert sending.send_due_mail(runtime, transport) == 0  # nothing left to try

    refused = _delivery_to(runtime, _address(0))
    assert (refused.status, refused.attempts) == ("failed", 1)
    assert "550" in refused.last_error
    assert _recipients(handler.messages) == [_address(1)]
    assert sorted(_outbox_types(runtime)) == ["notification.delivered", "notification.failed"]


def test_every_attempt_of_a_delivery_is_kept_with_its_outcome_error_and_time(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    _queue_confirmations(runtime, 1)
    nowhere = SmtpTransport(f"smtp://127.0.0.1:{free_port()}")
    sending.send_due_mail(runtime, nowhere)
    _make_all_due(runtime)
    with _scripted_smtp(_ScriptedHandler(refuse={_address(0)})) as transport:
        sending.send_due_mail(runtime, transport)
    _make_all_due(runtime)
    with SmtpServer() as smtp:
        sending.send_due_mail(runtime, SmtpTransport(smtp.url))

    [delivery] = _deliveries(runtime)
    with runtime.reading() as uow:
        attempts = domain.attempts_of(uow, [delivery.id])[delivery.id]
    assert [a.outcome for a in attempts] == ["wait", "retry", "sent"]
    assert "ConnectionRefusedError" in attempts[0].error and "450" in attempts[1].error
    assert attempts[2].error is None
    assert attempts[0].at <= attempts[1].at <= attempts[2].at
    assert (delivery.status, delivery.attempts) == ("sent", 2)
