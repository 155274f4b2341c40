"""The outbox and inbox tables that every service's database carries next to its own tables."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from shared.clock import utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_OutboxId = BigInteger().with_variant(Integer(), "sqlite")


def define_messaging_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Add ``outbox`` and ``inbox`` to a service's metadata; returns them as ``(outbox, inbox)``.

    Times are naive UTC (``shared.clock.utcnow``) so that SQLite and PostgreSQL compare them alike.
    """
    outbox = Table(
        "outbox",
        metadata,
        Column("id", _OutboxId, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
        Column("event_type", String(120), nullable=False),
        Column("exchange", String(120), nullable=False),
        Column("routing_key", String(200), nullable=False),
        Column("payload", Text, nullable=False, comment="the message body, JSON"),
        Column("headers", Text, nullable=False, default="{}", comment="message headers, JSON"),
        Column("created_at", DateTime, nullable=False),
        Column("not_before", DateTime, nullable=False, comment="publish no earlier (delayed retries)"),
        Column("claim_token", String(64), nullable=True, comment="the relay batch that holds the row"),
        Column("claimed_until", DateTime, nullable=True),
        Column("publish_attempts", Integer, nullable=False, default=0),
        Column("last_error", Text, nullable=True),
        Column("sent_at", DateTime, nullable=True, comment="when the broker confirmed the message"),
        Index("ix_outbox_pending", "sent_at", "not_before", "id"),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(120), nullable=False),
        Column("event_id", String(64), nullable=False),
        Column("event_type", String(120), nullable=False),
        Column("handled_at", DateTime, nullable=False),
        PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
        Index("ix_inbox_handled_at", "handled_at"),  # housekeeping purges by age
    )
    return outbox, inbox


def outbox_row(
    envelope: Any,
    exchange: str,
    routing_key: str,
    headers: dict[str, Any],
    not_before: datetime | None,
) -> dict[str, Any]:
    """The column values of one outbox row carrying ``envelope`` — which, for a dead letter, may be anything."""
    now = utcnow()
    fields = envelope if isinstance(envelope, dict) else {}
    return {
        "event_id": _uuid_or_new(fields.get("id")),
        "event_type": str(fields.get("type") or "unparseable")[:120],
        "exchange": exchange,
        "routing_key": routing_key,
        "payload": json.dumps(envelope),
        "headers": json.dumps(headers),
        "created_at": now,
        "not_before": not_before or now,
        "publish_attempts": 0,
    }


def _uuid_or_new(value: Any) -> str:
    """The message's id if it is a UUID (so a dead letter keeps it), else a new one: never an unfit value."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(uuid.uuid4())
