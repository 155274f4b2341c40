"""The registration service's tables: accounts, programmes, lab sessions, registrations (and outbox/inbox).

The seat counters live on the rows that guard them (see ``domain``'s module docstring for the design):
``lab_sessions.confirmed_count`` / ``waitlisted_count`` / ``waitlist_sequence``, and one ``opd_seats`` row per
(session, OPD) when the session's programme sets a quota. They are only ever changed under the session row's
lock, so they always equal what a ``count(*)`` over ``registrations`` would say — the storm tests check it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.clock import UTCDateTime
from shared.db import new_id
from shared.tables import service_base

Base = service_base()


class Account(Base):
    """An organiser or evaluator who signs in; participants have no account."""

    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    opd: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Programme(Base):
    """A lab programme (e.g. "Laboratorium Inovasi Kaltara 2017"): its agencies and their seat quota.

    ``opds`` is the list of agency names taking part (registrants of the programme's sessions pick one);
    ``opd_quota`` the most seats one agency may hold in any one session of the programme (``None``: no limit).
    """

    __tablename__ = "programmes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    year: Mapped[int] = mapped_column(Integer)
    opds: Mapped[list[str]] = mapped_column(JSON)
    opd_quota: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LabSession(Base):
    """A lab session (sosialisasi, workshop, coaching clinic, expo) with a place, a time and a capacity.

    ``state`` is ``draft``, ``published`` or ``cancelled``. The registration window is
    ``[registration_opens_at, registration_closes_at)``; an open end means "from now" / "until the start".
    ``questions`` are the organiser's extra questions (``None`` or ``[]``: none), kept on this row so that the
    statement that locks it for a registration reads them too.
    """

    __tablename__ = "lab_sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    programme_id: Mapped[str | None] = mapped_column(ForeignKey("programmes.id"), index=True)
    stage: Mapped[str | None] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    location: Mapped[str] = mapped_column(String(300))
    online_url: Mapped[str | None] = mapped_column(String(500))
    capacity: Mapped[int] = mapped_column(Integer)
    waitlist: Mapped[bool] = mapped_column(Boolean, default=True)
    registration_opens_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    registration_closes_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(20), default="published")
    record: Mapped[bool] = mapped_column(Boolean, default=False)
    questions: Mapped[list | None] = mapped_column(
        JSON, comment="the organiser's extra questions (rules.Question); on this row so the lock reads them"
    )
    confirmed_count: Mapped[int] = mapped_column(Integer, default=0)
    waitlisted_count: Mapped[int] = mapped_column(Integer, default=0)
    waitlist_sequence: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    registrations: Mapped[list[Registration]] = relationship(back_populates="session")
    programme: Mapped[Programme | None] = relationship(lazy="raise")


class OpdSeats(Base):
    """How many confirmed seats one agency holds in one session (kept only when a quota applies)."""

    __tablename__ = "opd_seats"
    session_id: Mapped[str] = mapped_column(ForeignKey("lab_sessions.id"), primary_key=True)
    opd: Mapped[str] = mapped_column(String(200), primary_key=True)
    confirmed: Mapped[int] = mapped_column(Integer)


class Registration(Base):
    """One participant's registration for one session.

    ``job_title`` is the participant's position (jabatan); the API's ``position`` is the place on the waiting
    list, computed as the rank of ``waitlist_sequence`` among the session's registrations still waiting.
    ``answers`` holds the answers to the session's questions (``None``: none given), checked by
    ``rules.check_answers`` and written by the registration's own INSERT.
    """

    __tablename__ = "registrations"
    __table_args__ = (
        UniqueConstraint("session_id", "nip", name="uq_registration_session_nip"),
        Index("ix_registrations_waiting_order", "session_id", "status", "waitlist_sequence"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("lab_sessions.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    nip: Mapped[str] = mapped_column(String(18))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str] = mapped_column(String(20))
    opd: Mapped[str] = mapped_column(String(200))
    job_title: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(5), default="id")
    status: Mapped[str] = mapped_column(String(20))
    waitlist_sequence: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answers: Mapped[dict | None] = mapped_column(JSON, comment="answers to the session's questions, by key")

    session: Mapped[LabSession] = relationship(back_populates="registrations")


class LoginAttempts(Base):
    """Sign-in attempt counters, one row per ``(scope, key)`` in its current window.

    ``scope`` names the counter (``rules.ThrottleScope``): ``client`` keyed by the client's address, or
    ``account-client`` keyed by ``"<e-mail> <client address>"``. Each attempt is one atomic upsert per
    counter (see ``domain.authenticate``).
    """

    __tablename__ = "login_attempts"
    scope: Mapped[str] = mapped_column(String(20), primary_key=True)
    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CheckIn(Base):
    """A participant checked in at their session's door: at most one row per registration.

    The primary key *is* the rule "a ticket is checked in once": two organisers scanning the same ticket at
    the same moment both try to insert this row, and the database lets exactly one of them (the other's
    insert waits for the first to commit, then fails on the key; see ``domain.check_in``).
    """

    __tablename__ = "check_ins"
    registration_id: Mapped[str] = mapped_column(ForeignKey("registrations.id"), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("lab_sessions.id"), index=True)
    checked_in_at: Mapped[datetime] = mapped_column(UTCDateTime)
    checked_in_by: Mapped[str] = mapped_column(String(36), comment="the organiser's account id")
    checked_in_by_name: Mapped[str | None] = mapped_column(String(200))


class RegistrationImport(Base):
    """A bulk import of an agency's CSV into one session: a job whose progress people watch.

    Its lines (:class:`RegistrationImportLine`) are checked when the file is uploaded and registered one by
    one through ``register_participant``. The row is a work-queue row (``shared.workqueue``): the worker, or
    the request for a small file, holds it with a lease (``claim_token``, ``claimed_until``) while it
    registers lines, and ``state`` is ``finished`` once none is left. The counters move with every line, in
    the line's own transaction, so ``done / total`` is the progress at every moment.
    """

    __tablename__ = "registration_imports"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("lab_sessions.id"), index=True)
    filename: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(20), comment="queued, running or finished")
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    confirmed: Mapped[int] = mapped_column(Integer, default=0)
    waitlisted: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    invalid: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    not_before: Mapped[datetime] = mapped_column(DateTime, comment="naive UTC")
    claim_token: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)


class RegistrationImportLine(Base):
    """One data row of an import: what it said, and what became of it.

    ``outcome`` is ``pending`` until registered, then the registration's status (``confirmed``,
    ``waitlisted``), or ``duplicate`` (the NIP was already registered for the session), ``invalid`` (a field
    breaks a rule: ``problems`` names each field and reason) or ``refused`` (the session refused it: full
    without a waiting list, closed, an agency not of the programme).
    """

    __tablename__ = "registration_import_lines"
    __table_args__ = (Index("ix_registration_import_lines_pending", "import_id", "outcome", "line"),)
    import_id: Mapped[str] = mapped_column(ForeignKey("registration_imports.id"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    nip: Mapped[str | None] = mapped_column(String(40))
    participant: Mapped[dict | None] = mapped_column(JSON, comment="the checked fields, for register_participant")
    outcome: Mapped[str] = mapped_column(String(20))
    problems: Mapped[list | None] = mapped_column(JSON, comment='[{"field": ..., "reason": ...}]')
    registration_id: Mapped[str | None] = mapped_column(String(36))
