"""The notification service's tables.

Projections of other services' events (never read from their databases): ``recipients`` (who someone is and
which language they read), ``registrations`` (who is registered for which session, in which state, checked
in or not) and ``sessions`` (a session as its last event described it). Its own records: ``deliveries`` (the
mail work queue, one row per cause, recipient and channel), ``delivery_attempts`` (every try, kept),
``announcements`` (organisers' messages, themselves a work queue for the fan-out), ``opt_outs`` and
``flood_counters`` (messages from public causes per address and hour).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, PrimaryKeyConstraint, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.clock import UTCDateTime
from shared.db import new_id
from shared.tables import service_base

Base = service_base()

#: Every state a delivery may be in. ``queued`` waits (also between retries), ``sending`` is claimed by a
#: sender that is trying it now, ``held`` was stopped by the hourly cap on public causes; the rest are final.
DELIVERY_STATES = ("queued", "sending", "sent", "failed", "bounced", "cancelled", "held")
#: The states in which the mail loop still has work to do with a delivery.
UNFINISHED_STATES = ("queued", "sending")


class Recipient(Base):
    """Someone the suite writes to, as the events told us (never read from another service's database)."""

    __tablename__ = "recipients"
    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20))
    opd: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(5), default="id")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RegistrationView(Base):
    """A registration as the registration events told it: the audience of session mail and announcements.

    ``event_time`` is the time of the event that wrote the row: an older event arriving late never
    overwrites a newer state (events may arrive in any order)."""

    __tablename__ = "registrations"
    __table_args__ = (Index("ix_registrations_session_status", "session_id", "status"),)
    registration_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64))
    programme_id: Mapped[str | None] = mapped_column(String(64), index=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str] = mapped_column(String(200))
    opd: Mapped[str | None] = mapped_column(String(200), index=True)
    language: Mapped[str] = mapped_column(String(5), default="id")
    status: Mapped[str] = mapped_column(String(20))
    checked_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)


class SessionView(Base):
    """A lab session as its last event described it (title, time, place) for mail and placeholders."""

    __tablename__ = "sessions"
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    programme_id: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300))
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    location: Mapped[str | None] = mapped_column(String(300))
    online_url: Mapped[str | None] = mapped_column(String(500))
    state: Mapped[str] = mapped_column(String(20), default="published")
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)


class Delivery(Base):
    """One message to one recipient on one channel, and where it stands (see :data:`DELIVERY_STATES`).

    A delivery is itself a work-queue row: the event handler (or the announcement fan-out) writes it in its
    transaction, the sender sends it later, so "was it sent?" always has an answer and a crash never loses a
    message. The unique ``(caused_by, recipient, channel)`` makes a second write for the same cause — a
    redelivered event, a second fan-out worker, a double click — a no-op.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("caused_by", "recipient", "channel", name="uq_delivery_cause"),
        Index("ix_deliveries_announcement_status", "announcement_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    channel: Mapped[str] = mapped_column(String(20), default="email")
    recipient: Mapped[str] = mapped_column(String(254), index=True)
    recipient_name: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(5), default="id")
    template: Mapped[str] = mapped_column(String(80))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, comment="the plain-text part")
    html_body: Mapped[str | None] = mapped_column(Text, comment="the HTML part")
    ics: Mapped[str | None] = mapped_column(Text, comment="a calendar entry to attach")
    ticket_code: Mapped[str | None] = mapped_column(String(100), comment="shown as an inline QR code")
    caused_by: Mapped[str] = mapped_column(String(64), comment="the event id or announcement id that asked for it")
    announcement_id: Mapped[str | None] = mapped_column(String(36))
    public_cause: Mapped[bool] = mapped_column(default=False, comment="caused by what a stranger may type")
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, comment="naive UTC")
    claim_token: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeliveryAttempt(Base):
    """One try of a delivery, kept for good: when, what came of it, and the error."""

    __tablename__ = "delivery_attempts"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), index=True)
    outcome: Mapped[str] = mapped_column(String(20), comment="sent, retry, wait, failed, cancelled")
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Announcement(Base):
    """An organiser's message to an audience: a work-queue row until it is expanded into deliveries.

    ``scheduled`` until ``send_at`` (now, for one sent at once); then a fan-out worker claims it and writes
    its deliveries (``expanded``); ``cancelled`` only before that."""

    __tablename__ = "announcements"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    channels: Mapped[str] = mapped_column(String(200), comment="JSON list")
    audience: Mapped[str] = mapped_column(Text, comment="JSON object")
    status: Mapped[str] = mapped_column(String(20), default="scheduled", index=True)
    send_at: Mapped[datetime] = mapped_column(DateTime, comment="naive UTC")
    created_by: Mapped[str] = mapped_column(String(254))
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    opted_out: Mapped[int] = mapped_column(Integer, default=0, comment="audience members who opted out")
    claim_token: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expanded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OptOut(Base):
    """A recipient who wants no more announcements on a channel (their own registrations' mail still goes)."""

    __tablename__ = "opt_outs"
    __table_args__ = (PrimaryKeyConstraint("email", "channel", name="pk_opt_outs"),)
    email: Mapped[str] = mapped_column(String(254))
    channel: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FloodCounter(Base):
    """How many messages from public causes an address was given in one clock hour (one atomic upsert each)."""

    __tablename__ = "flood_counters"
    __table_args__ = (PrimaryKeyConstraint("email", "hour", name="pk_flood_counters"),)
    email: Mapped[str] = mapped_column(String(254))
    hour: Mapped[datetime] = mapped_column(DateTime, comment="the hour's start, naive UTC")
    count: Mapped[int] = mapped_column(Integer, default=0)
