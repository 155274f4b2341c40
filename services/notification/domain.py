"""Notification's domain operations: keep the recipient projection, queue messages, send them.

Sending is split in two so that no mail is lost or doubled:

* An event handler calls :func:`notify_registration`, which upserts the recipient and writes a
  ``Delivery`` row (pending, with its rendered text) in the handler's transaction — together with the inbox
  row. A redelivered event finds the inbox entry and writes nothing; the unique ``(caused_by, template,
  recipient)`` constraint guards the same even if two workers race.
* :func:`send_due_mail` (the worker's mail loop) claims due deliveries, oldest due first, with a lease
  (:func:`shared.db.claim_due_rows`), and sends them over one connection. Before each mail it renews that
  row's lease and skips the row if another worker has taken it over. A mail that cannot be composed or that
  the server refuses costs its own delivery one attempt; it fails after ``MAX_SEND_ATTEMPTS``. A connection
  that cannot be opened or breaks costs no attempt: the unsent deliveries wait, backing off, and fail only
  once older than ``MAX_DELIVERY_AGE``. Each outcome is recorded with its ``notification.delivered`` or
  ``notification.failed`` event (under the delivery's correlation id) in one transaction.
  The one unavoidable window — the server accepted a mail but the outcome was not committed (the process
  died, the database failed) — resends once the lease runs out; the ``Message-ID`` comes from the delivery
  id, so mail clients recognise the copy.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import select, update

from services.notification.mail import MailTransport, Send
from services.notification.tables import Delivery, Recipient
from shared.clock import PROGRAMME_TIMEZONE, utcnow
from shared.db import UnitOfWork, claim_due_rows, upsert
from shared.events import Event
from shared.observability import new_correlation_id, reset_correlation_id, set_correlation_id
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

SEND_LEASE = timedelta(minutes=2)
MAX_SEND_ATTEMPTS = 6  # mails the server refused (or that could not be composed) before a delivery fails
MAX_DELIVERY_AGE = timedelta(hours=48)  # a delivery still not out after this fails at its next failure
OUTAGE_BACKOFF_MIN = timedelta(seconds=30)
OUTAGE_BACKOFF_MAX = timedelta(minutes=10)

#: The server refused this one mail and the session goes on; anything else smtplib raises is an OSError
#: about the connection (refused, timed out, dropped, TLS failed).
SMTP_REFUSALS = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    smtplib.SMTPDataError,
    smtplib.SMTPNotSupportedError,
)
SMTP_CLOSING = 421  # "service not available, closing transmission channel": smtplib raises it as a refusal

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates" / "notification" / "mail"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)

SUBJECTS = {
    "registration_confirmed": "Pendaftaran dikonfirmasi · Registration confirmed: {session_title}",
    "registration_waitlisted": "Daftar tunggu · Waiting list: {session_title}",
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


def notify_registration(uow: UnitOfWork, event: Event) -> Delivery:
    """A registration was confirmed or waitlisted: tell the participant."""
    data = event.data
    recipient = remember_recipient(uow, data)
    context = {
        "name": data["name"],
        "opd": data["opd"],
        "session_title": data["session_title"],
        "starts_at": data["session_starts_at"].astimezone(PROGRAMME_TIMEZONE).strftime("%d-%m-%Y %H:%M"),
        "location": data["session_location"],
    }
    return queue_mail(uow, recipient, "registration_" + data["status"], context, event)


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


def send_due_mail(runtime: ServiceRuntime, transport: MailTransport, batch_size: int = 20) -> int:
    """Send the deliveries that are due, oldest first, over one connection; returns how many were claimed."""
    c = Delivery.__table__.c
    token, rows = claim_due_rows(
        runtime.engine,
        Delivery.__table__,
        (c.status == "pending", c.next_attempt_at <= utcnow()),
        batch_size,
        SEND_LEASE,
        order_by=(c.next_attempt_at,),
    )
    if not rows:
        return 0
    connection = ExitStack()
    try:
        send = connection.enter_context(transport.connection())
    except Exception as exc:  # no connection, whatever the reason: no mail can go
        _wait_for_mail_server(runtime, token, rows, exc)
    else:
        with connection:
            _send_batch(runtime, send, token, rows)
    return len(rows)


def _send_batch(runtime: ServiceRuntime, send: Send, token: str, rows: list) -> None:
    """Send each row on its own; when the connection fails, it and the rest of the batch wait."""
    for index, row in enumerate(rows):
        if not _renew_claim(runtime, token, row):
            log.warning("delivery %s skipped: its lease ran out and another worker has claimed it", row.id)
            continue
        try:
            send(compose(row, runtime.settings.mail_from))
        except Exception as exc:
            if not _connection_failed(exc):
                _charge_attempt(runtime, token, row, exc)
                continue
            if isinstance(exc, SMTP_REFUSALS):  # 421: the server is closing down, no mail's fault
                _wait_for_mail_server(runtime, token, rows[index:], exc)
            else:  # the connection broke while this mail was in flight: it may be the cause, so it pays
                _charge_attempt(runtime, token, row, exc)
                _wait_for_mail_server(runtime, token, rows[index + 1 :], exc)
            return
        # outside the try: a database error here leaves the row leased until the lease ends, when it is sent
        # again (the one unavoidable window, see the module docstring)
        _record_outcome(runtime, token, row, "sent", row.attempts + 1)


def _renew_claim(runtime: ServiceRuntime, token: str, row) -> bool:
    """Extend this worker's lease on ``row`` before sending it; False if the row is no longer ours."""
    c = Delivery.__table__.c
    with runtime.engine.begin() as connection:
        renewed = connection.execute(
            update(Delivery.__table__)
            .where(c.id == row.id, c.claim_token == token, c.status == "pending")
            .values(claimed_until=utcnow() + SEND_LEASE)
        )
    return renewed.rowcount == 1


def _connection_failed(exc: Exception) -> bool:
    """Whether the connection failed (no mail can go on it) rather than the server refusing this one mail."""
    if isinstance(exc, SMTP_REFUSALS):
        return SMTP_CLOSING in _reply_codes(exc)
    return isinstance(exc, OSError)  # every smtplib error is an OSError too


def _reply_codes(exc: Exception) -> set[int]:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return {code for code, _ in exc.recipients.values()}
    return {getattr(exc, "smtp_code", 0)}


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _too_old(row) -> bool:
    return datetime.now(UTC) - row.created_at > MAX_DELIVERY_AGE


def _charge_attempt(runtime: ServiceRuntime, token: str, row, exc: Exception) -> None:
    """This mail could not be composed or was refused: one attempt used; retry later or give up."""
    attempts = row.attempts + 1
    log.warning("delivery %s failed (attempt %d of %d): %s", row.id, attempts, MAX_SEND_ATTEMPTS, _describe(exc))
    if attempts >= MAX_SEND_ATTEMPTS or _too_old(row):
        _record_outcome(runtime, token, row, "failed", attempts, _describe(exc))
    else:
        retry_in = timedelta(seconds=min(5 * 3**attempts, 3600))
        _release(runtime, token, row, attempts, _describe(exc), retry_in)


def _wait_for_mail_server(runtime: ServiceRuntime, token: str, rows: list, exc: Exception) -> None:
    """No usable connection: ``rows`` wait without losing an attempt, unless they are too old to wait on."""
    log.warning("mail server unavailable, %d deliveries wait: %s", len(rows), _describe(exc))
    for row in rows:
        if _too_old(row):
            _record_outcome(runtime, token, row, "failed", row.attempts, _describe(exc))
        else:
            _release(runtime, token, row, row.attempts, _describe(exc), _outage_backoff(row))


def _outage_backoff(row) -> timedelta:
    """As long as the delivery has waited so far (so retries double), within 30 s to 10 min."""
    waited = datetime.now(UTC) - row.created_at
    return min(max(waited, OUTAGE_BACKOFF_MIN), OUTAGE_BACKOFF_MAX)


def _release(runtime: ServiceRuntime, token: str, row, attempts: int, error: str, retry_in: timedelta) -> None:
    """Give the row back to the queue, due again after ``retry_in``."""
    c = Delivery.__table__.c
    with runtime.engine.begin() as connection:
        connection.execute(
            update(Delivery.__table__)
            .where(c.id == row.id, c.claim_token == token)
            .values(
                attempts=attempts,
                last_error=error,
                claim_token=None,
                claimed_until=None,
                next_attempt_at=utcnow() + retry_in,
            )
        )


def _record_outcome(
    runtime: ServiceRuntime, token: str, row, status: str, attempts: int, error: str | None = None
) -> None:
    """Mark the delivery sent or failed and publish the matching event, in one transaction."""
    with _correlation_of(row), runtime.unit_of_work() as uow:
        changed = uow.session.execute(
            update(Delivery)
            .where(Delivery.id == row.id, Delivery.claim_token == token)
            .values(
                status=status,
                attempts=attempts,
                last_error=error,
                claimed_until=None,
                sent_at=datetime.now(UTC) if status == "sent" else None,
            )
        ).rowcount
        if changed:
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
    token = set_correlation_id(row.correlation_id or new_correlation_id())
    try:
        yield
    finally:
        reset_correlation_id(token)
