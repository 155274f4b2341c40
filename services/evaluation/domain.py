"""Evaluation's domain operations. For now: the participant projection fed by registration events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from services.evaluation.tables import Participant
from shared.db import UnitOfWork, upsert


def record_participant(uow: UnitOfWork, data: dict[str, Any]) -> None:
    """Create or refresh the participant a confirmed registration describes (keyed by NIP; the event handled
    last wins)."""
    upsert(
        uow.session,
        Participant.__table__,
        {
            "nip": data["nip"],
            "name": data["name"],
            "email": data["email"],
            "opd": data["opd"],
            "position": data.get("position"),
            "last_registration_id": data["registration_id"],
            "updated_at": datetime.now(UTC),
        },
        key=("nip",),
    )


def list_participants(uow: UnitOfWork, opd: str | None = None, limit: int = 100, offset: int = 0):
    query = select(Participant).order_by(Participant.opd, Participant.name).limit(limit).offset(offset)
    if opd:
        query = query.where(Participant.opd == opd)
    return list(uow.session.scalars(query))
