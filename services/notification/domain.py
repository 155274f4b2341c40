"""Notification's domain operations: keep the projections, turn events into deliveries, send due mail.

Sending is split in two so that no mail is lost or doubled:

* An event handler calls one of the ``notify_*`` operations, which update the projections (recipients,
  registrations per session, sessions) and write one ``Delivery`` row per recipient (``queued``, with its
  rendered text and HTML, see :mod:`.messages`) in the handler's transaction — together with the inbox row.
  A redelivered event finds the inbox entry and writes nothing; the unique ``(caused_by, recipient,
  channel)`` makes a second write for the same cause a no-op (``INSERT … ON CONFLICT DO NOTHING``) even if
  two workers race. The service never asks another service who someone is: the events told it.
* The worker's mail loops send them (:mod:`services.notification.sending`: the deliveries work queue, leases,
  retries with backoff, every attempt and outcome recorded with its event).

**The hourly cap.** Registrations are public: anyone can type anyone's address. Mail caused by them is
counted per address and clock hour in ``flood_counters`` by one atomic insert-or-increment (two workers
cannot both take the last place); past ``LABINOV_MAIL_HOURLY_CAP`` the delivery is written ``held``
instead of ``queued``: never sent, listed for organisers.

The domain operations that take a ``uow`` add to it and never commit (the rule in ``UnitOfWork``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from sqlalchemy import bindparam, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.orm import Session

from services.notification import inbox, messages, rules, webhooks
from services.notification.messages import local_time, render
from services.notification.tables import (
    Delivery,
    DeliveryAttempt,
    FloodCounter,
    OptOut,
    Recipient,
    RegistrationView,
    SessionView,
)
from shared.clock import utcnow
from shared.db import UnitOfWork, insert_or_update, new_id, upsert
from shared.events import Event
from shared.messaging import wakeup
from shared.messaging.wakeup import DELIVERIES
from shared.runtime import ServiceRuntime
from shared.tokens import load_secret_key

log = logging.getLogger(__name__)

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
REGISTRATION_TYPES = frozenset(event_type for event_type, _status in REGISTRATION_MAILS)
#: Registrants told about a change to their session: those who hold a seat or wait for one.
SESSION_AUDIENCE = ("confirmed", "waitlisted")
#: Events older than any real one: a check-in heard before its registration writes a row that the
#: registration's own event then completes.
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


# --- projections ------------------------------------------------------------------------------------------


def remember_recipient(uow: UnitOfWork, data: dict[str, Any]) -> str:
    """Create or refresh the recipient an event describes, in one statement (two workers handling events
    about one person never collide; the event handled last wins). Returns the recipient's address."""
    values = _recipient_values(data)
    upsert(uow.session, Recipient.__table__, values, key=("email",))
    return values["email"]


def _recipient_values(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "email": data["email"].lower(),
        "name": data["name"],
        "phone": data.get("phone"),
        "opd": data.get("opd"),
        "language": messages.language_of(data.get("language")),
        "updated_at": datetime.now(UTC),
    }


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
    _newer_wins(uow.session, RegistrationView.__table__, _registration_values(event), key="registration_id")
    session_values = _session_values_of_registration(event)
    if session_values["ends_at"] is None:  # an event without the end keeps the end already known
        del session_values["ends_at"]
    _newer_wins(uow.session, SessionView.__table__, session_values, key="session_id")


def _registration_values(event: Event) -> dict[str, Any]:
    data = event.data
    return {
        "registration_id": data["registration_id"],
        "session_id": data["session_id"],
        "programme_id": data.get("programme_id"),
        "email": data["email"].lower(),
        "name": data["name"],
        "opd": data.get("opd"),
        "language": messages.language_of(data.get("language")),
        "status": data["status"],
        "event_time": event.time,
    }


def _session_values_of_registration(event: Event) -> dict[str, Any]:
    """The session as a registration event describes it (``ends_at`` None when the event does not say)."""
    data = event.data
    return {
        "session_id": data["session_id"],
        "programme_id": data.get("programme_id"),
        "title": data["session_title"],
        "starts_at": data["session_starts_at"],
        "ends_at": data.get("session_ends_at") or None,
        "location": data["session_location"],
        "state": "published",
        "event_time": event.time,
    }


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
        held = public_cause and hourly_cap is not None and not _within_hourly_cap(uow, message.recipient, hourly_cap)
        rows.append(
            _delivery_row(message, caused_by, correlation_id, now, due, public_cause, announcement_id, held=held)
        )
    statement = (
        insert_or_update(uow.session, deliveries)
        .on_conflict_do_nothing(index_elements=["caused_by", "recipient", "channel"])
        .returning(deliveries.c.id)
    )
    uow.notify_after_commit(DELIVERIES)  # the mail senders start on these as soon as the transaction commits
    # RETURNING: the rows written, counted exactly (an executemany's rowcount is not, on every driver), and
    # SQLAlchemy sends the batch as multi-row INSERTs ("insertmanyvalues") instead of one statement per row
    return len(uow.session.execute(statement, rows).all())


HELD_ERROR = "held back: over the hourly cap for this address"


def _delivery_row(
    message: Message,
    caused_by: str,
    correlation_id: str | None,
    now: datetime,
    due: datetime,
    public_cause: bool,
    announcement_id: str | None,
    held: bool = False,
) -> dict[str, Any]:
    """The ``deliveries`` row of one message, rendered (queued, or held by the hourly cap)."""
    rendered = render(message.kind, message.language, message.context)
    return {
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
        "status": "held" if held else "queued",
        "attempts": 0,
        "next_attempt_at": due,
        "last_error": HELD_ERROR if held else None,
        "created_at": now,
    }


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
    recipient = data["email"].lower()
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
    if uow.session.get_bind().dialect.name == "postgresql":
        return _write_registration_mail(uow, event, message, hourly_cap)
    remember_recipient(uow, data)
    remember_registration(uow, event)
    return queue_messages(uow, event.id, event.correlationid, [message], public_cause=True, hourly_cap=hourly_cap)


# --- a registration event in one statement (PostgreSQL) -------------------------------------------------------
#
# The consumer's hot path: a registration event updates three projections, counts the hourly cap, writes
# the delivery, copies it into the registration's in-app inbox, queues one delivery per subscribed webhook
# and rings the mail senders (and the webhook loops). Statement by statement that is eight round trips while
# the consumer thread waits; on PostgreSQL they are one statement: every write is a data-modifying CTE of one
# SELECT that reads back the new delivery's id and the counter. The parts touch different tables and none
# reads another's effect except through a CTE's RETURNING — the one way PostgreSQL lets a statement see a
# CTE's write: the inbox copy is an INSERT … SELECT from the delivery's RETURNING (so it is written exactly
# when the delivery is: a cause whose delivery already existed had its copy written with it), the final SELECT
# reads the counter's. The delivery's RETURNING rings the senders, the webhook insert's the webhook loops
# (pg_notify, sent at commit, and only for rows written). The webhook insert reads the subscriptions in SQL
# (services.notification.webhooks.deliveries_of_event): no lookup in Python, no cache to invalidate. What the
# rule says about the count (rules.within_hourly_cap) is still decided here, in Python: over the cap, the new
# delivery is turned ``held`` by one more UPDATE before the commit, so no sender ever sees it queued (its inbox
# copy stays, as on the plain path). SQLite (in-process: a statement costs microseconds) keeps the plain path,
# and the handler (channels.after_event) then writes the inbox copy and the webhook deliveries itself.

_RECIPIENT_COLUMNS = tuple(_recipient_values({"email": "", "name": ""}))
_REGISTRATION_COLUMNS = (
    "registration_id", "session_id", "programme_id", "email", "name", "opd", "language", "status", "event_time",
)  # fmt: skip
_SESSION_COLUMNS = ("session_id", "programme_id", "title", "starts_at", "ends_at", "location", "state", "event_time")
_DELIVERY_COLUMNS = (
    "id", "channel", "recipient", "recipient_name", "language", "template", "subject", "body", "html_body", "ics",
    "ticket_code", "caused_by", "announcement_id", "public_cause", "correlation_id", "status", "attempts",
    "next_attempt_at", "last_error", "created_at",
)  # fmt: skip


def _bound(table, prefix: str, columns: Sequence[str]) -> dict[str, Any]:
    """Named bind parameters for ``columns``, typed as the columns (the templates are compiled once)."""
    return {name: bindparam(f"{prefix}{name}", type_=table.c[name].type) for name in columns}


@functools.cache
def _registration_mail_statement(channel: str, webhook_channel: str, capped: bool):
    """The one statement of :func:`_write_registration_mail`, made once per channel and cap setting."""
    recipients, registrations, sessions = Recipient.__table__, RegistrationView.__table__, SessionView.__table__
    recipient = postgresql_insert(recipients).values(_bound(recipients, "r_", _RECIPIENT_COLUMNS))
    recipient = recipient.on_conflict_do_update(
        index_elements=["email"], set_={name: recipient.excluded[name] for name in _RECIPIENT_COLUMNS[1:]}
    )
    registration = postgresql_insert(registrations).values(_bound(registrations, "v_", _REGISTRATION_COLUMNS))
    registration = registration.on_conflict_do_update(
        index_elements=["registration_id"],
        set_={name: registration.excluded[name] for name in _REGISTRATION_COLUMNS[1:]},
        where=registrations.c.event_time <= registration.excluded.event_time,
    )
    session = postgresql_insert(sessions).values(_bound(sessions, "s_", _SESSION_COLUMNS))
    session_changes: dict[str, Any] = {name: session.excluded[name] for name in _SESSION_COLUMNS[1:]}
    session_changes["ends_at"] = func.coalesce(session.excluded.ends_at, sessions.c.ends_at)
    session = session.on_conflict_do_update(
        index_elements=["session_id"],
        set_=session_changes,
        where=sessions.c.event_time <= session.excluded.event_time,
    )
    d = deliveries.c
    delivery = postgresql_insert(deliveries).values(_bound(deliveries, "d_", _DELIVERY_COLUMNS))
    delivery = delivery.on_conflict_do_nothing(index_elements=["caused_by", "recipient", "channel"])
    written = delivery.returning(
        d.id, d.caused_by, d.template, d.subject, d.body, literal_column(wakeup.notify_statement(channel)).label("rung")
    ).cte("delivery_written")
    parts = [
        recipient.cte("recipient_kept"),
        registration.cte("registration_kept"),
        session.cte("session_kept"),
        written,
        inbox.copy_of_written_mail(written).cte("inbox_copied"),
        webhooks.deliveries_of_event(webhook_channel).cte("webhooks_queued"),
    ]
    returned: list[Any] = [select(written.c.id).scalar_subquery().label("delivery_id")]
    if capped:
        flood = FloodCounter.__table__
        counted = postgresql_insert(flood).values({**_bound(flood, "f_", ("email", "hour")), "count": 1})
        counted = counted.on_conflict_do_update(
            index_elements=["email", "hour"], set_={"count": flood.c["count"] + 1}
        ).returning(flood.c["count"])
        counter = counted.cte("counted")
        parts.insert(0, counter)
        returned.append(select(counter.c["count"]).scalar_subquery().label("count_this_hour"))
    return select(*returned).add_cte(*parts)


def _write_registration_mail(uow: UnitOfWork, event: Event, message: Message, hourly_cap: int | None) -> int:
    """The projections, the hourly cap, the delivery, its inbox copy and the webhook deliveries of one registration
    event in one statement (see above); 1 if the delivery is new, 0 if this cause had already written it."""
    row = _delivery_row(message, event.id, event.correlationid, datetime.now(UTC), utcnow(), True, None)
    values = {
        **{f"r_{name}": value for name, value in _recipient_values(event.data).items()},
        **{f"v_{name}": value for name, value in _registration_values(event).items()},
        **{f"s_{name}": value for name, value in _session_values_of_registration(event).items()},
        **{f"d_{name}": row[name] for name in _DELIVERY_COLUMNS},
        **inbox.copy_values(event.data["registration_id"]),
        **webhooks.delivery_values(event),
    }
    capped = hourly_cap is not None
    if capped:
        values.update(f_email=message.recipient, f_hour=rules.hour_of(utcnow()))
    service = uow.source.strip("/")
    statement = _registration_mail_statement(
        wakeup.channel(service, DELIVERIES), wakeup.channel(service, webhooks.WEBHOOKS), capped
    )
    written = uow.session.execute(statement, values).one()
    if written.delivery_id is None:  # the same cause already wrote this delivery (two workers raced on the event)
        return 0
    if capped and not rules.within_hourly_cap(written.count_this_hour, hourly_cap):
        uow.session.execute(
            update(deliveries).where(deliveries.c.id == row["id"]).values(status="held", last_error=HELD_ERROR)
        )
    return 1


def writes_other_channels_together(uow: UnitOfWork, event: Event) -> bool:
    """Whether :func:`notify_registration` wrote ``event``'s inbox copy and webhook deliveries itself (in its one
    statement, on PostgreSQL), so that the handler does not write them again."""
    return event.type in REGISTRATION_TYPES and uow.session.get_bind().dialect.name == "postgresql"


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


def notify_objection_answered(uow: UnitOfWork, event: Event, timezone: tzinfo) -> int:
    """The organisers answered a team's objection: tell the team whether it was upheld, and why (the filing
    time shown in ``timezone``)."""
    data = event.data
    context = {
        **{key: data.get(key) for key in ("team_name", "round_name", "proposal_title", "decision", "answer")},
        "filed_at": local_time(data.get("filed_at"), timezone),
    }
    recipient = data["team_email"].lower()
    message = Message("objection_answered", recipient, data["team_name"], data.get("language"), context)
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


def unsubscribe_links(runtime: ServiceRuntime) -> Callable[..., str]:
    """``link(email, channel="email")``: one-click opt-out links, with the key derived once (it comes from the
    service's secret, a file read: per member it was a tenth of a fan-out's time)."""
    key = unsubscribe_key(runtime)
    base = f"{runtime.settings.public_url}/notification/unsubscribe/"

    def link(email: str, channel: str = "email") -> str:
        return base + rules.unsubscribe_token(key, email, channel)

    return link


def unsubscribe_url(runtime: ServiceRuntime, email: str, channel: str = "email") -> str:
    """One recipient's opt-out link (for many, :func:`unsubscribe_links`)."""
    return unsubscribe_links(runtime)(email, channel)


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
