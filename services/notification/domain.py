"""Notification's domain operations: keep the recipient projection, queue mail, send due mail.

Sending is split in two so that no mail is lost or doubled:

* An event handler calls :func:`notify_registration`, which upserts the recipient and writes a
  ``Delivery`` row (pending, with its rendered text) in the handler's transaction — together with the inbox
  row. A redelivered event finds the inbox entry and writes nothing; the unique ``(caused_by, template,
  recipient)`` constraint guards the same even if two workers race.
* :func:`send_due_mail` (the worker's mail loop) claims due deliveries, oldest due first, from the
  deliveries work queue (:class:`shared.workqueue.WorkQueue`: leases, claim tokens, ``SKIP LOCKED``) and
  sends them over one connection. Before each mail it renews that row's lease and skips the row if another
  worker has taken it over (a batch can outlast the lease on a slow server). After a failed send it asks
  :func:`services.notification.rules.after_failed_send` what to do — retry, wait for the server, or fail —
  and records that. Each final outcome is recorded with its ``notification.delivered`` or
  ``notification.failed`` event (under the delivery's correlation id) in one transaction.
  The one unavoidable window — the server accepted a mail but the outcome was not committed (the process
  died, the database failed) — resends once the lease runs out; the ``Message-ID`` comes from the delivery
  id, so mail clients recognise the copy.

The domain operations that take a ``uow`` add to it and never commit; :func:`send_due_mail` needs one
transaction per outcome, so it takes the runtime and commits each itself (the rule in ``UnitOfWork``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import Engine, select

from services.notification.mail import MailTransport, Send, classify_send_failure
from services.notification.rules import (
    MAX_SEND_ATTEMPTS,
    Fail,
    RetryAt,
    SendFailure,
    WaitForServer,
    after_failed_send,
)
from services.notification.tables import Delivery, Recipient
from shared.clock import utcnow
from shared.db import UnitOfWork, upsert
from shared.events import Event
from shared.observability import new_correlation_id, reset_correlation_id, set_correlation_id
from shared.runtime import ServiceRuntime
from shared.workqueue import WorkQueue

log = logging.getLogger(__name__)

SEND_LEASE = timedelta(minutes=2)

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates" / "notification" / "mail"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)

SUBJECTS = {
    "registration_confirmed": "Pendaftaran dikonfirmasi · Registration confirmed: {session_title}",
    "registration_waitlisted": "Daftar tunggu · Waiting list: {session_title}",
    "registration_promoted": "Kursi untuk Anda · A seat for you: {session_title}",
    "registration_cancelled": "Pendaftaran dibatalkan · Registration cancelled: {session_title}",
    "results_published": "Hasil {round_name} · Results: {proposal_title}",
}

#: Which mail tells a participant about a registration event, by the event's type and the status it reports.
#: Any other combination is a producer's contradiction: the handler fails (KeyError) and the event ends in
#: the dead-letter queue rather than sending a wrong mail.
REGISTRATION_MAILS = {
    ("registration.confirmed", "confirmed"): "registration_confirmed",
    ("registration.waitlisted", "waitlisted"): "registration_waitlisted",
    ("registration.promoted", "confirmed"): "registration_promoted",
    ("registration.cancelled", "cancelled"): "registration_cancelled",
}


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
            "language": data.get("language") or "id",
            "updated_at": datetime.now(UTC),
        },
        key=("email",),
    )
    return email


def queue_mail(uow: UnitOfWork, recipient: str, template: str, context: dict[str, Any], caused_by: Event) -> Delivery:
    """Write a pending delivery with its rendered subject and body; the mail loop sends it."""
    delivery = Delivery(
        channel="email",
        recipient=recipient,
        template=template,
        subject=SUBJECTS[template].format(**context),
        body=_templates.get_template(f"{template}.txt").render(**context),
        caused_by=caused_by.id,
        correlation_id=caused_by.correlationid,
        status="pending",
        attempts=0,
        next_attempt_at=utcnow(),
        created_at=datetime.now(UTC),
    )
    uow.session.add(delivery)
    return delivery


def notify_registration(uow: UnitOfWork, event: Event, timezone: tzinfo) -> Delivery:
    """A registration was confirmed, waitlisted, promoted or cancelled: tell the participant (times shown in
    ``timezone``, with its abbreviation, e.g. WITA)."""
    data = event.data
    recipient = remember_recipient(uow, data)
    context = {
        "name": data["name"],
        "opd": data["opd"],
        "session_title": data["session_title"],
        "starts_at": data["session_starts_at"].astimezone(timezone).strftime("%d-%m-%Y %H:%M %Z"),
        "location": data["session_location"],
        "position": data.get("waitlist_position"),
    }
    return queue_mail(uow, recipient, REGISTRATION_MAILS[event.type, data["status"]], context, event)


def notify_result(uow: UnitOfWork, event: Event, timezone: tzinfo) -> Delivery:
    """A round's results were published: tell the team its rank, whether it advanced and why not, and until
    when it may object (times shown in ``timezone``)."""
    data = event.data
    deadline = data.get("objection_deadline")
    context = {
        **{key: data.get(key) for key in ("team_name", "opd", "round_name", "proposal_title", "rank", "reason")},
        "ranked_proposals": data["ranked_proposals"],
        "advanced": data.get("advanced"),
        "final": data["final"],
        "objection_deadline": deadline.astimezone(timezone).strftime("%d-%m-%Y %H:%M %Z") if deadline else None,
    }
    return queue_mail(uow, data["team_email"].lower(), "results_published", context, event)


def list_deliveries(uow: UnitOfWork, email: str | None = None, limit: int = 100, offset: int = 0):
    query = select(Delivery).order_by(Delivery.created_at.desc(), Delivery.id).limit(limit).offset(offset)
    if email:
        query = query.where(Delivery.recipient == email.strip().lower())
    return list(uow.session.scalars(query))


def compose(delivery, mail_from: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = delivery.recipient
    message["Subject"] = delivery.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = f"<{delivery.id}@labinov.local>"  # the same on every resend of this delivery
    message["X-Labinov-Delivery"] = delivery.id
    if delivery.correlation_id:
        message["X-Request-ID"] = delivery.correlation_id
    message.set_content(delivery.body)
    return message


def delivery_queue(engine: Engine) -> WorkQueue:
    """The deliveries as a work queue: pending mail, due from ``next_attempt_at``, the longest due first."""
    c = Delivery.__table__.c
    return WorkQueue(
        engine,
        Delivery.__table__,
        pending=(c.status == "pending",),
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
    connection = ExitStack()
    try:
        send = connection.enter_context(transport.connection())
    except Exception as exc:  # no connection, whatever the reason: no mail can go
        _after_failure(runtime, queue, token, rows, SendFailure.SERVER_UNAVAILABLE, exc)
    else:
        with connection:
            _send_batch(runtime, queue, send, token, rows)
    return len(rows)


def _send_batch(runtime: ServiceRuntime, queue: WorkQueue, send: Send, token: str, rows: Sequence) -> None:
    """Send each row on its own; once the connection is lost, the rest of the batch waits for the server."""
    for index, row in enumerate(rows):
        if not queue.renew(token, row.id):
            log.warning("delivery %s skipped: its lease ran out and another worker has claimed it", row.id)
            continue
        try:
            send(compose(row, runtime.settings.mail_from))
        except Exception as exc:
            failure = classify_send_failure(exc)
            _after_failure(runtime, queue, token, [row], failure, exc)
            if failure.connection_lost:
                _after_failure(runtime, queue, token, rows[index + 1 :], SendFailure.SERVER_UNAVAILABLE, exc)
                return
            continue
        # outside the try: a database error here leaves the row leased until the lease ends, when it is sent
        # again (the one unavoidable window, see the module docstring)
        _record_outcome(runtime, queue, token, row, "sent", row.attempts + 1)


def _after_failure(
    runtime: ServiceRuntime, queue: WorkQueue, token: str, rows: Sequence, failure: SendFailure, exc: Exception
) -> None:
    """Ask the rules what becomes of each of ``rows`` after ``failure``, and write it."""
    if not rows:
        return
    error = f"{type(exc).__name__}: {exc}"[:2000]
    if failure is SendFailure.SERVER_UNAVAILABLE:
        log.warning("mail server unavailable, %d deliveries wait: %s", len(rows), error)
    now = datetime.now(UTC)
    for row in rows:
        match after_failed_send(failure, attempts=row.attempts, created_at=row.created_at, now=now):
            case RetryAt(at=at, attempts=attempts):
                log.warning("delivery %s failed (attempt %d of %d): %s", row.id, attempts, MAX_SEND_ATTEMPTS, error)
                queue.postpone(token, row.id, at, attempts=attempts, last_error=error)
            case WaitForServer(at=at):
                queue.postpone(token, row.id, at, last_error=error)
            case Fail(reason=reason, attempts=attempts):
                log.warning("delivery %s failed for good (%s, %d attempts): %s", row.id, reason.value, attempts, error)
                _record_outcome(runtime, queue, token, row, "failed", attempts, error)


def _record_outcome(
    runtime: ServiceRuntime, queue: WorkQueue, token: str, row, status: str, attempts: int, error: str | None = None
) -> None:
    """Mark the delivery sent or failed and publish the matching event, in one transaction."""
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
