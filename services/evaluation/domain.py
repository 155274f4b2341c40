"""Evaluation's domain operations. For now: the participant projection fed by registration events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from services.evaluation.tables import Participant
from shared.db import UnitOfWork


def record_participant(uow: UnitOfWork, data: dict[str, Any]) -> Participant:
    """Create or refresh the participant a confirmed registration describes (keyed by NIP)."""
    participant = uow.session.get(Participant, data["nip"])
    if participant is None:
        participant = Participant(nip=data["nip"])
        uow.session.add(participant)
    participant.name = data["name"]
    participant.email = data["email"]
    participant.opd = data["opd"]
    participant.position = data.get("position")
    participant.last_registration_id = data["registration_id"]
    participant.updated_at = datetime.now(UTC)
    return participant


def list_participants(uow: UnitOfWork, opd: str | None = None, limit: int = 100, offset: int = 0):
    query = select(Participant).order_by(Participant.opd, Participant.name).limit(limit).offset(offset)
    if opd:
        query = query.where(Participant.opd == opd)
    return list(uow.session.scalars(query))
