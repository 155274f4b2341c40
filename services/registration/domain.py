"""Registration's domain operations: accounts, lab sessions and registrations (the imperative shell).

Views and commands are thin adapters around these functions. Each operation loads the state it needs,
asks the pure decision in :mod:`services.registration.rules` (seat, sign-in throttle, participant data),
and writes the outcome and the events it causes into the caller's unit of work.

Who commits: whoever opens the unit of work — the view or the command. An operation that receives a
``uow`` only adds to it (it may flush, to learn ids or meet a unique constraint) and never commits.
:func:`authenticate` needs transactions of its own (the attempt is committed before the password check)
and so takes a unit-of-work factory instead, committing each transaction itself.

Capacity under a registration rush (the invariant: confirmed registrations never exceed capacity):
:func:`register_participant` first locks the lab session's row (``SELECT ... FOR UPDATE`` on PostgreSQL;
on SQLite the transaction already holds the database write lock from ``BEGIN IMMEDIATE``). The lock is held
until the caller commits, so every registration for one session runs its "count confirmed, decide, insert"
one after another, while registrations for other sessions proceed in parallel — which is why the caller
commits straight after the operation returns and does nothing slow in between. Lock order is always lab
session row → registration rows, so two operations can never deadlock. The decision itself
(:func:`rules.decide_seat`) sees only the count read under the lock. The same NIP twice for one session is
refused by a unique constraint, which also holds when two identical requests race.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from math import ceil
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import case, delete, func, literal, select, update
from sqlalchemy.exc import IntegrityError

from services.registration import rules
from services.registration.rules import (
    ACCOUNT_ROLES,
    SIGN_IN_WINDOW,
    AttemptWindow,
    SeatCount,
    SeatRequest,
    ThrottleScope,
    client_key,
    decide_seat,
    normalise_email,
)
from services.registration.tables import Account, LabSession, LoginAttempts, Registration
from shared.clock import UTCDateTime
from shared.db import UnitOfWork, insert_or_update
from shared.errors import Conflict, DomainError, NotFound, RuleViolation
from shared.tokens import Principal

_password_hasher = PasswordHasher()


# --- accounts ------------------------------------------------------------------------------------------


def create_account(
    uow: UnitOfWork, role: str, email: str, password: str, name: str | None = None, opd: str | None = None
) -> Account:
    """Add an organiser or evaluator account (the password is stored as an argon2 hash); the caller commits."""
    if role not in ACCOUNT_ROLES:
        raise RuleViolation(f"role must be one of {', '.join(ACCOUNT_ROLES)}", {"role": ["Unknown role."]})
    try:
        email = normalise_email(email)
    except ValueError as exc:
        raise RuleViolation(str(exc), {"email": [str(exc)]}) from None
    if len(password) < rules.MIN_PASSWORD_LENGTH:
        raise RuleViolation("password too short", {"password": [f"At least {rules.MIN_PASSWORD_LENGTH} characters."]})
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
    return account


def authenticate(
    unit_of_work: Callable[[], UnitOfWork], email: str, password: str, client_address: str | None
) -> Principal:
    """The principal of the account with these credentials; one vague error for every failure.

    Guessing is bounded per account *and* client, and per client across all addresses (the limits and
    why there are these two are in :func:`rules.sign_in_verdict`); known and unknown addresses are
    counted alike, so the answer reveals nothing. Three short transactions from ``unit_of_work``:

    1. **Count** the attempt on both counters — one atomic insert-or-increment each, in the fixed order
       client → account-and-client (so two sign-ins never deadlock on PostgreSQL; SQLite runs writers one
       at a time) — read the account, and commit. Counting before the password check means even a burst of
       parallel guesses gets no more password checks than the limits allow, and a refused attempt never
       runs the expensive argon2 check.
    2. **Check** the password with no transaction open (nor, on SQLite, a read snapshot) while argon2 works.
    3. **On success**, clear this client's count for the account and take the attempt back off the
       client's count — an owner who signs in is not a guesser, but signing in to one's own account never
       wipes the guesses made at others.
    """
    email = email.strip().lower()
    if len(email) > 254:  # lower-casing can lengthen some letters: no account has such an address
        raise InvalidCredentials("Wrong e-mail or password.")
    client = client_key(client_address)
    keys = {ThrottleScope.CLIENT: client, ThrottleScope.ACCOUNT_FROM_CLIENT: f"{email} {client}"}
    now = datetime.now(UTC)
    with unit_of_work() as uow:
        counters = {scope: _count_attempt(uow, scope, key, now) for scope, key in keys.items()}
        account = uow.session.scalar(select(Account).where(Account.email == email))
        uow.commit()
    verdict = rules.sign_in_verdict(counters, now)
    if not verdict.allowed:
        raise TooManyAttempts(
            f"Too many sign-in attempts {_REFUSED_BY[verdict.refused_by].format(email=email)}; "
            f"try again in {ceil(verdict.retry_after_seconds / 60)} minutes.",
            retry_after_seconds=verdict.retry_after_seconds,
        )
    try:
        if account is None:
            _password_hasher.hash(password)  # same work either way: no user enumeration by timing
            raise VerifyMismatchError
        _password_hasher.verify(account.password_hash, password)
    except (VerifyMismatchError, InvalidHashError):
        raise InvalidCredentials("Wrong e-mail or password.") from None
    with unit_of_work() as uow:
        _forget_attempt(uow, keys)
        uow.commit()
    return Principal(account.id, account.email, account.role, account.name)


_REFUSED_BY = {
    ThrottleScope.ACCOUNT_FROM_CLIENT: "for {email} from your address",
    ThrottleScope.CLIENT: "from your address",
}


def _count_attempt(uow: UnitOfWork, scope: ThrottleScope, key: str, now: datetime) -> AttemptWindow:
    """Count one attempt on counter ``(scope, key)`` — a new window if the last one ended — atomically."""
    table = LoginAttempts.__table__
    window_over = table.c.window_started_at <= now - SIGN_IN_WINDOW
    statement = (
        insert_or_update(uow.session, table)
        .values(scope=scope.value, key=key, attempts=1, window_started_at=now)
        .on_conflict_do_update(
            index_elements=["scope", "key"],
            set_={
                "attempts": case((window_over, 1), else_=table.c.attempts + 1),
                "window_started_at": case((window_over, literal(now, UTCDateTime())), else_=table.c.window_started_at),
            },
        )
        .returning(table.c.attempts, table.c.window_started_at)
    )
    attempts, window_started_at = uow.session.execute(statement).one()
    return AttemptWindow(attempts, window_started_at)


def _forget_attempt(uow: UnitOfWork, keys: dict[ThrottleScope, str]) -> None:
    """After a correct password: clear the account-and-client count, take one attempt off the client's."""
    table = LoginAttempts.__table__
    uow.session.execute(
        update(table)
        .where(table.c.scope == ThrottleScope.CLIENT.value, table.c.key == keys[ThrottleScope.CLIENT])
        .where(table.c.attempts > 0)
        .values(attempts=table.c.attempts - 1)
    )
    uow.session.execute(
        delete(table).where(
            table.c.scope == ThrottleScope.ACCOUNT_FROM_CLIENT.value,
            table.c.key == keys[ThrottleScope.ACCOUNT_FROM_CLIENT],
        )
    )


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


# --- lab sessions --------------------------------------------------------------------------------------


def session_event_data(lab_session: LabSession) -> dict[str, Any]:
    return {
        "session_id": lab_session.id,
        "programme_id": None,
        "title": lab_session.title,
        "starts_at": lab_session.starts_at,
        "ends_at": lab_session.ends_at,
        "location": lab_session.location,
        "capacity": lab_session.capacity,
    }


def create_session(uow: UnitOfWork, fields: dict[str, Any], organiser: Principal) -> LabSession:
    """Add a lab session and its ``session.created`` event to ``uow``; the caller commits."""
    if fields["ends_at"] <= fields["starts_at"]:
        raise RuleViolation("The session must end after it starts.", {"ends_at": ["Must be after starts_at."]})
    lab_session = LabSession(**fields, created_by=organiser.account_id, created_at=datetime.now(UTC))
    uow.session.add(lab_session)
    uow.flush()
    uow.publish("session.created", session_event_data(lab_session), subject=lab_session.id)
    return lab_session


def get_session(uow: UnitOfWork, session_id: str, lock: bool = False) -> LabSession:
    """The lab session ``session_id``; ``lock`` holds its row until the unit of work ends (see the module doc)."""
    query = select(LabSession).where(LabSession.id == session_id)
    if lock:
        query = query.with_for_update()
    lab_session = uow.session.scalar(query)
    if lab_session is None:
        raise NotFound(f"There is no session {session_id}.")
    return lab_session


def list_sessions(uow: UnitOfWork, limit: int = 100, offset: int = 0) -> list[tuple[LabSession, SeatCount]]:
    """Lab sessions, soonest first, each with its seats — in one query, however many there are."""
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
    return [(lab_session, SeatCount(lab_session.capacity, int(count))) for lab_session, count in rows]


def seat_count(uow: UnitOfWork, lab_session: LabSession) -> SeatCount:
    confirmed = uow.session.scalar(
        select(func.count())
        .select_from(Registration)
        .where(Registration.session_id == lab_session.id, Registration.status == "confirmed")
    )
    return SeatCount(lab_session.capacity, int(confirmed or 0))


# --- registrations -------------------------------------------------------------------------------------


def registration_event_data(registration: Registration, lab_session: LabSession) -> dict[str, Any]:
    return {
        "registration_id": registration.id,
        "session_id": lab_session.id,
        "session_title": lab_session.title,
        "session_starts_at": lab_session.starts_at,
        "session_location": lab_session.location,
        "status": registration.status,
        "name": registration.name,
        "nip": registration.nip,
        "email": registration.email,
        "phone": registration.phone,
        "opd": registration.opd,
        "position": registration.position,
    }


def register_participant(uow: UnitOfWork, session_id: str, participant: dict[str, Any]) -> Registration:
    """Register a participant: ``confirmed`` while seats remain, else ``waitlisted`` (:func:`rules.decide_seat`).

    Adds the registration and its ``registration.confirmed`` or ``registration.waitlisted`` event to
    ``uow``, holding the lab session's row lock; the caller commits at once. See the module docstring for
    why capacity holds under concurrent requests.
    """
    lab_session = get_session(uow, session_id, lock=True)
    duplicate = uow.session.scalar(
        select(Registration.id).where(Registration.session_id == lab_session.id, Registration.nip == participant["nip"])
    )
    if duplicate:
        raise _duplicate(participant["nip"])
    seats = seat_count(uow, lab_session)
    status = decide_seat(SeatRequest(capacity=seats.capacity, confirmed=seats.confirmed)).value
    registration = Registration(session_id=lab_session.id, status=status, created_at=datetime.now(UTC), **participant)
    uow.session.add(registration)
    try:
        uow.flush()
    except IntegrityError:
        raise _duplicate(participant["nip"]) from None
    uow.publish(f"registration.{status}", registration_event_data(registration, lab_session), subject=registration.id)
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
