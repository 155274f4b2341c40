"""The evaluation service's tables (and its outbox/inbox)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from shared.messaging.tables import define_messaging_tables


class Base(DeclarativeBase):
    pass


outbox, inbox = define_messaging_tables(Base.metadata)
