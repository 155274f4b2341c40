"""Notification's domain operations: keep the recipient projection, queue messages, send them.

Sending is split in two so that no mail is lost or doubled:

* An event handler calls :func:`notify_registration`, which upserts the recipient and writes a
  ``Delivery`` row (pending, with its rendered text) in the handler's transaction — together with the inbox
  row. A redelivered event finds the inbox entry and writes nothing; the unique ``(caused_by, template,
  recipient)`` constraint guards the same even if two workers race.
* :func:`send_due_mail` (the worker's mail loop) claims due deliveries with a lease
  (:func:`shared.db.claim_due_rows`: several workers never take the same row), sends each, and records the
  outcome with the ``notification.delivered``/``notification.failed`` event in one transaction. A failed
  send is retried with backoff until ``max_attempts``. The one unavoidable window — the process dies after
  the SMTP server accepted a mail but before the outcome is committed — resends after the lease; the mail
  keeps its ``Message-ID`` (the delivery id), so mail clients recognise the copy.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import select, update

from services.notification.mail import MailTransport
from services.notification.tables import Delivery, Recipient
from shared.clock import utcnow
from shared.db import UnitOfWork, claim_due_rows
from shared.events import Event
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

PROGRAMME_TIMEZONE = ZoneInfo("Asia/Makassar")
SEND_LEASE = timedelta(minutes=2)
MAX_SEND_ATTEMPTS = 6

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates" / "notification" / "mail"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)

SUBJECTS = {
    "registration_confirmed": "Pendaftaran dikonfirmasi · Registration confirmed: {session_title}",
    "registration_waitlisted": "Daftar tunggu · Waiting list: {session_title}",
}


def remember_recipient(uow: UnitOfWork, data: dict[str, Any]) -> Recipient:
    """Create or refresh the recipient an event describes (the newest event wins)."""
    recipient = uow.session.get(Recipient, data["email"].lower())
    if recipient is None:
        recipient = Recipient(email=data["email"].lower())
        uow.session.add(recipient)
    recipient.name = data["name"]
    recipient.phone = data.get("phone")
    recipient.opd = data.get("opd")
    recipient.language = data.get("language") or "id"
    recipient.updated_at = datetime.now(UTC)
    return recipient


def queue_mail(
    uow: UnitOfWork, recipient: Recipient, template: str, context: dict[str, Any], caused_by: Event
) -> Delivery:
    """Write a pending delivery with its rendered subject and body; the mail loop sends it."""
    delivery = Delivery(
        channel="email",
        recipient=recipient.email,
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
    query = select(Delivery).order_by(Delivery.created_at.desc()).limit(limit).offset(offset)
    if email:
        query = query.where(Delivery.recipient == email.strip().lower())
    return list(uow.session.scalars(query))


def compose(delivery, mail_from: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = delivery.recipient
    message["Subject"] = delivery.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(idstring=delivery.id, domain="labinov.local")
    message["X-Labinov-Delivery"] = delivery.id
    if delivery.correlation_id:
        message["X-Request-ID"] = delivery.correlation_id
    message.set_content(delivery.body)
    return message


def send_due_mail(runtime: ServiceRuntime, transport: MailTransport, batch_size: int = 20) -> int:
    """Send the deliveries that are due; returns how many were attempted."""
    table = Delivery.__table__
    c = table.c
    token, rows = claim_due_rows(
        runtime.engine, table, (c.status == "pending", c.next_attempt_at <= utcnow()), batch_size, SEND_LEASE
    )
    if not rows:
        return 0
    settled: set[str] = set()
    try:
        with transport.connection() as send:
            for row in rows:
                try:
                    send(compose(row, runtime.settings.mail_from))
                except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
                    _record_failure(runtime, token, row, _describe(exc))  # this message was refused
                else:
                    _record_outcome(runtime, token, row, "sent", None)
                settled.add(row.id)
    except Exception as exc:  # no connection, or it broke: every message not yet settled waits for a retry
        log.warning("mail server unavailable, %d deliveries wait: %s", len(rows) - len(settled), _describe(exc))
        for row in rows:
            if row.id not in settled:
                _record_failure(runtime, token, row, _describe(exc))
    return len(rows)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _record_failure(runtime: ServiceRuntime, token: str, row, error: str) -> None:
    attempts = row.attempts + 1
    if attempts >= MAX_SEND_ATTEMPTS:
        _record_outcome(runtime, token, row, "failed", error)
        return
    with runtime.engine.begin() as connection:
        connection.execute(
            update(Delivery.__table__)
            .where(Delivery.__table__.c.id == row.id, Delivery.__table__.c.claim_token == token)
            .values(
                attempts=attempts,
                last_error=error[:2000],
                claim_token=None,
                claimed_until=None,
                next_attempt_at=utcnow() + timedelta(seconds=min(5 * 3**attempts, 3600)),
            )
        )


def _record_outcome(runtime: ServiceRuntime, token: str, row, status: str, error: str | None) -> None:
    """Mark the delivery sent or failed and publish the matching event, in one transaction."""
    with runtime.unit_of_work() as uow:
        changed = uow.session.execute(
            update(Delivery)
            .where(Delivery.id == row.id, Delivery.claim_token == token)
            .values(
                status=status,
                attempts=row.attempts + 1,
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
