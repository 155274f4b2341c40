"""The notification service's tables: recipients (a projection of events), deliveries (the mail outbox)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.clock import UTCDateTime
from shared.db import new_id
from shared.tables import service_base

Base = service_base()


class Recipient(Base):
    """Someone the suite writes to, as the events told us (never read from another service's database)."""

    __tablename__ = "recipients"
    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(20))
    opd: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(5), default="id")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Delivery(Base):
    """One message to one recipient, and where it stands: pending → sent, or failed after retries.

    A delivery is itself an outbox row: the event handler writes it in its transaction, the mail sender
    sends it later, so "was it sent?" always has an answer and a crash never loses or doubles a mail.
    """

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("caused_by", "template", "recipient", name="uq_delivery_cause"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    channel: Mapped[str] = mapped_column(String(20), default="email")
    recipient: Mapped[str] = mapped_column(String(254), index=True)
    template: Mapped[str] = mapped_column(String(80))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    caused_by: Mapped[str] = mapped_column(String(64), comment="the event id that asked for it")
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, comment="naive UTC")
    claim_token: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
