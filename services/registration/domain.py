"""Registration's domain operations: accounts, sessions and registrations.

Views and commands are thin adapters around these functions; each takes a unit of work, changes state,
writes the events the change causes into the same transaction, and commits.

Capacity under a registration rush (the invariant: confirmed registrations never exceed capacity):
:func:`register_participant` first locks the session row (``SELECT ... FOR UPDATE`` on PostgreSQL; on
SQLite the transaction already holds the database write lock from ``BEGIN IMMEDIATE``). Every registration
for one session therefore runs its "count confirmed, then insert" one after another, while registrations
for other sessions proceed in parallel. Lock order is always session row → registration rows, so two
operations can never deadlock. The same NIP twice for one session is refused by a unique constraint, which
also holds when two identical requests race.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from math import ceil
from typing import Any

import phonenumbers
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import case, delete, func, literal, select
from sqlalchemy.exc import IntegrityError

from services.registration.tables import Account, LabSession, LoginAttempts, Registration
from shared.auth import ROLES, Principal
from shared.clock import UTCDateTime
from shared.db import UnitOfWork, insert_or_update
from shared.errors import Conflict, DomainError, NotFound, RuleViolation

_password_hasher = PasswordHasher()


# --- participant data rules ----------------------------------------------------------------------------


def nip_problem(nip: str) -> str | None:
    """Why ``nip`` is not a valid NIP, or ``None``.

    A NIP has 18 digits: birth date YYYYMMDD, appointment YYYYMM, sex digit (1 male, 2 female), and a
    3-digit sequence number.
    """
    if not re.fullmatch(r"\d{18}", nip or ""):
        return "NIP must be exactly 18 digits."
    try:
        born = date(int(nip[0:4]), int(nip[4:6]), int(nip[6:8]))
    except ValueError:
        return "NIP digits 1-8 must be a valid birth date (YYYYMMDD)."
    year, month = int(nip[8:12]), int(nip[12:14])
    if not 1 <= month <= 12 or year < born.year + 15:
        return "NIP digits 9-14 must be an appointment month (YYYYMM) at least 15 years after birth."
    if nip[14] not in "12":
        return "NIP digit 15 must be 1 (male) or 2 (female)."
    if nip[15:] == "000":
        return "NIP digits 16-18 must be a sequence number from 001."
    return None


def normalise_mobile_number(raw: str) -> str:
    """An Indonesian mobile number in E.164 (``+62812...``); raises ``ValueError`` with the reason."""
    try:
        number = phonenumbers.parse(raw, "ID")
    except phonenumbers.NumberParseException:
        raise ValueError("Not a phone number.") from None
    if number.country_code != 62 or not phonenumbers.is_valid_number(number):
        raise ValueError("Must be a valid Indonesian phone number, e.g. 0812 3456 7890.")
    if phonenumbers.number_type(number) not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise ValueError("Must be a mobile number (it receives the confirmation messages).")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


# --- accounts ------------------------------------------------------------------------------------------


def create_account(
    uow: UnitOfWork, role: str, email: str, password: str, name: str | None = None, opd: str | None = None
) -> Account:
    """Create an organiser or evaluator account (the password is stored as an argon2 hash)."""
    if role not in ROLES:
        raise RuleViolation(f"role must be one of {', '.join(ROLES)}", {"role": ["Unknown role."]})
    try:
        email = normalise_email(email)
    except ValueError as exc:
        raise RuleViolation(str(exc), {"email": [str(exc)]}) from None
    if len(password) < 10:
        raise RuleViolation("password too short", {"password": ["At least 10 characters."]})
    account = Account(
        email=email.lower(),
        name=name or email.split("@")[0],
        role=role,
        opd=opd,
        password_hash=_password_hasher.hash(password),
        created_at=datetime.now(UTC),
    )
    uow.session.add(account)
    try:
        uow.flush()
    except IntegrityError:
        raise Conflict(f"An account for {email} already exists.") from None
    uow.commit()
    return account


#: At most this many sign-in attempts per e-mail address in one window; then 429 until the window ends.
SIGN_IN_ATTEMPTS = 5
SIGN_IN_WINDOW = timedelta(minutes=15)


def authenticate(uow: UnitOfWork, email: str, password: str) -> Principal:
    """The principal of the account with these credentials; one vague error for every failure.

    Guessing is bounded per e-mail address (known or not, so the answer reveals nothing): every attempt is
    counted *before* the password is checked, by one atomic insert-or-increment committed at once, so even
    a burst of parallel guesses gets at most :data:`SIGN_IN_ATTEMPTS` password checks per window — and the
    expensive argon2 check is never run for a locked address. A successful sign-in clears the count.
    """
    email = email.strip().lower()
    if len(email) > 254:  # lower-casing can lengthen some letters: no account has such an address
        raise InvalidCredentials("Wrong e-mail or password.")
    attempts, window_started_at = _count_attempt(uow, email)
    if attempts > SIGN_IN_ATTEMPTS:
        retry_after = window_started_at + SIGN_IN_WINDOW - datetime.now(UTC)
        raise TooManyAttempts(
            f"Too many sign-in attempts for {email}; try again in {ceil(retry_after.total_seconds() / 60)} minutes.",
            retry_after_seconds=max(int(retry_after.total_seconds()), 1),
        )
    account = uow.session.scalar(select(Account).where(Account.email == email))
    uow.commit()  # no transaction stays open (nor, on SQLite, a read snapshot) while argon2 works
    try:
        if account is None:
            _password_hasher.hash(password)  # same work either way: no user enumeration by timing
            raise VerifyMismatchError
        _password_hasher.verify(account.password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        raise InvalidCredentials("Wrong e-mail or password.") from None
    uow.session.execute(delete(LoginAttempts).where(LoginAttempts.email == email))
    uow.commit()
    return Principal(account.id, account.email, account.role, account.name)


def _count_attempt(uow: UnitOfWork, email: str) -> tuple[int, datetime]:
    """Count one attempt for ``email`` (a new window if the last one ended) and commit it at once."""
    now = datetime.now(UTC)
    table = LoginAttempts.__table__
    window_over = table.c.window_started_at < now - SIGN_IN_WINDOW
    statement = (
        insert_or_update(uow.session, table)
        .values(email=email, attempts=1, window_started_at=now)
        .on_conflict_do_update(
            index_elements=["email"],
            set_={
                "attempts": case((window_over, 1), else_=table.c.attempts + 1),
                "window_started_at": case((window_over, literal(now, UTCDateTime())), else_=table.c.window_started_at),
            },
        )
        .returning(table.c.attempts, table.c.window_started_at)
    )
    attempts, window_started_at = uow.session.execute(statement).one()
    uow.commit()
    return attempts, window_started_at


class InvalidCredentials(RuleViolation):
    status = 401
    slug = "invalid-credentials"
    title = "Unauthorized"


class TooManyAttempts(DomainError):
    status = 429
    slug = "too-many-attempts"
    title = "Too Many Requests"

    def __init__(self, detail: str, retry_after_seconds: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_seconds)}


# --- sessions ------------------------------------------------------------------------------------------


def session_event_data(session: LabSession) -> dict[str, Any]:
    return {
        "session_id": session.id,
        "programme_id": None,
        "title": session.title,
        "starts_at": session.starts_at,
        "ends_at": session.ends_at,
        "location": session.location,
        "capacity": session.capacity,
    }


def create_session(uow: UnitOfWork, fields: dict[str, Any], organiser: Principal) -> LabSession:
    """Open a lab session; publishes ``session.created``."""
    if fields["ends_at"] <= fields["starts_at"]:
        raise RuleViolation("The session must end after it starts.", {"ends_at": ["Must be after starts_at."]})
    session = LabSession(**fields, created_by=organiser.account_id, created_at=datetime.now(UTC))
    uow.session.add(session)
    uow.flush()
    uow.publish("session.created", session_event_data(session), subject=session.id)
    uow.commit()
    return session


def get_session(uow: UnitOfWork, session_id: str, lock: bool = False) -> LabSession:
    query = select(LabSession).where(LabSession.id == session_id)
    if lock:
        query = query.with_for_update()
    session = uow.session.scalar(query)
    if session is None:
        raise NotFound(f"There is no session {session_id}.")
    return session


@dataclass(frozen=True)
class SeatCount:
    capacity: int
    confirmed: int

    @property
    def available(self) -> int:
        return max(self.capacity - self.confirmed, 0)


def list_sessions(uow: UnitOfWork, limit: int = 100, offset: int = 0) -> list[tuple[LabSession, SeatCount]]:
    """Sessions, soonest first, each with its seats — in one query, however many sessions there are."""
    confirmed = (
        select(Registration.session_id, func.count().label("confirmed"))
        .where(Registration.status == "confirmed")
        .group_by(Registration.session_id)
        .subquery()
    )
    rows = uow.session.execute(
        select(LabSession, func.coalesce(confirmed.c.confirmed, 0))
        .outerjoin(confirmed, confirmed.c.session_id == LabSession.id)
        .order_by(LabSession.starts_at, LabSession.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return [(session, SeatCount(session.capacity, int(count))) for session, count in rows]


def seat_count(uow: UnitOfWork, session: LabSession) -> SeatCount:
    confirmed = uow.session.scalar(
        select(func.count())
        .select_from(Registration)
        .where(Registration.session_id == session.id, Registration.status == "confirmed")
    )
    return SeatCount(session.capacity, int(confirmed or 0))


# --- registrations -------------------------------------------------------------------------------------


def registration_event_data(registration: Registration, session: LabSession) -> dict[str, Any]:
    return {
        "registration_id": registration.id,
        "session_id": session.id,
        "session_title": session.title,
        "session_starts_at": session.starts_at,
        "session_location": session.location,
        "status": registration.status,
        "name": registration.name,
        "nip": registration.nip,
        "email": registration.email,
        "phone": registration.phone,
        "opd": registration.opd,
        "position": registration.position,
    }


def register_participant(uow: UnitOfWork, session_id: str, participant: dict[str, Any]) -> Registration:
    """Register a participant: ``confirmed`` while seats remain, else ``waitlisted``.

    Publishes ``registration.confirmed`` or ``registration.waitlisted`` in the same transaction. See the
    module docstring for why capacity holds under concurrent requests.
    """
    session = get_session(uow, session_id, lock=True)
    duplicate = uow.session.scalar(
        select(Registration.id).where(Registration.session_id == session.id, Registration.nip == participant["nip"])
    )
    if duplicate:
        raise _duplicate(participant["nip"])
    status = "confirmed" if seat_count(uow, session).available > 0 else "waitlisted"
    registration = Registration(session_id=session.id, status=status, created_at=datetime.now(UTC), **participant)
    uow.session.add(registration)
    try:
        uow.flush()
    except IntegrityError:
        raise _duplicate(participant["nip"]) from None
    uow.publish(f"registration.{status}", registration_event_data(registration, session), subject=registration.id)
    uow.commit()
    return registration


def _duplicate(nip: str) -> Conflict:
    return Conflict(
        f"NIP {nip} is already registered for this session.", {"nip": ["Already registered for this session."]}
    )


def get_registration(uow: UnitOfWork, registration_id: str) -> Registration:
    registration = uow.session.get(Registration, registration_id)
    if registration is None:
        raise NotFound(f"There is no registration {registration_id}.")
    return registration
