"""The evaluation service's tables: its projections of registrations and accounts (from registration's
events), and what it owns — proposals, rounds, assignments, conflicts, evaluations, objections."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Float, ForeignKey, Integer, String, Text, UniqueConstraint
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


class RegistrationView(Base):
    """A registration as registration's events describe it (keyed by its id, the subject of a participant
    token): whether its token may write proposals (``confirmed``) or no longer (``cancelled``, for good)."""

    __tablename__ = "registrations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    programme_id: Mapped[str | None] = mapped_column(String(36), index=True)
    session_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    nip: Mapped[str] = mapped_column(String(18))
    email: Mapped[str] = mapped_column(String(254))
    opd: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(5))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Account(Base):
    """An organiser or evaluator account as ``account.created``/``account.changed`` describe it."""

    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20), index=True)
    opd: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Proposal(Base):
    """An OPD team's innovation proposal (the national form); ``draft`` until submitted, then frozen."""

    __tablename__ = "proposals"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    registration_id: Mapped[str] = mapped_column(String(36), index=True)
    programme_id: Mapped[str | None] = mapped_column(String(36), index=True)
    opd: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(300))
    category: Mapped[str] = mapped_column(String(200))
    started_on: Mapped[date | None] = mapped_column(Date)
    members: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    sections: Mapped[dict[str, str]] = mapped_column(JSON)
    links: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Round(Base):
    """One step of a programme's selection. Its row is the lock every change to its assignments and
    evaluations takes (see ``domain``)."""

    __tablename__ = "rounds"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    programme_id: Mapped[str | None] = mapped_column(String(36), index=True)
    sequence: Mapped[int] = mapped_column(Integer, comment="its place among the programme's rounds, from 1")
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    criteria: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    evaluators_per_proposal: Mapped[int] = mapped_column(Integer)
    blind: Mapped[bool] = mapped_column(Boolean)
    advancement: Mapped[dict[str, Any]] = mapped_column(JSON)
    ranked_by: Mapped[str] = mapped_column(String(20))
    objection_days: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provisional_at: Mapped[datetime | None] = mapped_column(UTCDateTime, comment="first publication")
    objection_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    final_at: Mapped[datetime | None] = mapped_column(UTCDateTime, comment="publication of the final list")


class RoundEntry(Base):
    """A proposal taken into a round when it opened, and — once decided — whether it advanced, and why not."""

    __tablename__ = "round_entries"
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id"), primary_key=True)
    proposal_id: Mapped[str] = mapped_column(ForeignKey("proposals.id"), primary_key=True, index=True)
    rank: Mapped[int | None] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float)
    advanced: Mapped[bool | None] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("round_id", "proposal_id", "evaluator_id", name="uq_assignments_once"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id"), index=True)
    proposal_id: Mapped[str] = mapped_column(ForeignKey("proposals.id"))
    evaluator_id: Mapped[str] = mapped_column(String(36), index=True)
    assigned_by: Mapped[str] = mapped_column(String(36))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConflictOfInterest(Base):
    """An evaluator's declaration that they must not evaluate a proposal, with their reason."""

    __tablename__ = "conflicts"
    evaluator_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    proposal_id: Mapped[str] = mapped_column(ForeignKey("proposals.id"), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    declared_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Evaluation(Base):
    """One evaluator's scores for one assignment, revisable while the round is open."""

    __tablename__ = "evaluations"
    assignment_id: Mapped[str] = mapped_column(ForeignKey("assignments.id"), primary_key=True)
    scores: Mapped[dict[str, float]] = mapped_column(JSON)
    reasons: Mapped[dict[str, str]] = mapped_column(JSON)
    comment: Mapped[str | None] = mapped_column(Text)
    total: Mapped[float] = mapped_column(Float, comment="the weighted total over the counted criteria")
    revision: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Objection(Base):
    """A team's objection (sanggahan) to a round's provisional results, and the organisers' answer."""

    __tablename__ = "objections"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id"), index=True)
    proposal_id: Mapped[str] = mapped_column(ForeignKey("proposals.id"))
    text: Mapped[str] = mapped_column(Text)
    filed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(20), comment="open, upheld or rejected")
    answer: Mapped[str | None] = mapped_column(Text)
    answered_by: Mapped[str | None] = mapped_column(String(36))
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
