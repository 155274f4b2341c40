"""The evaluation service's tables: its own projection of participants (and its outbox/inbox)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from shared.clock import UTCDateTime
from shared.tables import service_base

Base = service_base()


class Participant(Base):
    """A confirmed participant as ``registration.confirmed`` described them: who may join a team later."""

    __tablename__ = "participants"
    nip: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    opd: Mapped[str] = mapped_column(String(200), index=True)
    position: Mapped[str | None] = mapped_column(String(200))
    last_registration_id: Mapped[str] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
