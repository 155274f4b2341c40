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

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
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
        # the sender's claim: the due rows of the unfinished ones in due order, without sorting the table
        Index(
            "ix_deliveries_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("status IN ('queued', 'sending')"),
            sqlite_where=text("status IN ('queued', 'sending')"),
        ),
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


# --- the other channels: SMS and WhatsApp through a gateway, the in-app inbox, outgoing webhooks ------------

#: States of an SMS or WhatsApp message. As a delivery's, plus ``delivered``: the gateway's status callback
#: said the phone has it (``sent`` only says the gateway accepted it); ``bounced``: the callback said the
#: message the gateway had accepted did not arrive.
GATEWAY_STATES = ("queued", "sending", "sent", "delivered", "bounced", "failed", "cancelled")
GATEWAY_CHANNELS = ("sms", "whatsapp")


class GatewayDelivery(Base):
    """One SMS or WhatsApp message to one recipient: the gateway work queue (``services/notification/gateway.py``).

    Its own table rather than rows of ``deliveries``, so that the mail sender never claims one; the same
    rule holds: one row per ``(caused_by, recipient, channel)`` — the recipient is the person's e-mail
    address, their identity in this service (opt-outs are kept by it), and ``phone`` where it goes. Attempts
    are kept in ``delivery_attempts`` like a mail's."""

    __tablename__ = "gateway_deliveries"
    __table_args__ = (
        UniqueConstraint("caused_by", "recipient", "channel", name="uq_gateway_delivery_cause"),
        Index("ix_gateway_deliveries_announcement_status", "announcement_id", "status"),
        Index("ix_gateway_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    channel: Mapped[str] = mapped_column(String(20))
    recipient: Mapped[str] = mapped_column(String(254), index=True)
    phone: Mapped[str] = mapped_column(String(20), comment="E.164")
    template: Mapped[str] = mapped_column(String(80))
    text: Mapped[str] = mapped_column(Text)
    caused_by: Mapped[str] = mapped_column(String(64))
    announcement_id: Mapped[str | None] = mapped_column(String(36))
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, comment="naive UTC")
    claim_token: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    gateway_id: Mapped[str | None] = mapped_column(String(200), comment="the gateway's own id, if it gave one")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChannelRateBucket(Base):
    """The token bucket of one gateway channel, shared by every worker process (``channel_limits.py``)."""

    __tablename__ = "channel_rate_buckets"
    channel: Mapped[str] = mapped_column(String(20), primary_key=True)
    tokens: Mapped[float] = mapped_column()
    refilled_at: Mapped[datetime] = mapped_column(DateTime, comment="naive UTC")


class InboxMessage(Base):
    """A message in a participant's in-app inbox: a copy of what their registration was told, by any channel.

    Keyed by registration, never by address: anyone may register with anyone's address, so an inbox shows only
    what was caused for the registration whose token opens it (its own events, its session's changes, the
    announcements its audience got). One per ``(caused_by, registration_id)``."""

    __tablename__ = "inbox_messages"
    __table_args__ = (
        UniqueConstraint("caused_by", "registration_id", name="uq_inbox_message_cause"),
        Index("ix_inbox_messages_registration_created", "registration_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    registration_id: Mapped[str] = mapped_column(String(64))
    caused_by: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(80))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Webhook(Base):
    """An organiser's endpoint for chosen event types, signed per Standard Webhooks (``webhooks.py``).

    ``secret`` is the ``whsec_…`` key, kept to sign (shown once, at creation). ``consecutive_failures`` and
    ``failing_since`` count the failed attempts since the last success; past the rule's bound the endpoint is
    switched off (``active`` false, with ``disabled_reason``)."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[str] = mapped_column(Text, comment="JSON list")
    secret: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


#: States of a webhook delivery: as a mail's, without ``held`` or ``bounced``.
WEBHOOK_DELIVERY_STATES = ("queued", "sending", "sent", "failed", "cancelled")


class WebhookDelivery(Base):
    """One event for one webhook: the webhooks work queue. Its id is the ``webhook-id`` header, the same on
    every retry, so a receiver recognises a repeat. One per ``(event_id, webhook_id)``; attempts are kept in
    ``delivery_attempts``."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "webhook_id", name="uq_webhook_delivery_event"),
        Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(36))
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(80))
    payload: Mapped[str] = mapped_column(Text, comment="the JSON body, exactly as signed")
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, comment="naive UTC")
    claim_token: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
