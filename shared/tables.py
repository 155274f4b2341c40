"""The bookkeeping tables every service's database carries next to its own: outbox, inbox, idempotency keys.

Each service declares its tables on ``Base = service_base()``, whose metadata already holds these, so the
service's migrations and its runtime find them without the service repeating them. Their migrations are
written once too, in the ``bookkeeping`` branch (``shared/bookkeeping_migrations/``, see ``shared/migrations.py``).
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table, Text
from sqlalchemy.orm import DeclarativeBase

from shared.messaging.tables import define_messaging_tables


def service_base() -> type[DeclarativeBase]:
    """A new declarative base for one service's database, with the bookkeeping tables already on it."""

    class Base(DeclarativeBase):
        pass

    define_messaging_tables(Base.metadata)
    define_idempotency_table(Base.metadata)
    return Base


def define_idempotency_table(metadata: MetaData) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("scope", String(400), nullable=False, comment="method, path and caller"),
        Column("key", String(200), nullable=False),
        Column("fingerprint", String(64), nullable=False, comment="sha256 of the request body"),
        Column("status", Integer, nullable=True, comment="the stored answer; NULL while in progress"),
        Column("content_type", String(100), nullable=True),
        Column("body", Text, nullable=True),
        Column("created_at", DateTime, nullable=False),
        PrimaryKeyConstraint("scope", "key", name="pk_idempotency_keys"),
        Index("ix_idempotency_keys_created_at", "created_at"),  # housekeeping purges by age
    )
