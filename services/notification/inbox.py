"""The in-app inbox: a participant reads, with their participant token, what the suite told their registration.

**What is in it.** ``inbox_messages``, one row per (cause, registration): a copy of the subject and plain text
of each message caused for that registration — its own events (confirmed, waitlisted, promoted, cancelled,
its team's proposal received, its result), its session's changes and cancellation, and every announcement
whose audience it was in (whatever the announcement's channels). The copy is written in the transaction that
wrote the message (the event handler's, the fan-out batch's), ``ON CONFLICT DO NOTHING``, so a redelivered
event or a resumed fan-out adds nothing twice.

**Why by registration and not by address.** Anyone may register with anyone's address and gets a token for
that registration. An inbox of "all mail to this address" would hand a stranger the owner's confirmations —
with their manage links, which carry their tokens. Keyed by registration, a token opens only what was said
about its own registration (and broadcast announcements its audience got).

**Who may read.** A participant token (role ``participant``, subject the registration id); its registration, as
the projection knows it, must not be cancelled (403). A registration this service has not heard of yet has an
empty inbox. Organisers get 403 from the API: it is the participant's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert

from services.notification.tables import Delivery, InboxMessage, RegistrationView
from shared.clock import UTCDateTime
from shared.db import UnitOfWork, insert_or_update, new_id
from shared.errors import DomainError, NotFound
from shared.events import Event
from shared.tokens import Principal

inbox_messages = InboxMessage.__table__
#: Registrants whose inbox hears of their session's change: those who hold or wait for a seat.
SESSION_AUDIENCE = ("confirmed", "waitlisted")


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"
    title = "Not yours"


def _write(uow: UnitOfWork, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    statement = insert_or_update(uow.session, inbox_messages).on_conflict_do_nothing(
        index_elements=["caused_by", "registration_id"]
    )
    return uow.session.execute(statement, rows).rowcount or 0


def _row(registration_id: str, caused_by: str, template: str, subject: str, body: str) -> dict[str, Any]:
    return {
        "id": new_id(),
        "registration_id": registration_id,
        "caused_by": caused_by,
        "template": template,
        "subject": subject[:300],
        "body": body,
        "created_at": datetime.now(UTC),
    }


def copy_of_written_mail(written: Any) -> Any:
    """PostgreSQL: the inbox copy of a registration's mail as an ``INSERT … SELECT`` from ``written``, the CTE
    of the mail's own ``INSERT … RETURNING`` (id, caused_by, template, subject, body) — a part of a registration
    event's one statement (:mod:`services.notification.domain`); its values are :func:`copy_values`. It copies
    exactly what that statement wrote, so the copy and the mail are written together or not at all."""
    c = written.c
    mail = select(
        bindparam("i_id", type_=inbox_messages.c.id.type),
        bindparam("i_registration_id", type_=inbox_messages.c.registration_id.type),
        c.caused_by,
        c.template,
        func.substr(c.subject, 1, 300),
        c.body,
        bindparam("i_created_at", type_=inbox_messages.c.created_at.type),
    )
    columns = ["id", "registration_id", "caused_by", "template", "subject", "body", "created_at"]
    statement = postgresql_insert(inbox_messages).from_select(columns, mail)
    return statement.on_conflict_do_nothing(index_elements=["caused_by", "registration_id"])


def copy_values(registration_id: str) -> dict[str, Any]:
    """The values of :func:`copy_of_written_mail` for the registration whose mail it copies."""
    return {"i_id": new_id(), "i_registration_id": registration_id, "i_created_at": datetime.now(UTC)}


def copy_event_messages(uow: UnitOfWork, event: Event) -> int:
    """Copy the messages ``event`` caused (just written by its handler, in this transaction) into the inboxes of
    the registrations they concern: the event's own ``registration_id`` (one ``INSERT … SELECT`` from its mail:
    the registration events are the hot path), or a session's registrants."""
    data = event.data
    d = Delivery.__table__.c
    if data.get("registration_id"):
        mail = (
            select(
                literal(new_id()),
                literal(data["registration_id"]),
                d.caused_by,
                d.template,
                func.substr(d.subject, 1, 300),
                d.body,
                literal(datetime.now(UTC), UTCDateTime()),
            )
            .where(d.caused_by == event.id, d.channel == "email")
            .limit(1)
        )
        columns = ["id", "registration_id", "caused_by", "template", "subject", "body", "created_at"]
        statement = insert_or_update(uow.session, inbox_messages).from_select(columns, mail)
        done = uow.session.execute(statement.on_conflict_do_nothing(index_elements=["caused_by", "registration_id"]))
        return done.rowcount or 0
    if not (event.type.startswith("session.") and data.get("session_id")):
        return 0
    mails = uow.session.execute(
        select(d.recipient, d.template, d.subject, d.body).where(d.caused_by == event.id, d.channel == "email")
    ).all()
    if not mails:
        return 0
    by_email = {mail.recipient: mail for mail in mails}
    registrants = uow.session.execute(
        select(RegistrationView.registration_id, RegistrationView.email).where(
            RegistrationView.session_id == data["session_id"],
            RegistrationView.status.in_(SESSION_AUDIENCE),
        )
    ).all()
    rows = [
        _row(r.registration_id, event.id, by_email[r.email].template, by_email[r.email].subject, by_email[r.email].body)
        for r in registrants
        if r.email in by_email
    ]
    return _write(uow, rows)


def copy_announcement(
    uow: UnitOfWork,
    announcement: Any,
    members: Sequence[Any],
    values_of: Callable[[Any], dict[str, str | None]],
    fill: Callable[[str, dict[str, str | None]], str],
) -> int:
    """The inbox copies of one fan-out batch: each member's registrations that are not cancelled (of the member's
    session, when the audience was a session's)."""
    if not members:
        return 0
    r = RegistrationView
    query = select(r.registration_id, r.email, r.session_id).where(
        r.email.in_([m.email for m in members]), r.status != "cancelled"
    )
    registrations: dict[str, list[tuple[str, str]]] = {}
    for registration_id, email, session_id in uow.session.execute(query):
        registrations.setdefault(email, []).append((registration_id, session_id))
    rows = []
    for member in members:
        values = values_of(member)
        subject, body = fill(announcement.subject, values), fill(announcement.body, values)
        for registration_id, session_id in registrations.get(member.email, []):
            if member.session_id is None or session_id == member.session_id:
                rows.append(_row(registration_id, announcement.id, "announcement", subject, body))
    return _write(uow, rows)


# --- reading ----------------------------------------------------------------------------------------------------


def registration_of(uow: UnitOfWork, principal: Principal) -> str:
    """The registration whose inbox ``principal`` may open: a participant's own, unless it is cancelled (403)."""
    if principal.role != "participant":
        raise Forbidden("The inbox is a participant's own: open it with the link from your confirmation.")
    registration = uow.session.get(RegistrationView, principal.account_id)
    if registration is not None and registration.status == "cancelled":
        raise Forbidden("This registration is cancelled; its inbox is closed.")
    return principal.account_id


def messages_of(uow: UnitOfWork, registration_id: str, limit: int = 50, offset: int = 0) -> list[InboxMessage]:
    """The registration's messages, newest first."""
    query = (
        select(InboxMessage)
        .where(InboxMessage.registration_id == registration_id)
        .order_by(InboxMessage.created_at.desc(), InboxMessage.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(uow.session.scalars(query))


def unread_count(uow: UnitOfWork, registration_id: str) -> int:
    query = select(func.count()).where(
        inbox_messages.c.registration_id == registration_id, inbox_messages.c.read_at.is_(None)
    )
    return uow.session.execute(query).scalar_one()


def mark_read(uow: UnitOfWork, registration_id: str, message_id: str) -> InboxMessage:
    """Mark one of the registration's own messages read (again is fine); another's is 404, as one that is not."""
    message = uow.session.get(InboxMessage, message_id)
    if message is None or message.registration_id != registration_id:
        raise NotFound(f"No message {message_id} in this inbox.")
    c = inbox_messages.c
    uow.session.execute(
        update(inbox_messages).where(c.id == message_id, c.read_at.is_(None)).values(read_at=datetime.now(UTC))
    )
    uow.session.refresh(message)
    return message
