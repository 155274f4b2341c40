"""Notification's domain operations: keep the projections, turn events into deliveries, send due mail.

Sending is split in two so that no mail is lost or doubled:

* An event handler calls one of the ``notify_*`` operations, which update the projections (recipients,
  registrations per session, sessions) and write one ``Delivery`` row per recipient (``queued``, with its
  rendered text and HTML, see :mod:`.messages`) in the handler's transaction — together with the inbox row.
  A redelivered event finds the inbox entry and writes nothing; the unique ``(caused_by, recipient,
  channel)`` makes a second write for the same cause a no-op (``INSERT … ON CONFLICT DO NOTHING``) even if
  two workers race. The service never asks another service who someone is: the events told it.
* :func:`send_due_mail` (the worker's mail loop) claims due deliveries, oldest due first, from the
  deliveries work queue (:class:`shared.workqueue.WorkQueue`: leases, claim tokens, ``SKIP LOCKED``) and
  sends them over one connection. Before each mail it renews that row's lease and marks it ``sending``,
  and skips the row if another worker has taken it over (a batch can outlast the lease on a slow server).
  An announcement's delivery to an address that has opted out since the fan-out is cancelled instead.
  After a failed send it asks :func:`services.notification.rules.after_failed_send` what to do — retry
  (with jitter), wait for the server, or fail (a recipient refused for good fails at once) — and records
  that. Every try is kept in ``delivery_attempts``, written in the transaction that records its outcome;
  each final outcome is recorded with its ``notification.delivered`` or ``notification.failed`` event
  (under the delivery's correlation id) in one transaction.
  The one unavoidable window — the server accepted a mail but the outcome was not committed (the process
  died, the database failed) — leaves the row ``sending`` with a lease; once the lease runs out it is
  claimed and sent again, with the same ``Message-ID`` (SMTP gives no way to ask whether a mail was
  accepted, so the copy cannot be avoided, only recognised by mail clients).

**The hourly cap.** Registrations are public: anyone can type anyone's address. Mail caused by them is
counted per address and clock hour in ``flood_counters`` by one atomic insert-or-increment (two workers
cannot both take the last place); past ``LABINOV_MAIL_HOURLY_CAP`` the delivery is written ``held``
instead of ``queued``: never sent, listed for organisers.

The domain operations that take a ``uow`` add to it and never commit; :func:`send_due_mail` needs one
transaction per outcome, so it takes the runtime and commits each itself (the rule in ``UnitOfWork``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from services.notification import messages, rules
from services.notification.mail import MailTransport, Send, classify_send_failure
from services.notification.messages import Unsubscribe, compose, local_time, render
from services.notification.rules import MAX_SEND_ATTEMPTS, Fail, RetryAt, SendFailure, WaitForServer
from services.notification.tables import (
    UNFINISHED_STATES,
    Delivery,
    DeliveryAttempt,
    FloodCounter,
    OptOut,
    Recipient,
    RegistrationView,
    SessionView,
)
from shared.backoff import equal_jitter
from shared.clock import utcnow
from shared.db import UnitOfWork, insert_or_update, new_id, upsert
from shared.events import Event
from shared.messaging.wakeup import DELIVERIES
from shared.observability import new_correlation_id, reset_correlation_id, set_correlation_id
from shared.runtime import ServiceRuntime
from shared.tokens import load_secret_key
from shared.workqueue import WorkQueue

log = logging.getLogger(__name__)

SEND_LEASE = timedelta(minutes=2)
deliveries = Delivery.__table__

#: Which message tells a participant about a registration event, by the event's type and the status it
#: reports. Any other combination is a producer's contradiction: the handler fails (KeyError) and the event
#: ends in the dead-letter queue rather than sending a wrong message.
REGISTRATION_MAILS = {
    ("registration.confirmed", "confirmed"): "registration_confirmed",
    ("registration.waitlisted", "waitlisted"): "registration_waitlisted",
    ("registration.promoted", "confirmed"): "registration_promoted",
    ("registration.cancelled", "cancelled"): "registration_cancelled",
}
#: Registrants told about a change to their session: those who hold a seat or wait for one.
SESSION_AUDIENCE = ("confirmed", "waitlisted")
#: Events older than any real one: a check-in heard before its registration writes a row that the
#: registration's own event then completes.
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


# --- projections ------------------------------------------------------------------------------------------


def remember_recipient(uow: UnitOfWork, data: dict[str, Any]) -> str:
    """Create or refresh the recipient an event describes, in one statement (two workers handling events
    about one person never collide; the event handled last wins). Returns the recipient's address."""
    email = data["email"].lower()
    upsert(
        uow.session,
        Recipient.__table__,
        {
            "email": email,
            "name": data["name"],
            "phone": data.get("phone"),
            "opd": data.get("opd"),
            "language": messages.language_of(data.get("language")),
            "updated_at": datetime.now(UTC),
        },
        key=("email",),
    )
    return email


def _newer_wins(session: Session, table, values: dict[str, Any], key: str, keep: tuple[str, ...] = ()) -> None:
    """Upsert ``values`` unless the stored row was written by a newer event (``event_time``): events may
    arrive in any order, and a late old one must not undo a newer state. One statement, so racing workers
    never collide."""
    statement = insert_or_update(session, table).values(**values)
    changes = {name: statement.excluded[name] for name in values if name != key and name not in keep}
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[key], set_=changes, where=table.c.event_time <= statement.excluded.event_time
        )
    )


def remember_registration(uow: UnitOfWork, event: Event) -> None:
    """Keep who is registered for which session, in which state: the audience of session mail."""
    data = event.data
    _newer_wins(
        uow.session,
        RegistrationView.__table__,
        {
            "registration_id": data["registration_id"],
            "session_id": data["session_id"],
            "programme_id": data.get("programme_id"),
            "email": data["email"].lower(),
            "name": data["name"],
            "opd": data.get("opd"),
            "language": messages.language_of(data.get("language")),
            "status": data["status"],
            "event_time": event.time,
        },
        key="registration_id",
    )
    session_values = {
        "session_id": data["session_id"],
        "programme_id": data.get("programme_id"),
        "title": data["session_title"],
        "starts_at": data["session_starts_at"],
        "location": data["session_location"],
        "state": "published",
        "event_time": event.time,
    }
    if data.get("session_ends_at"):
        session_values["ends_at"] = data["session_ends_at"]
    _newer_wins(uow.session, SessionView.__table__, session_values, key="session_id")


def remember_session(uow: UnitOfWork, event: Event) -> None:
    data = event.data
    _newer_wins(
        uow.session,
        SessionView.__table__,
        {
            "session_id": data["session_id"],
            "programme_id": data.get("programme_id"),
            "title": data["title"],
            "starts_at": data["starts_at"],
            "ends_at": data["ends_at"],
            "location": data["location"],
            "online_url": data.get("online_url"),
            "state": "cancelled" if event.type == "session.cancelled" else data.get("state", "published"),
            "event_time": event.time,
        },
        key="session_id",
    )


def remember_check_in(uow: UnitOfWork, event: Event) -> None:
    """A participant came: the audience "checked in to a session" of announcements."""
    data = event.data
    table = RegistrationView.__table__
    statement = insert_or_update(uow.session, table).values(
        registration_id=data["registration_id"],
        session_id=data["session_id"],
        programme_id=data.get("programme_id"),
        email=data["email"].lower(),
        name=data["name"],
        opd=data.get("opd"),
        language="id",
        status="confirmed",  # only a confirmed registration is checked in; its own event refines the row
        checked_in_at=data["checked_in_at"],
        event_time=LONG_AGO,
    )
    uow.session.execute(
        statement.on_conflict_do_update(
            index_elements=["registration_id"], set_={"checked_in_at": statement.excluded.checked_in_at}
        )
    )


# --- writing deliveries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One message to write for one recipient: what it is, to whom, and what it carries."""

    kind: str
    recipient: str
    name: str | None
    language: str | None
    context: dict[str, Any]
    ics: str | None = None
    ticket_code: str | None = None


def queue_messages(
    uow: UnitOfWork,
    caused_by: str,
    correlation_id: str | None,
    batch: Sequence[Message],
    *,
    public_cause: bool = False,
    hourly_cap: int | None = None,
    announcement_id: str | None = None,
) -> int:
    """Write one delivery per message (rendered now), skipping any the same cause already wrote for that
    recipient; returns how many were new. Mail from a public cause past the hourly cap is written ``held``.
    The mail senders are woken when the caller's transaction commits."""
    if not batch:
        return 0
    now, due = datetime.now(UTC), utcnow()
    rows = []
    for message in batch:
        rendered = render(message.kind, message.language, message.context)
        status = "queued"
        if public_cause and hourly_cap is not None and not _within_hourly_cap(uow, message.recipient, hourly_cap):
            status = "held"
        rows.append(
            {
                "id": new_id(),
                "channel": "email",
                "recipient": message.recipient,
                "recipient_name": message.name,
                "language": rendered.language,
                "template": message.kind,
                "subject": rendered.subject,
                "body": rendered.text,
                "html_body": rendered.html,
                "ics": message.ics,
                "ticket_code": message.ticket_code,
                "caused_by": caused_by,
                "announcement_id": announcement_id,
                "public_cause": public_cause,
                "correlation_id": correlation_id,
                "status": status,
                "attempts": 0,
                "next_attempt_at": due,
                "last_error": "held back: over the hourly cap for this address" if status == "held" else None,
                "created_at": now,
            }
        )
    statement = insert_or_update(uow.session, deliveries).on_conflict_do_nothing(
        index_elements=["caused_by", "recipient", "channel"]
    )
    uow.notify_after_commit(DELIVERIES)  # the mail senders start on these as soon as the transaction commits
    return uow.session.execute(statement, rows).rowcount or 0


def _within_hourly_cap(uow: UnitOfWork, email: str, cap: int) -> bool:
    """Count one more message from a public cause to ``email`` this hour (atomically), and whether it may go."""
    table = FloodCounter.__table__
    statement = insert_or_update(uow.session, table).values(email=email, hour=rules.hour_of(utcnow()), count=1)
    statement = statement.on_conflict_do_update(
        index_elements=["email", "hour"], set_={"count": table.c["count"] + 1}
    ).returning(table.c["count"])
    return rules.within_hourly_cap(uow.session.execute(statement).scalar_one(), cap)


# --- events → messages ------------------------------------------------------------------------------------


def notify_registration(uow: UnitOfWork, event: Event, timezone: tzinfo, hourly_cap: int | None = None) -> int:
    """A registration was confirmed, waitlisted, promoted or cancelled: tell the participant in their language
    (times in ``timezone``, with its abbreviation, e.g. WITA). A confirmation carries the manage link, the
    ticket as a QR code and the session's calendar entry when the event brings what they need."""
    data = event.data
    kind = REGISTRATION_MAILS[event.type, data["status"]]
    recipient = remember_recipient(uow, data)
    remember_registration(uow, event)
    seated = data["status"] == "confirmed"
    context = {
        "name": data["name"],
        "opd": data["opd"],
        "session_title": data["session_title"],
        "starts_at": local_time(data["session_starts_at"], timezone),
        "location": data["session_location"],
        "online_url": data.get("online_url"),
        "position": data.get("waitlist_position"),
        "manage_url": data.get("manage_url") if data["status"] != "cancelled" else None,
        "ticket_code": data.get("ticket_code") if seated else None,
    }
    ics = None
    if seated:
        ics = messages.session_calendar_entry(
            session_id=data["session_id"],
            title=data["session_title"],
            starts_at=data["session_starts_at"],
            ends_at=data.get("session_ends_at"),
            location=data["session_location"],
            online_url=data.get("online_url"),
            manage_url=data.get("manage_url"),
        )
    message = Message(kind, recipient, data["name"], data.get("language"), context, ics, context["ticket_code"])
    return queue_messages(uow, event.id, event.correlationid, [message], public_cause=True, hourly_cap=hourly_cap)


def _shown(key: str, value: Any, timezone: tzinfo) -> str | None:
    """A changed session field as people read it (times local, with the zone)."""
    if value is None:
        return None
    if key in ("starts_at", "ends_at"):
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return local_time(moment, timezone)
    return str(value)


def session_registrants(uow: UnitOfWork, session_id: str, statuses: Sequence[str] = SESSION_AUDIENCE) -> list:
    query = (
        select(RegistrationView)
        .where(RegistrationView.session_id == session_id, RegistrationView.status.in_(list(statuses)))
        .order_by(RegistrationView.registration_id)
    )
    return list(uow.session.scalars(query))


def notify_session_changed(uow: UnitOfWork, event: Event, timezone: tzinfo) -> int:
    """A session's time or place changed: tell everyone who holds or waits for a seat, saying what changed.
    Registrants whose own event arrives after this one get the new time in that mail anyway."""
    data = event.data
    remember_session(uow, event)
    changes = {
        key: {"old": _shown(key, change["old"], timezone), "new": _shown(key, change["new"], timezone)}
        for key, change in data["changes"].items()
    }
    batch = [
        Message(
            "session_changed",
            registrant.email,
            registrant.name,
            registrant.language,
            {"name": registrant.name, "session_title": data["title"], "changes": changes, "manage_url": None},
        )
        for registrant in session_registrants(uow, data["session_id"])
    ]
    return queue_messages(uow, event.id, event.correlationid, batch)


def notify_session_cancelled(uow: UnitOfWork, event: Event, timezone: tzinfo) -> int:
    data = event.data
    remember_session(uow, event)
    context = {
        "session_title": data["title"],
        "starts_at": local_time(data["starts_at"], timezone),
        "location": data["location"],
    }
    batch = [
        Message(
            "session_cancelled",
            registrant.email,
            registrant.name,
            registrant.language,
            {**context, "name": registrant.name},
        )
        for registrant in session_registrants(uow, data["session_id"])
    ]
    return queue_messages(uow, event.id, event.correlationid, batch)


def notify_proposal_received(uow: UnitOfWork, event: Event, timezone: tzinfo) -> int:
    """A team submitted its proposal: confirm receipt to the team lead."""
    data = event.data
    recipient = data["team_email"].lower()
    context = {
        "name": data["team_name"],
        "opd": data["opd"],
        "proposal_title": data["title"],
        "category": data["category"],
        "submitted_at": local_time(data["submitted_at"], timezone),
    }
    message = Message("proposal_received", recipient, data["team_name"], data.get("language"), context)
    return queue_messages(uow, event.id, event.correlationid, [message])


def notify_evaluator_assigned(uow: UnitOfWork, event: Event, public_url: str) -> int:
    """An evaluator has a proposal to evaluate: tell them, with the link to their assignments (in the
    language the recipients projection knows for them, else Bahasa Indonesia)."""
    data = event.data
    recipient = data["evaluator_email"].lower()
    known = uow.session.get(Recipient, recipient)
    name = data.get("evaluator_name") or (known.name if known else recipient)
    context = {
        "name": name,
        "proposal_title": data["proposal_title"],
        "round_name": data["round_name"],
        "assignments_url": f"{public_url}/evaluation/assignments",
    }
    message = Message("evaluator_assigned", recipient, name, known.language if known else None, context)
    return queue_messages(uow, event.id, event.correlationid, [message])


def notify_result(uow: UnitOfWork, event: Event, timezone: tzinfo) -> int:
    """A round's results were published: tell the team its rank, whether it advanced and why not, and until
    when it may object (times shown in ``timezone``)."""
    data = event.data
    context = {
        **{key: data.get(key) for key in ("team_name", "opd", "round_name", "proposal_title", "rank", "reason")},
        "ranked_proposals": data["ranked_proposals"],
        "advanced": data.get("advanced"),
        "final": data["final"],
        "objection_deadline": local_time(data.get("objection_deadline"), timezone),
    }
    recipient = data["team_email"].lower()
    message = Message("results_published", recipient, data["team_name"], data.get("language"), context)
    return queue_messages(uow, event.id, event.correlationid, [message])


# --- reading ----------------------------------------------------------------------------------------------


def list_deliveries(
    uow: UnitOfWork, email: str | None = None, limit: int = 100, offset: int = 0, status: str | None = None
):
    query = select(Delivery).order_by(Delivery.created_at.desc(), Delivery.id).limit(limit).offset(offset)
    if email:
        query = query.where(Delivery.recipient == email.strip().lower())
    if status:
        query = query.where(Delivery.status == status)
    return list(uow.session.scalars(query))


def attempts_of(uow: UnitOfWork, delivery_ids: Sequence[str]) -> dict[str, list[DeliveryAttempt]]:
    found: dict[str, list[DeliveryAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    query = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(list(delivery_ids)))
    for attempt in uow.session.scalars(query.order_by(DeliveryAttempt.id)):
        found[attempt.delivery_id].append(attempt)
    return found


# --- opting out of announcements --------------------------------------------------------------------------


def unsubscribe_key(runtime: ServiceRuntime) -> bytes:
    """The key of the opt-out links, derived from the service's secret (web and worker share it)."""
    return hmac.new(load_secret_key(runtime.settings), b"labinov notification unsubscribe", hashlib.sha256).digest()


def unsubscribe_url(runtime: ServiceRuntime, email: str, channel: str = "email") -> str:
    token = rules.unsubscribe_token(unsubscribe_key(runtime), email, channel)
    return f"{runtime.settings.public_url}/notification/unsubscribe/{token}"


def opt_out(uow: UnitOfWork, email: str, channel: str) -> None:
    """No more announcements to ``email`` on ``channel`` (again is fine). Queued ones not yet claimed are
    cancelled; the sender checks again before each announcement mail."""
    statement = insert_or_update(uow.session, OptOut.__table__).values(
        email=email, channel=channel, created_at=datetime.now(UTC)
    )
    uow.session.execute(statement.on_conflict_do_nothing(index_elements=["email", "channel"]))
    now = utcnow()
    uow.session.execute(
        update(deliveries)
        .where(
            deliveries.c.recipient == email,
            deliveries.c.channel == channel,
            deliveries.c.announcement_id.is_not(None),
            deliveries.c.status == "queued",
            (deliveries.c.claimed_until.is_(None)) | (deliveries.c.claimed_until < now),
        )
        .values(status="cancelled", last_error="opted out")
    )


def opted_out(session: Session | Any, emails: Sequence[str], channel: str = "email") -> set[str]:
    if not emails:
        return set()
    query = select(OptOut.email).where(OptOut.channel == channel, OptOut.email.in_(list(emails)))
    return set(session.scalars(query))


# --- sending ----------------------------------------------------------------------------------------------


def delivery_queue(engine: Engine) -> WorkQueue:
    """The deliveries as a work queue: queued (or left ``sending`` by a crash), due from ``next_attempt_at``,
    the longest due first."""
    c = deliveries.c
    return WorkQueue(
        engine,
        deliveries,
        pending=(c.status.in_(UNFINISHED_STATES),),
        due_at=c.next_attempt_at,
        order_by=(c.next_attempt_at,),
        lease=SEND_LEASE,
    )


def send_due_mail(runtime: ServiceRuntime, transport: MailTransport, batch_size: int = 20) -> int:
    """Send the deliveries that are due, oldest first, over one connection; returns how many were claimed."""
    queue = delivery_queue(runtime.engine)
    token, rows = queue.claim(batch_size)
    if not rows:
        return 0
    rows = _cancel_opted_out(runtime, queue, token, rows)
    if not rows:
        return 1
    connection = ExitStack()
    try:
        send = connection.enter_context(transport.connection())
    except Exception as exc:  # no connection, whatever the reason: no mail can go
        _after_failure(runtime, queue, token, rows, SendFailure.SERVER_UNAVAILABLE, exc)
    else:
        with connection:
            _send_batch(runtime, queue, send, token, rows)
    return len(rows)


def _cancel_opted_out(runtime: ServiceRuntime, queue: WorkQueue, token: str, rows: Sequence) -> list:
    """Announcement mail to an address that opted out after the fan-out is cancelled, not sent."""
    announcement_rows = [row for row in rows if row.announcement_id]
    if not announcement_rows:
        return list(rows)
    with runtime.unit_of_work() as uow:
        gone = opted_out(uow.session, [row.recipient for row in announcement_rows])
        cancelled = [row for row in announcement_rows if row.recipient in gone]
        for row in cancelled:
            if queue.finish(token, [row.id], on=uow.session, status="cancelled", last_error="opted out"):
                _attempt(uow, row.id, "cancelled", "opted out")
        uow.commit()
    return [row for row in rows if row not in cancelled]


def _send_batch(runtime: ServiceRuntime, queue: WorkQueue, send: Send, token: str, rows: Sequence) -> None:
    """Send each row on its own; once the connection is lost, the rest of the batch waits for the server."""
    key = unsubscribe_key(runtime) if any(row.announcement_id for row in rows) else None
    for index, row in enumerate(rows):
        if not _start_sending(runtime, queue, token, row.id):
            log.warning("delivery %s skipped: its lease ran out and another worker has claimed it", row.id)
            continue
        try:
            unsubscribe = None
            if key is not None and row.announcement_id:
                link = rules.unsubscribe_token(key, row.recipient, row.channel)
                unsubscribe = Unsubscribe(f"{runtime.settings.public_url}/notification/unsubscribe/{link}")
            send(compose(row, runtime.settings.mail_from, unsubscribe))
        except Exception as exc:
            failure = classify_send_failure(exc)
            _after_failure(runtime, queue, token, [row], failure, exc)
            if failure.connection_lost:
                _after_failure(runtime, queue, token, rows[index + 1 :], SendFailure.SERVER_UNAVAILABLE, exc)
                return
            continue
        # outside the try: a database error here leaves the row ``sending`` and leased until the lease ends,
        # when it is sent again (the one unavoidable window, see the module docstring)
        _record_outcome(runtime, queue, token, row, "sent", row.attempts + 1)


def _start_sending(runtime: ServiceRuntime, queue: WorkQueue, token: str, row_id: str) -> bool:
    """Renew the row's lease and mark it ``sending``; False if it is no longer this claim's."""
    statement = queue.guarded(token, [row_id]).values(claimed_until=utcnow() + queue.lease, status="sending")
    with runtime.engine.begin() as connection:
        return connection.execute(statement).rowcount == 1


def _attempt(uow: UnitOfWork, delivery_id: str, outcome: str, error: str | None = None) -> None:
    uow.session.execute(
        insert(DeliveryAttempt.__table__).values(
            delivery_id=delivery_id, outcome=outcome, error=error, at=datetime.now(UTC)
        )
    )


def _after_failure(
    runtime: ServiceRuntime, queue: WorkQueue, token: str, rows: Sequence, failure: SendFailure, exc: Exception
) -> None:
    """Ask the rules what becomes of each of ``rows`` after ``failure``, and write it with its attempt."""
    if not rows:
        return
    error = f"{type(exc).__name__}: {exc}"[:2000]
    if failure is SendFailure.SERVER_UNAVAILABLE:
        log.warning("mail server unavailable, %d deliveries wait: %s", len(rows), error)
    now = datetime.now(UTC)
    for row in rows:
        decision = rules.after_failed_send(
            failure, attempts=row.attempts, created_at=row.created_at, now=now, jitter=equal_jitter
        )
        match decision:
            case RetryAt(at=at, attempts=attempts):
                log.warning("delivery %s failed (attempt %d of %d): %s", row.id, attempts, MAX_SEND_ATTEMPTS, error)
                _postpone(runtime, queue, token, row, at, "retry", error, attempts=attempts)
            case WaitForServer(at=at):
                _postpone(runtime, queue, token, row, at, "wait", error)
            case Fail(reason=reason, attempts=attempts):
                log.warning("delivery %s failed for good (%s, %d attempts): %s", row.id, reason.value, attempts, error)
                _record_outcome(runtime, queue, token, row, "failed", attempts, error)


def _postpone(
    runtime: ServiceRuntime, queue: WorkQueue, token: str, row, at: datetime, outcome: str, error: str, **values
) -> None:
    with runtime.unit_of_work() as uow:
        if queue.postpone(token, row.id, at, on=uow.session, status="queued", last_error=error, **values):
            _attempt(uow, row.id, outcome, error)
        uow.commit()


def _record_outcome(
    runtime: ServiceRuntime, queue: WorkQueue, token: str, row, status: str, attempts: int, error: str | None = None
) -> None:
    """Mark the delivery sent or failed, keep the attempt and publish the matching event, in one transaction."""
    with _correlation_of(row), runtime.unit_of_work() as uow:
        finished = queue.finish(
            token,
            [row.id],
            on=uow.session,
            status=status,
            attempts=attempts,
            last_error=error,
            sent_at=datetime.now(UTC) if status == "sent" else None,
        )
        if finished:
            _attempt(uow, row.id, status, error)
            uow.publish(
                "notification.delivered" if status == "sent" else "notification.failed",
                {
                    "delivery_id": row.id,
                    "channel": row.channel,
                    "recipient": row.recipient,
                    "template": row.template,
                    "caused_by": row.caused_by,
                    "error": error,
                },
                subject=row.id,
            )
        uow.commit()


@contextmanager
def _correlation_of(row) -> Iterator[None]:
    """The events about a delivery carry the correlation id of the request that caused it."""
    previous = set_correlation_id(row.correlation_id or new_correlation_id())
    try:
        yield
    finally:
        reset_correlation_id(previous)
