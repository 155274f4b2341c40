"""Registration's domain operations: accounts, programmes, lab sessions, registrations (the imperative shell).

Views, pages and commands are thin adapters around these functions: plain arguments in, the stored objects
out. Each operation loads the state it needs, asks the pure decisions in :mod:`services.registration.rules`
(admission, seat, promotion, who may do what, sign-in throttle, participant data), and writes the outcome
and the events it causes into the caller's unit of work.

Who commits: whoever opens the unit of work — the view or the command. An operation that receives a
``uow`` only adds to it (it may flush, to learn ids or meet a unique constraint) and never commits.
:func:`authenticate` needs transactions of its own (the attempt is committed before the password check)
and so takes a unit-of-work factory instead, committing each transaction itself.

Seats under a registration rush
-------------------------------
The invariants: confirmed ≤ capacity; each OPD's confirmed ≤ the programme's quota; the waiting list is
first come, first served with places 1..n; nothing a caller was told is lost. The design, for speed as much
as for safety (every registration for one session passes through one lock, so what happens while it is
held *is* the rush's throughput):

1. **The session row is the lock, and its counters are the state.** ``lab_sessions`` carries
   ``confirmed_count``, ``waitlisted_count`` and ``waitlist_sequence``. :func:`register_participant` starts
   with one statement that locks and reads the row — ``SELECT … FOR NO KEY UPDATE OF lab_sessions`` on
   PostgreSQL (joined with the programme for its agencies and quota); on SQLite ``BEGIN IMMEDIATE`` already
   holds the database write lock. ``NO KEY UPDATE`` rather than ``UPDATE``: it does not conflict with the
   ``KEY SHARE`` lock each registration's foreign key takes, so readers and inserts elsewhere never queue.
2. **Decide on what the lock read** (:func:`rules.registration_refusal`, :func:`rules.opd_problem`,
   :func:`rules.check_answers`, :func:`rules.decide_seat`) — pure Python, microseconds, no statement. The
   session's extra questions are a JSON column of the session row itself, so the locking statement reads
   them and the answers are checked against exactly the definitions in force (a ``PATCH`` of the questions
   takes the same lock); the answers' shape was checked by the schema before the lock was taken.
3. **Write**: the changed counters, the registration (its answers in a JSON column of the same INSERT)
   and its outbox row in *one* round trip
   (:func:`shared.db.execute_together`: on PostgreSQL one statement of data-modifying CTEs, from templates
   compiled once, no ORM flush); then the caller commits at once, which releases the lock. So the lock is held
   for two round trips and a commit — measured at about 1 ms per registration on this machine when
   uncontended (it was 2.1 ms with an ORM flush of three statements). Between the decision and the write
   the participant's token is signed (its lifetime follows the session's end, which the lock read): one
   Ed25519 signature, no statement, so the event and the answer carry one link. Nothing under the lock grows with the session: no
   ``count(*)`` (the counters replace it), no duplicate-NIP ``SELECT`` (the unique constraint
   ``(session_id, nip)`` refuses the second insert and the whole transaction, counters included, rolls
   back), and the new waiting place is ``waitlisted_count`` itself.
4. **Per-OPD quota**: only when the programme sets one, the ``opd_seats`` row of (session, OPD) is read and
   created in the same statement (an upsert ``RETURNING``), after the session row. Every writer of it holds
   the session row's lock first, so it needs no lock of its own to be exact.
5. **The waiting list never renumbers.** A waiting registration keeps the ``waitlist_sequence`` it drew
   (monotonic per session); its shown place is its rank among the session's registrations still waiting
   (index ``(session_id, status, waitlist_sequence)``), so places are gap-free by construction and a
   cancellation or promotion touches only its own row.
6. **Cancelling a confirmed seat promotes in the same transaction**: under the session row's lock the seat
   is given back (counters down) and :func:`rules.choose_promotion` picks the earliest waiting registrant
   whose agency still has room; each promotion writes ``registration.promoted`` beside the change.

**Lock order**, everywhere: session row(s) → OPD counter rows → registration rows. An operation on two
sessions (moving a registration) locks both session rows in id order. So no two operations can deadlock.
The row lock guards every registration and counter of its session: no operation changes them without it.

Everything a decision reads — state, window, capacity, counters, questions, the programme's agencies and quota — comes
from the locking statement itself, and every change to a session (publish, cancel, ``PATCH``) takes the same
lock, so no decision ever acts on a value another transaction is changing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cache
from math import ceil
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from marshmallow import ValidationError
from sqlalchemy import Engine, Insert, bindparam, case, delete, func, insert, literal, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from services.registration import rules
from services.registration.rules import (
    ACCOUNT_ROLES,
    SIGN_IN_WINDOW,
    Access,
    AttemptWindow,
    CheckInRefusal,
    RegistrationAction,
    SeatCount,
    SeatOutcome,
    SeatRequest,
    SessionWindow,
    ThrottleScope,
    Waiting,
    client_key,
    decide_seat,
    normalise_email,
)
from services.registration.tables import (
    Account,
    CheckIn,
    LabSession,
    LoginAttempts,
    OpdSeats,
    Programme,
    Registration,
    RegistrationImport,
    RegistrationImportLine,
)
from shared.clock import UTCDateTime, utcnow
from shared.config import Settings
from shared.db import UnitOfWork, Write, execute_together, insert_or_update, new_id
from shared.errors import Conflict, DomainError, NotFound, RuleViolation
from shared.tokens import Principal, TokenIssuer, load_private_key_pem, load_secret_key
from shared.workqueue import WorkQueue

_password_hasher = PasswordHasher()


# --- accounts ------------------------------------------------------------------------------------------


def create_account(
    uow: UnitOfWork, role: str, email: str, password: str, name: str | None = None, opd: str | None = None
) -> Account:
    """Add an organiser or evaluator account (the password is stored as an argon2 hash) and its ``account.created``
    event; the caller commits."""
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
    uow.publish("account.created", account_event_data(account), subject=account.id)
    return account


def account_event_data(account: Account) -> dict[str, Any]:
    """What other services know of an account (evaluation keeps its evaluators from it): never the password."""
    return {
        "account_id": account.id,
        "email": account.email,
        "name": account.name,
        "role": account.role,
        "opd": account.opd,
        "active": True,
    }


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


# --- programmes ----------------------------------------------------------------------------------------


def create_programme(uow: UnitOfWork, fields: dict[str, Any], organiser: Principal) -> Programme:
    """Add a programme (its agencies and their seat quota per session); the caller commits."""
    opds = list(dict.fromkeys(name.strip() for name in fields["opds"]))  # one entry per agency, in order
    programme = Programme(
        id=new_id(),
        name=fields["name"],
        year=fields["year"],
        opds=opds,
        opd_quota=fields.get("opd_quota"),
        created_by=organiser.account_id,
        created_at=datetime.now(UTC),
    )
    uow.session.add(programme)
    uow.flush()
    return programme


def get_programme(uow: UnitOfWork, programme_id: str) -> Programme:
    programme = uow.session.get(Programme, programme_id)
    if programme is None:
        raise NotFound(f"There is no programme {programme_id}.")
    return programme


def list_programmes(uow: UnitOfWork, limit: int = 100, offset: int = 0) -> list[Programme]:
    """Programmes, newest year first."""
    query = select(Programme).order_by(Programme.year.desc(), Programme.name, Programme.id)
    return list(uow.session.scalars(query.limit(limit).offset(offset)))


# --- lab sessions --------------------------------------------------------------------------------------


class NotAllowed(DomainError):
    """A caller with a valid token asked for something its token does not open (a participant's link)."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


def session_event_data(lab_session: LabSession) -> dict[str, Any]:
    return {
        "session_id": lab_session.id,
        "programme_id": lab_session.programme_id,
        "title": lab_session.title,
        "starts_at": lab_session.starts_at,
        "ends_at": lab_session.ends_at,
        "location": lab_session.location,
        "capacity": lab_session.capacity,
        "stage": lab_session.stage,
        "online_url": lab_session.online_url,
        "state": lab_session.state,
    }


def _check_session_times(fields: dict[str, Any], now: datetime) -> None:
    """The rules a session's times keep, whether it is created or changed (422 naming the field)."""
    if fields["ends_at"] <= fields["starts_at"]:
        raise RuleViolation("The session must end after it starts.", {"ends_at": ["Must be after starts_at."]})
    if fields["starts_at"] <= now and not fields.get("record"):
        raise RuleViolation(
            "The session starts in the past; mark it as a record of a session that happened (record: true).",
            {"starts_at": ["Is in the past (set record to true for a session that already happened)."]},
        )
    opens, closes = fields.get("registration_opens_at"), fields.get("registration_closes_at")
    if opens is not None and closes is not None and closes <= opens:
        raise RuleViolation(
            "Registration must close after it opens.",
            {"registration_closes_at": ["Must be after registration_opens_at."]},
        )


def create_session(
    uow: UnitOfWork, fields: dict[str, Any], organiser: Principal, now: datetime | None = None
) -> LabSession:
    """Add a lab session and its ``session.created`` event to ``uow``; the caller commits.

    Only the foundation's five fields (title, times, place, capacity) make a published session without a
    window and with a waiting list, as before. A session in the past is refused unless it is a ``record``.
    """
    now = now or datetime.now(UTC)
    _check_session_times(fields, now)
    if fields.get("programme_id") is not None and uow.session.get(Programme, fields["programme_id"]) is None:
        raise RuleViolation(
            f"There is no programme {fields['programme_id']}.", {"programme_id": ["No such programme."]}
        )
    lab_session = LabSession(
        id=new_id(),
        **{"waitlist": True, "state": "published", "record": False, **fields},
        confirmed_count=0,
        waitlisted_count=0,
        waitlist_sequence=0,
        created_by=organiser.account_id,
        created_at=datetime.now(UTC),
    )
    uow.session.add(lab_session)
    uow.flush()
    uow.publish("session.created", session_event_data(lab_session), subject=lab_session.id)
    return lab_session


#: A session with its programme, made once (the registration rush runs it for every request).
_READ_SESSION = (
    select(LabSession, Programme)
    .outerjoin(Programme, Programme.id == LabSession.programme_id)
    .where(LabSession.id == bindparam("session_id"))
    .execution_options(populate_existing=True)
)
_LOCK_SESSION = _READ_SESSION.with_for_update(of=LabSession, key_share=True)  # FOR NO KEY UPDATE OF lab_sessions


def get_session(uow: UnitOfWork, session_id: str, lock: bool = False) -> LabSession:
    """The lab session ``session_id``; ``lock`` holds its row until the unit of work ends (see the module doc)."""
    return _load_session(uow, session_id, lock)[0]


def _load_session(uow: UnitOfWork, session_id: str, lock: bool = False) -> tuple[LabSession, Programme | None]:
    """The session and its programme in one statement; ``lock`` takes the session row's lock (step 1)."""
    query = _LOCK_SESSION if lock else _READ_SESSION
    row = uow.session.execute(query, {"session_id": session_id}).first()
    if row is None:
        raise NotFound(f"There is no session {session_id}.")
    return row[0], row[1]


def list_sessions(
    uow: UnitOfWork,
    limit: int = 100,
    offset: int = 0,
    *,
    states: tuple[str, ...] = ("published",),
    programme_id: str | None = None,
    stage: str | None = None,
    starts_from: datetime | None = None,
    starts_before: datetime | None = None,
) -> list[tuple[LabSession, SeatCount]]:
    """Lab sessions in the given states (published ones by default), soonest first, each with its seats."""
    query = select(LabSession).where(LabSession.state.in_(states))
    if programme_id is not None:
        query = query.where(LabSession.programme_id == programme_id)
    if stage is not None:
        query = query.where(LabSession.stage == stage)
    if starts_from is not None:
        query = query.where(LabSession.starts_at >= starts_from)
    if starts_before is not None:
        query = query.where(LabSession.starts_at < starts_before)
    rows = uow.session.scalars(query.order_by(LabSession.starts_at, LabSession.id).limit(limit).offset(offset))
    return [(lab_session, seat_count(uow, lab_session)) for lab_session in rows]


def seat_count(uow: UnitOfWork, lab_session: LabSession) -> SeatCount:
    """The session's seats, from its counter (no query: the counter is exact, see the module docstring)."""
    return SeatCount(lab_session.capacity, lab_session.confirmed_count)


def publish_session(uow: UnitOfWork, session_id: str) -> LabSession:
    """A draft session becomes published (it takes registrations) with ``session.published``."""
    lab_session = get_session(uow, session_id, lock=True)
    if lab_session.state != "draft":
        raise Conflict(f"Only a draft session can be published; this one is {lab_session.state}.")
    lab_session.state = "published"
    uow.flush()
    uow.publish("session.published", session_event_data(lab_session), subject=lab_session.id)
    return lab_session


def cancel_session(uow: UnitOfWork, session_id: str) -> LabSession:
    """Cancel a session with ``session.cancelled`` (registrations stay as they are, for the record)."""
    lab_session = get_session(uow, session_id, lock=True)
    if lab_session.state == "cancelled":
        raise Conflict("The session is already cancelled.")
    lab_session.state = "cancelled"
    uow.flush()
    uow.publish("session.cancelled", session_event_data(lab_session), subject=lab_session.id)
    return lab_session


def change_session(
    uow: UnitOfWork,
    session_id: str,
    changes: dict[str, Any],
    now: datetime | None = None,
    *,
    links: ParticipantLinks | None = None,
) -> tuple[LabSession, list[Registration]]:
    """Change a session's fields; returns it and the registrants promoted by a larger capacity.

    A change of time or place is told to registrants with ``session.changed`` (old and new values). The
    capacity cannot go below the seats already confirmed; raising it promotes from the waiting list, each
    ``registration.promoted`` carrying the link and ticket made with ``links`` (:func:`_publish_promotions`).
    """
    now = now or datetime.now(UTC)
    lab_session, programme = _load_session(uow, session_id, lock=True)
    if lab_session.state == "cancelled":
        raise Conflict("A cancelled session cannot be changed.")
    before = {name: getattr(lab_session, name) for name in rules.NOTABLE_FIELDS}
    merged = {
        **{name: getattr(lab_session, name) for name in ("starts_at", "ends_at", "record")},
        "registration_opens_at": lab_session.registration_opens_at,
        "registration_closes_at": lab_session.registration_closes_at,
        **changes,
    }
    if (
        "starts_at" in changes
        or "ends_at" in changes
        or "registration_opens_at" in changes
        or ("registration_closes_at" in changes)
    ):
        _check_session_times(merged, now)
    if "questions" in changes:
        _check_question_change(uow, lab_session, changes["questions"])
    if changes.get("capacity", lab_session.capacity) < lab_session.confirmed_count:
        raise RuleViolation(
            f"{lab_session.confirmed_count} seats are already confirmed.",
            {"capacity": [f"Cannot be below the {lab_session.confirmed_count} seats already confirmed."]},
        )
    for name, value in changes.items():
        setattr(lab_session, name, value)
    promoted = _fill_free_seats(uow, lab_session, programme, now)
    uow.flush()
    notable = rules.notable_changes(before, changes)
    if notable:
        uow.publish("session.changed", {**session_event_data(lab_session), "changes": notable}, subject=lab_session.id)
    _publish_promotions(uow, lab_session, promoted, links)
    return lab_session, promoted


class QuestionsInUse(Conflict):
    slug = "questions-in-use"


def _check_question_change(uow: UnitOfWork, lab_session: LabSession, questions: list[rules.Question]) -> None:
    """Refuse (409, naming why) a change of the questions that would spoil answers already given
    (:func:`rules.question_change_refusal`). The caller holds the session row's lock, which every
    registration takes before it writes, so "has anyone registered" cannot change meanwhile."""
    registered = (
        uow.session.scalar(select(Registration.id).where(Registration.session_id == lab_session.id).limit(1))
        is not None
    )
    refusal = rules.question_change_refusal(lab_session.questions or [], questions, registered)
    if refusal:
        raise QuestionsInUse(refusal, {"questions": [refusal]})


def _window(lab_session: LabSession) -> SessionWindow:
    return SessionWindow(
        lab_session.state,
        lab_session.starts_at,
        lab_session.registration_opens_at,
        lab_session.registration_closes_at,
    )


# --- registrations -------------------------------------------------------------------------------------


def registration_event_data(
    registration: Registration,
    lab_session: LabSession,
    waitlist_position: int | None = None,
    participant_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The data of a ``registration.*`` event; ``participant_fields`` is what the participant's mail needs
    (:meth:`ParticipantLinks.event_fields`: the link and, for a seat, the ticket code). A cancelled
    registration's event never carries them: its link is refused, and it holds no ticket."""
    fields = participant_fields if participant_fields and registration.status != "cancelled" else {}
    return {
        "registration_id": registration.id,
        "session_id": lab_session.id,
        "programme_id": lab_session.programme_id,
        "session_title": lab_session.title,
        "session_starts_at": lab_session.starts_at,
        "session_location": lab_session.location,
        "session_ends_at": lab_session.ends_at,
        "online_url": lab_session.online_url,
        "status": registration.status,
        "name": registration.name,
        "nip": registration.nip,
        "email": registration.email,
        "phone": registration.phone,
        "opd": registration.opd,
        "position": registration.job_title,  # the job title in version 1 (see shared.events)
        "job_title": registration.job_title,
        "waitlist_position": waitlist_position if registration.status == "waitlisted" else None,
        "language": registration.language,
        **fields,
    }


def register_participant(
    uow: UnitOfWork,
    session_id: str,
    participant: dict[str, Any],
    now: datetime | None = None,
    *,
    links: ParticipantLinks | None = None,
) -> Registration:
    """Register a participant: ``confirmed`` while the session and their agency have seats, else
    ``waitlisted`` (or 409 when the session keeps no waiting list).

    Adds the registration and its ``registration.confirmed`` or ``registration.waitlisted`` event to
    ``uow``, holding the session row's lock; the caller commits at once (the module docstring says why this
    holds under any concurrency, and why it is fast). The returned registration carries its place on the
    waiting list as ``waitlist_position`` (``None`` when confirmed).

    With ``links`` the participant's token is signed here, once: the event carries the link with it (and
    the ticket code for a seat), and the returned registration carries the same token and link as
    ``manage_token`` and ``manage_url`` (``None`` without ``links``), so the answer to the registrant and
    their mail hold one link. The token's lifetime follows the session's end, which only the locking
    statement reads, so it is signed after the lock is taken but before the one write — it adds no
    statement, and the lock is held for one Ed25519 signature more (about 0.1 ms on an idle core; the
    ticket code is an HMAC, microseconds), not for anything that waits.
    """
    now = now or datetime.now(UTC)
    lab_session, programme = _load_session(uow, session_id, lock=True)
    refusal = rules.registration_refusal(_window(lab_session), now)
    if refusal:
        raise RegistrationClosed(refusal)
    answers = _checked_input(participant, lab_session, programme)
    quota = programme.opd_quota if programme else None
    opd_confirmed = _read_opd_seats(uow, lab_session.id, participant["opd"]) if quota is not None else 0
    outcome = decide_seat(
        SeatRequest(lab_session.capacity, lab_session.confirmed_count, quota, opd_confirmed, lab_session.waitlist)
    )
    if outcome is SeatOutcome.REFUSED:
        raise Conflict("The session is full and keeps no waiting list.")
    registration = Registration(  # written below with its counters and event, not through the ORM's flush
        id=new_id(),
        session_id=lab_session.id,
        name=participant["name"],
        nip=participant["nip"],
        email=participant["email"],
        phone=participant["phone"],
        opd=participant["opd"],
        job_title=participant.get("job_title"),
        language=participant.get("language") or "id",
        status=outcome.value,
        waitlist_sequence=None,
        created_at=now,
        cancelled_at=None,
        answers=answers or None,
    )
    position = None
    if outcome is SeatOutcome.CONFIRMED:
        counters = {"confirmed_count": lab_session.confirmed_count + 1}
        seat_write = (_TAKE_SEAT, {"seat_session_id": lab_session.id, "seat_confirmed": counters["confirmed_count"]})
    else:
        counters = {
            "waitlist_sequence": lab_session.waitlist_sequence + 1,
            "waitlisted_count": lab_session.waitlisted_count + 1,
        }
        seat_write = (
            _JOIN_WAITING_LIST,
            {
                "seat_session_id": lab_session.id,
                "seat_sequence": counters["waitlist_sequence"],
                "seat_waiting": counters["waitlisted_count"],
            },
        )
        registration.waitlist_sequence = counters["waitlist_sequence"]
        position = counters["waitlisted_count"]  # the newest sequence ranks last among those waiting
    token = links.token(registration, lab_session.ends_at) if links is not None else None
    fields = links.event_fields(registration, token) if links is not None and token is not None else None
    _envelope, event_write = uow.event_write(
        f"registration.{outcome.value}",
        registration_event_data(registration, lab_session, position, fields),
        subject=registration.id,
    )
    writes = [
        seat_write,
        (_ADD_REGISTRATION, {f"new_{c.key}": getattr(registration, c.key) for c in Registration.__table__.columns}),
        event_write,
    ]
    if outcome is SeatOutcome.CONFIRMED and quota is not None:
        writes.append(_opd_seats_change(uow, lab_session.id, registration.opd, +1))
    try:  # step 3: every write in one round trip, the lock held only for it and the commit
        execute_together(uow.session, *writes)
    except IntegrityError:
        raise _duplicate(participant["nip"]) from None
    for name, value in counters.items():  # the loaded session shows what was written, without a second write
        set_committed_value(lab_session, name, value)
    set_committed_value(registration, "session", lab_session)
    registration.waitlist_position = position  # type: ignore[attr-defined]
    registration.manage_token = token  # type: ignore[attr-defined]
    registration.manage_url = fields["manage_url"] if fields else None  # type: ignore[attr-defined]
    return registration


def _checked_input(participant: dict[str, Any], lab_session: LabSession, programme: Programme | None) -> dict:
    """The registrant's answers as stored, once the agency and every answer fit what the session (read by
    the locking statement) asks; else one 422 naming each field (``opd``, ``answers.<key>``) and its rule.
    Pure Python on values already read: it adds no statement while the lock is held (step 2)."""
    problems: dict[str, list[str]] = {}
    opd_problem = rules.opd_problem(participant["opd"], programme.opds if programme else None)
    if opd_problem:
        problems["opd"] = [opd_problem]
    answers, answer_problems = rules.check_answers(lab_session.questions or [], participant.get("answers") or {})
    problems.update(answer_problems)
    if problems:
        detail = opd_problem or "Some answers do not fit the session's questions: " + ", ".join(answer_problems) + "."
        raise RuleViolation(detail, problems)
    return answers


#: The writes of a registration, made once (see :func:`shared.db.execute_together`): the session's counters
#: for a confirmed seat or a place on the waiting list, and the new registration row.
_TAKE_SEAT = (
    update(LabSession)
    .where(LabSession.id == bindparam("seat_session_id"))
    .values(confirmed_count=bindparam("seat_confirmed"))
)
_JOIN_WAITING_LIST = (
    update(LabSession)
    .where(LabSession.id == bindparam("seat_session_id"))
    .values(waitlist_sequence=bindparam("seat_sequence"), waitlisted_count=bindparam("seat_waiting"))
)
_ADD_REGISTRATION = insert(Registration).values(
    {column.key: bindparam(f"new_{column.key}") for column in Registration.__table__.columns}
)


class RegistrationClosed(Conflict):
    slug = "registration-closed"


def _read_opd_seats(uow: UnitOfWork, session_id: str, opd: str) -> int:
    """The agency's confirmed seats in the session, creating its counter row if it has none (step 4)."""
    table = OpdSeats.__table__
    statement = (
        insert_or_update(uow.session, table)
        .values(session_id=session_id, opd=opd, confirmed=0)
        .on_conflict_do_update(index_elements=["session_id", "opd"], set_={"confirmed": table.c.confirmed})
        .returning(table.c.confirmed)
    )
    return int(uow.session.execute(statement).scalar_one())


def _add_to_opd_seats(uow: UnitOfWork, session_id: str, opd: str, change: int) -> None:
    uow.session.execute(*_opd_seats_change(uow, session_id, opd, change))


def _opd_seats_change(uow: UnitOfWork, session_id: str, opd: str, change: int) -> Write:
    """The write that moves the agency's confirmed seats in the session by ``change`` (an upsert)."""
    values = {"opd_session_id": session_id, "opd_name": opd, "opd_initial": max(change, 0), "opd_change": change}
    return _opd_seats_upsert(uow.session.get_bind().dialect.name), values


@cache
def _opd_seats_upsert(dialect: str) -> Insert:
    table = OpdSeats.__table__
    insert_for = postgresql_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert_for(table)
        .values(session_id=bindparam("opd_session_id"), opd=bindparam("opd_name"), confirmed=bindparam("opd_initial"))
        .on_conflict_do_update(
            index_elements=["session_id", "opd"], set_={"confirmed": table.c.confirmed + bindparam("opd_change")}
        )
    )


def _duplicate(nip: str) -> Conflict:
    return Conflict(
        f"NIP {nip} is already registered for this session.", {"nip": ["Already registered for this session."]}
    )


def get_registration(uow: UnitOfWork, registration_id: str) -> Registration:
    registration = uow.session.get(Registration, registration_id)
    if registration is None:
        raise NotFound(f"There is no registration {registration_id}.")
    return registration


def waitlist_position(uow: UnitOfWork, registration: Registration) -> int | None:
    """The registration's place on the waiting list (1 = next), or ``None`` if it is not waiting."""
    if registration.status != "waitlisted":
        return None
    ahead_or_self = uow.session.scalar(
        select(func.count())
        .select_from(Registration)
        .where(
            Registration.session_id == registration.session_id,
            Registration.status == "waitlisted",
            Registration.waitlist_sequence <= registration.waitlist_sequence,
        )
    )
    return int(ahead_or_self or 0)


def read_registration(uow: UnitOfWork, registration_id: str, caller: Principal) -> tuple[Registration, Access]:
    """The registration as ``caller`` may see it: :attr:`Access.FULL`, or :attr:`Access.STATUS_ONLY` for a
    participant whose registration is cancelled. Another registration's link is refused before any lookup."""
    _allow(caller, registration_id, None, RegistrationAction.READ)
    registration = get_registration(uow, registration_id)
    access = _allow(caller, registration_id, registration.status, RegistrationAction.READ)
    registration.waitlist_position = waitlist_position(uow, registration)  # type: ignore[attr-defined]
    return registration, access


def _allow(caller: Principal, registration_id: str, status: str | None, action: RegistrationAction) -> Access:
    access, reason = rules.registration_access(caller.role, caller.account_id, registration_id, status, action)
    if access is Access.FORBIDDEN:
        raise NotAllowed(reason or "Not allowed.")
    return access


def cancel_registration(
    uow: UnitOfWork,
    registration_id: str,
    caller: Principal,
    now: datetime | None = None,
    *,
    links: ParticipantLinks | None = None,
) -> tuple[Registration, list[Registration]]:
    """Cancel a registration (its participant, or an organiser); returns it and whoever was promoted.

    Under the session row's lock: the seat or waiting place is given back, and a freed seat goes at once to
    the first waiting registrant who fits (:func:`rules.choose_promotion`), with ``registration.cancelled``
    and ``registration.promoted`` in the same transaction. A cancelled registration cannot be cancelled
    again (409; its participant's link is refused with 403, see :func:`rules.registration_access`).
    ``registration.cancelled`` carries no link and no ticket; each promotion carries both, made with ``links``.
    """
    now = now or datetime.now(UTC)
    _allow(caller, registration_id, None, RegistrationAction.CANCEL)
    session_id = get_registration(uow, registration_id).session_id
    lab_session, programme = _load_session(uow, session_id, lock=True)
    registration = uow.session.scalars(
        select(Registration).where(Registration.id == registration_id).execution_options(populate_existing=True)
    ).one()  # read again under the lock: a concurrent cancel may have won
    _allow(caller, registration_id, registration.status, RegistrationAction.CANCEL)
    if registration.status == "cancelled":
        raise Conflict("The registration is already cancelled.")
    _give_back_place(uow, lab_session, programme, registration)
    registration.status = "cancelled"
    registration.cancelled_at = now
    uow.flush()
    promoted = _fill_free_seats(uow, lab_session, programme, now)
    uow.flush()
    uow.publish("registration.cancelled", registration_event_data(registration, lab_session), subject=registration.id)
    _publish_promotions(uow, lab_session, promoted, links)
    registration.waitlist_position = None  # type: ignore[attr-defined]
    return registration, promoted


def move_registration(
    uow: UnitOfWork,
    registration_id: str,
    target_session_id: str,
    now: datetime | None = None,
    *,
    links: ParticipantLinks | None = None,
) -> tuple[Registration, list[Registration]]:
    """An organiser moves a registration to another session: it leaves its place in the first (which may
    promote someone there) and takes a seat or a waiting place in the second by the same seat rule, keeping
    its id (the participant's link keeps working). Emits the new ``registration.confirmed``/``.waitlisted``,
    which with ``links`` carries a new link for the target session's dates (and the ticket for a seat).
    Its answers go with it as they were given (an organiser's move is not refused for the target's
    questions); the target's lists and export show those of its own questions' keys.

    Both session rows are locked in id order (the module's lock order), so two moves never deadlock.
    """
    now = now or datetime.now(UTC)
    registration = get_registration(uow, registration_id)
    source_id = registration.session_id
    if source_id == target_session_id:
        raise Conflict("The registration is already in that session.")
    locked = {sid: _load_session(uow, sid, lock=True) for sid in sorted((source_id, target_session_id))}
    (source, source_programme), (target, target_programme) = locked[source_id], locked[target_session_id]
    registration = uow.session.scalars(
        select(Registration).where(Registration.id == registration_id).execution_options(populate_existing=True)
    ).one()
    if registration.status == "cancelled":
        raise Conflict("A cancelled registration cannot be moved.")
    if registration.session_id != source_id:
        raise Conflict("The registration was moved meanwhile; try again.")
    refusal = rules.registration_refusal(_window(target), now)
    if refusal:
        raise RegistrationClosed(refusal)
    problem = rules.opd_problem(registration.opd, target_programme.opds if target_programme else None)
    if problem:
        raise RuleViolation(problem, {"opd": [problem]})
    quota = target_programme.opd_quota if target_programme else None
    opd_confirmed = _read_opd_seats(uow, target.id, registration.opd) if quota is not None else 0
    outcome = decide_seat(SeatRequest(target.capacity, target.confirmed_count, quota, opd_confirmed, target.waitlist))
    if outcome is SeatOutcome.REFUSED:
        raise Conflict("The target session is full and keeps no waiting list.")
    _give_back_place(uow, source, source_programme, registration)
    registration.session_id = target.id
    registration.status = outcome.value
    position = None
    if outcome is SeatOutcome.CONFIRMED:
        target.confirmed_count += 1
        registration.waitlist_sequence = None
        if quota is not None:
            _add_to_opd_seats(uow, target.id, registration.opd, +1)
    else:
        target.waitlist_sequence += 1
        target.waitlisted_count += 1
        registration.waitlist_sequence = target.waitlist_sequence
        position = target.waitlisted_count
    try:
        uow.flush()
    except IntegrityError:
        raise _duplicate(registration.nip) from None
    promoted = _fill_free_seats(uow, source, source_programme, now)
    uow.flush()
    fields = links.event_fields(registration, links.token(registration, target.ends_at)) if links else None
    uow.publish(
        f"registration.{outcome.value}",
        registration_event_data(registration, target, position, fields),
        subject=registration.id,
    )
    _publish_promotions(uow, source, promoted, links)
    registration.waitlist_position = position  # type: ignore[attr-defined]
    return registration, promoted


def _give_back_place(
    uow: UnitOfWork, lab_session: LabSession, programme: Programme | None, registration: Registration
) -> None:
    """The registration leaves its seat or waiting place: the session's counters (held locked) go down."""
    if registration.status == "confirmed":
        lab_session.confirmed_count -= 1
        if programme is not None and programme.opd_quota is not None:
            _add_to_opd_seats(uow, lab_session.id, registration.opd, -1)
    elif registration.status == "waitlisted":
        lab_session.waitlisted_count -= 1


#: How many waiting registrants :func:`_fill_free_seats` looks at per query.
_PROMOTION_BATCH = 100


def _fill_free_seats(
    uow: UnitOfWork, lab_session: LabSession, programme: Programme | None, now: datetime
) -> list[Registration]:
    """Promote waiting registrants into the session's free seats, earliest who fits first (step 6).

    The caller holds the session row's lock. Waiting registrants are read in waiting-list order, a batch
    at a time; :func:`rules.choose_promotion` skips those whose agency is at its quota.
    """
    free = rules.seats_to_fill(
        lab_session.capacity, lab_session.confirmed_count, lab_session.state, lab_session.starts_at, now
    )
    if free == 0 or lab_session.waitlisted_count == 0:
        return []
    quota = programme.opd_quota if programme else None
    opd_confirmed: dict[str, int] = {}
    if quota is not None:
        opd_confirmed = dict(
            uow.session.execute(select(OpdSeats.opd, OpdSeats.confirmed).where(OpdSeats.session_id == lab_session.id))
            .tuples()
            .all()
        )
    promoted: list[Registration] = []
    after = 0
    while free > 0:
        batch = list(
            uow.session.scalars(
                select(Registration)
                .where(
                    Registration.session_id == lab_session.id,
                    Registration.status == "waitlisted",
                    Registration.waitlist_sequence > after,
                )
                .order_by(Registration.waitlist_sequence)
                .limit(_PROMOTION_BATCH)
            )
        )
        if not batch:
            break
        by_id = {r.id: r for r in batch}
        waiting = [Waiting(r.id, r.opd, r.waitlist_sequence or 0) for r in batch]
        while free > 0 and (choice := rules.choose_promotion(waiting, opd_confirmed, quota)) is not None:
            chosen = by_id[choice.registration_id]
            chosen.status = "confirmed"
            lab_session.confirmed_count += 1
            lab_session.waitlisted_count -= 1
            if quota is not None:
                opd_confirmed[chosen.opd] = opd_confirmed.get(chosen.opd, 0) + 1
                _add_to_opd_seats(uow, lab_session.id, chosen.opd, +1)
            waiting.remove(choice)
            promoted.append(chosen)
            free -= 1
        after = batch[-1].waitlist_sequence or 0
    return promoted


def _publish_promotions(
    uow: UnitOfWork, lab_session: LabSession, promoted: list[Registration], links: ParticipantLinks | None
) -> None:
    """``registration.promoted`` for each promoted registrant: with ``links``, a new participant token
    (the promoted person needs their link and, now seated, their ticket). The caller holds the session
    row's lock; each token is one Ed25519 signature (about 0.1 ms), no statement."""
    for registration in promoted:
        fields = links.event_fields(registration, links.token(registration, lab_session.ends_at)) if links else None
        uow.publish(
            "registration.promoted",
            registration_event_data(registration, lab_session, None, fields),
            subject=registration.id,
        )
        registration.waitlist_position = None  # type: ignore[attr-defined]


def list_registrations(
    uow: UnitOfWork,
    session_id: str,
    *,
    status: str | None = None,
    opd: str | None = None,
    search: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[tuple[Registration, int | None]]:
    """A session's registrations for its organisers, each with its waiting-list place: confirmed first,
    then the waiting list in order, then the cancelled; filtered by status, agency and a search over
    name, NIP and e-mail."""
    get_session(uow, session_id)
    places = (
        select(
            Registration.id.label("id"),
            func.row_number().over(order_by=Registration.waitlist_sequence).label("place"),
        )
        .where(Registration.session_id == session_id, Registration.status == "waitlisted")
        .subquery()
    )
    order = case({"confirmed": 0, "waitlisted": 1}, value=Registration.status, else_=2)
    query = (
        select(Registration, places.c.place)
        .outerjoin(places, places.c.id == Registration.id)
        .where(Registration.session_id == session_id)
    )
    if status is not None:
        query = query.where(Registration.status == status)
    if opd is not None:
        query = query.where(Registration.opd == opd)
    if search:
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                func.lower(Registration.name).like(pattern, escape="\\"),
                Registration.nip.like(pattern, escape="\\"),
                func.lower(Registration.email).like(pattern, escape="\\"),
            )
        )
    query = query.order_by(order, Registration.waitlist_sequence, Registration.created_at, Registration.id)
    rows = uow.session.execute(query.limit(limit).offset(offset)).all()
    return [(registration, None if place is None else int(place)) for registration, place in rows]


def registration_counts(uow: UnitOfWork, session_id: str) -> dict[str, Any]:
    """How many registrations a session has per status, and per agency and status."""
    get_session(uow, session_id)
    rows = uow.session.execute(
        select(Registration.opd, Registration.status, func.count())
        .where(Registration.session_id == session_id)
        .group_by(Registration.opd, Registration.status)
        .order_by(Registration.opd)
    ).all()
    statuses = ("confirmed", "waitlisted", "cancelled")
    by_status = dict.fromkeys(statuses, 0)
    by_opd: dict[str, dict[str, int]] = {}
    for opd, status, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        by_opd.setdefault(opd, dict.fromkeys(statuses, 0))[status] = count
    return {"by_status": by_status, "by_opd": [{"opd": opd, **counts} for opd, counts in by_opd.items()]}


# --- participants' links -------------------------------------------------------------------------------

#: Where a participant's link leads (the pages build it): ``<public url>`` + this, with the id and token.
MANAGE_PATH = "/registration/manage/{registration_id}?token={token}"


@dataclass(frozen=True)
class ParticipantLinks:
    """What the registration events tell a participant with: the signer of their link's token, the public
    address the link starts with, and the key of ticket codes — the service's own, built once per process
    (:meth:`from_settings`: the web app at start, the worker's import loop when it starts) and handed to
    every operation that publishes a registration event, so the confirmation, waiting-list and promotion
    mails carry the participant's link and, for a seat, the ticket.

    An operation given none (``links=None``: tools and tests that need no mail) publishes its events without
    ``manage_url`` and ``ticket_code`` — the fields are optional in the event's version 1.
    """

    issuer: TokenIssuer
    public_url: str
    ticket_key: bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> ParticipantLinks:
        """The service's links: its token signer (the key every service verifies with), ``LABINOV_PUBLIC_URL``
        and the ticket key derived from its secret."""
        issuer = TokenIssuer(load_private_key_pem(settings), settings.token_lifetime_seconds)
        return cls(issuer, settings.public_url, ticket_key(settings))

    def token(self, registration: Registration, session_ends_at: datetime) -> str:
        """A new participant token for ``registration`` (:func:`participant_token`): one Ed25519 signature."""
        return participant_token(self.issuer, registration, session_ends_at)

    def manage_url(self, registration_id: str, token: str) -> str:
        return manage_url(self.public_url, registration_id, token)

    def event_fields(self, registration: Registration, token: str) -> dict[str, Any]:
        """What a registration event carries for its participant: the link with ``token``, and the ticket
        code while the registration holds a seat (``None`` while waiting)."""
        return {
            "manage_url": self.manage_url(registration.id, token),
            "ticket_code": ticket_code(self.ticket_key, registration),
        }


def participant_token(issuer: TokenIssuer, registration: Registration, session_ends_at: datetime) -> str:
    """A signed participant token for ``registration`` (role ``participant``, subject the registration id),
    living until 30 days after the session ends (bounded, :func:`rules.participant_token_lifetime`)."""
    lifetime = rules.participant_token_lifetime(session_ends_at, datetime.now(UTC))
    return issuer.issue(Principal(registration.id, "", "participant"), lifetime_seconds=lifetime)


def manage_url(public_url: str, registration_id: str, token: str) -> str:
    """The participant's page for their registration, opened with their token."""
    return public_url.rstrip("/") + MANAGE_PATH.format(registration_id=registration_id, token=token)


# --- tickets and check-in ------------------------------------------------------------------------------


def ticket_key(settings: Settings) -> bytes:
    """The key that signs ticket codes, derived from the service's secret key (the same in every web
    process of the service, so a ticket shown by one is checked in by any other)."""
    return rules.ticket_key(load_secret_key(settings))


def ticket_code(key: bytes, registration: Registration) -> str | None:
    """The registration's check-in code while it holds a seat, else ``None`` (waiting or cancelled: no ticket)."""
    return rules.ticket_code(key, registration.id) if registration.status == "confirmed" else None


class InvalidTicket(RuleViolation):
    """The code is no ticket of Labinov's: mistyped, mangled, or forged (its signature does not match)."""

    slug = "invalid-ticket"


class CheckInRefused(DomainError):
    """A genuine ticket that cannot be checked in here; the status and slug come from the refusal
    (:data:`rules.CHECK_IN_REFUSALS`): 422 for another session's ticket, 409 for the rest."""

    def __init__(self, refusal: CheckInRefusal, checked_in_at: datetime | None = None) -> None:
        status, detail = rules.CHECK_IN_REFUSALS[refusal]
        super().__init__(detail, {"code": [detail]} if status == 422 else None)
        self.refusal = refusal
        self.status = status
        self.slug = refusal.value
        self.title = "The input breaks a rule" if status == 422 else "Conflicts with the current state"
        self.checked_in_at = checked_in_at


def check_in(
    uow: UnitOfWork, session_id: str, code: str, organiser: Principal, key: bytes, now: datetime | None = None
) -> tuple[CheckIn, Registration]:
    """Check the holder of ticket ``code`` in at session ``session_id``; the caller commits.

    Refusals: a code that is no signed ticket → :class:`InvalidTicket` (422); a ticket of another session
    (422), of a cancelled or waiting registration, for a cancelled session, or checked in before (409) →
    :class:`CheckInRefused`. Adds ``participant.checked_in`` to the same transaction.

    Concurrency: the ``check_ins`` primary key (the registration id) is the guard. Two organisers scanning
    one ticket at once both find no check-in row and both insert one; on PostgreSQL the second insert waits
    on the key until the first commits and then fails, on SQLite the second transaction waits for the write
    lock (``BEGIN IMMEDIATE``) and then sees the row — either way exactly one 201, and the other is told
    "already checked in" (409). The registration row is read ``FOR SHARE``, so a cancellation committing
    at the same moment (its ``UPDATE`` of the row needs the row) either happens wholly before — and the
    check-in sees ``cancelled`` — or waits until the check-in has committed. No deadlock: this takes one
    row lock, and its inserts only ``KEY SHARE`` the session row, which the session lock never blocks.
    """
    now = now or datetime.now(UTC)
    ticket = rules.read_ticket_code(code)
    if ticket is None:
        raise InvalidTicket(
            "This is not a ticket code: a code has 16 letters and digits, e.g. ABCD-EFGH-JKLM-NPQR.",
            {"code": ["Not a ticket code (16 letters and digits, e.g. ABCD-EFGH-JKLM-NPQR)."]},
        )
    lab_session = get_session(uow, session_id)
    prefix = ticket.id_prefix
    candidates = uow.session.scalars(
        select(Registration.id).where(
            Registration.id >= prefix, Registration.id < prefix + "g", Registration.id.like(prefix + "%")
        )
    ).all()
    registration_id = next((rid for rid in candidates if rules.ticket_belongs_to(key, ticket, rid)), None)
    if registration_id is None:
        raise InvalidTicket(
            "This ticket code is not valid: no ticket has it (check it was typed right).",
            {"code": ["No ticket has this code."]},
        )
    registration = uow.session.scalars(
        select(Registration)
        .where(Registration.id == registration_id)
        .with_for_update(read=True)
        .execution_options(populate_existing=True)
    ).one()
    earlier = uow.session.get(CheckIn, registration.id)
    refusal = rules.check_in_refusal(
        session_id, lab_session.state, registration.session_id, registration.status, earlier is not None
    )
    if refusal is not None:
        raise CheckInRefused(refusal, earlier.checked_in_at if earlier is not None else None)
    row = CheckIn(
        registration_id=registration.id,
        session_id=session_id,
        checked_in_at=now,
        checked_in_by=organiser.account_id,
        checked_in_by_name=organiser.name or organiser.email or None,
    )
    uow.session.add(row)
    try:
        uow.flush()
    except IntegrityError:
        raise CheckInRefused(CheckInRefusal.ALREADY_CHECKED_IN) from None
    uow.publish(
        "participant.checked_in",
        {
            "registration_id": registration.id,
            "session_id": session_id,
            "programme_id": lab_session.programme_id,
            "name": registration.name,
            "nip": registration.nip,
            "email": registration.email,
            "opd": registration.opd,
            "checked_in_at": now,
            "checked_in_by": organiser.account_id,
        },
        subject=registration.id,
    )
    return row, registration


def list_check_ins(
    uow: UnitOfWork, session_id: str, limit: int = 100, offset: int = 0
) -> list[tuple[CheckIn, Registration]]:
    """Who was checked in at the session, in the order they came."""
    get_session(uow, session_id)
    rows = uow.session.execute(
        select(CheckIn, Registration)
        .join(Registration, Registration.id == CheckIn.registration_id)
        .where(CheckIn.session_id == session_id)
        .order_by(CheckIn.checked_in_at, CheckIn.registration_id)
        .limit(limit)
        .offset(offset)
    ).all()
    return [(check_in_row, registration) for check_in_row, registration in rows]


def count_check_ins(uow: UnitOfWork, session_id: str) -> int:
    return int(uow.session.scalar(select(func.count()).where(CheckIn.session_id == session_id)) or 0)


def check_in_of(uow: UnitOfWork, registration_id: str) -> CheckIn | None:
    """The registration's check-in, if it came."""
    return uow.session.get(CheckIn, registration_id)


# --- bulk imports of an agency's CSV -------------------------------------------------------------------
#
# Where the work happens: every row is checked against the API's participant schema when the file is
# uploaded (so bad rows are reported at once, with line, field and reason), then each valid row is
# registered through :func:`register_participant` — the same rules, locks and events as a registration
# from the form — in a transaction of its own, so one import never holds the session row's lock for more
# than one registration and a rush of registrations from the pages goes on beside it.
#
# A file with at most :data:`INLINE_IMPORT_LINES` rows to register is registered during the upload request
# (the organiser sees the outcome at once); a larger one is left to the registration worker
# (``import_loop``), which registers :data:`IMPORT_BATCH` lines per claim. Both go through the job row as a
# work-queue row (``shared.workqueue``): the request creates the row already claimed by itself, the worker
# claims due rows with a lease. Every line's transaction first renews the lease with the claim's token, so
# only the current holder writes; a holder that dies leaves the rest of the lines to whoever claims the row
# after the lease. A line's outcome and the job's counters are written in the line's own transaction, so
# the progress is exact at every moment and no line is registered twice (a line is taken only while
# ``pending``). Re-importing a file registers nobody twice: the same NIP for the session is refused by the
# registrations' unique ``(session_id, nip)`` and reported as ``duplicate`` ("already registered").

#: Rows to register that an upload request registers itself; more go to the worker.
INLINE_IMPORT_LINES = 50
#: Lines the worker registers per claim of an import (then it gives the job back, so imports take turns).
IMPORT_BATCH = 50
IMPORT_LEASE = timedelta(minutes=2)
#: The job counter each line outcome adds to.
_OUTCOME_COUNTERS = {
    "confirmed": "confirmed",
    "waitlisted": "waitlisted",
    "duplicate": "duplicates",
    "invalid": "invalid",
    "refused": "refused",
}
#: Outcomes a person should look at in the report.
IMPORT_PROBLEM_OUTCOMES = ("invalid", "refused", "duplicate")


def import_queue(engine: Engine) -> WorkQueue:
    """The import jobs as a work queue: unfinished jobs, oldest first."""
    c = RegistrationImport.__table__.c
    return WorkQueue(
        engine,
        RegistrationImport.__table__,
        pending=(c.state != "finished",),
        due_at=c.not_before,
        order_by=(c.created_at,),
        lease=IMPORT_LEASE,
    )


def _problems_of(messages: Any) -> list[dict[str, str | None]]:
    """A schema's or rule's refusals as ``[{"field", "reason"}]``, one entry per field and reason."""
    if not isinstance(messages, dict):
        return [{"field": None, "reason": str(messages)}]
    problems: list[dict[str, str | None]] = []
    for name, reasons in messages.items():
        for reason in reasons if isinstance(reasons, list) else [reasons]:
            problems.append({"field": None if name == "_schema" else str(name), "reason": str(reason)})
    return problems


def create_import(
    uow: UnitOfWork,
    session_id: str,
    raw: bytes,
    filename: str | None,
    organiser: Principal,
    check_participant: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[RegistrationImport, str | None]:
    """Record an import of ``raw`` (an agency's CSV) into the session, every row checked by
    ``check_participant`` (the API's participant schema's ``load``: it raises marshmallow's
    ``ValidationError`` naming the fields); the caller commits.

    Returns the job and, for a small file, the claim token with which the caller registers it at once
    (:func:`work_on_import`); ``None`` leaves it to the worker. A file that cannot be read as a whole is a
    :class:`RuleViolation` naming ``file``.
    """
    lab_session = get_session(uow, session_id)
    questions = lab_session.questions or []
    try:
        sheet = rules.read_import_sheet(raw, {question["key"] for question in questions})
    except rules.UnreadableSheet as exc:
        raise RuleViolation(str(exc), {"file": [str(exc)]}) from None
    now = datetime.now(UTC)
    job = RegistrationImport(
        id=new_id(),
        session_id=lab_session.id,
        filename=(filename or "")[:200] or None,
        state="queued",
        total=len(sheet.rows),
        done=0,
        confirmed=0,
        waitlisted=0,
        duplicates=0,
        invalid=0,
        refused=0,
        created_by=organiser.account_id,
        created_at=now,
        not_before=utcnow(),
    )
    uow.session.add(job)
    uow.flush()
    to_register = 0
    for row in sheet.rows:
        line = RegistrationImportLine(
            import_id=job.id, line=row.line, name=row.fields.get("name", "")[:200], nip=row.fields.get("nip", "")[:40]
        )
        answers = rules.typed_answers(questions, row.answers)
        try:
            line.participant = check_participant({**row.fields, "answers": answers, "language": "id"})
            _stored_answers, answer_problems = rules.check_answers(questions, line.participant["answers"])
            if answer_problems:
                raise ValidationError(answer_problems)
            line.outcome = "pending"
            to_register += 1
        except ValidationError as error:
            line.participant = None
            line.outcome, line.problems = "invalid", _problems_of(error.messages)
            job.invalid += 1
            job.done += 1
        uow.session.add(line)
    held = None
    if to_register == 0:
        job.state, job.finished_at = "finished", now
    elif to_register <= INLINE_IMPORT_LINES:
        held = uuid.uuid4().hex
        job.state, job.claim_token, job.claimed_until = "running", held, utcnow() + IMPORT_LEASE
    uow.flush()
    return job, held


def work_on_import(
    unit_of_work: Callable[[], UnitOfWork],
    queue: WorkQueue,
    token: str,
    import_id: str,
    max_lines: int | None = None,
    *,
    links: ParticipantLinks | None = None,
) -> bool:
    """Register up to ``max_lines`` (all when ``None``) pending lines of an import held with ``token``, each
    in its own transaction (see the section's comment); finish the job when none is left. Returns whether
    the job is finished. Stops early, changing nothing more, once the claim is no longer ``token``'s.
    ``queue`` is :func:`import_queue` of the service's engine; ``links`` makes each registration's event
    carry its participant's link and ticket, as a registration from the form does."""
    with unit_of_work() as uow:
        job = uow.session.get(RegistrationImport, import_id)
        if job is None or job.claim_token != token:
            return False
        session_id = job.session_id
        query = (
            select(RegistrationImportLine.line, RegistrationImportLine.participant)
            .where(RegistrationImportLine.import_id == import_id, RegistrationImportLine.outcome == "pending")
            .order_by(RegistrationImportLine.line)
        )
        pending = uow.session.execute(query if max_lines is None else query.limit(max_lines)).all()
        if job.state == "queued":
            uow.session.execute(queue.guarded(token, [import_id]).values(state="running"))
            uow.commit()
    for line, participant in pending:
        if not _register_line(unit_of_work, queue, token, import_id, session_id, line, participant, links):
            return False
    with unit_of_work() as uow:
        left = uow.session.scalar(
            select(func.count()).where(
                RegistrationImportLine.import_id == import_id, RegistrationImportLine.outcome == "pending"
            )
        )
        if left:
            return False
        finished = queue.finish(token, [import_id], on=uow.session, state="finished", finished_at=datetime.now(UTC))
        uow.commit()
    return finished == 1


def _register_line(
    unit_of_work: Callable[[], UnitOfWork],
    queue: WorkQueue,
    token: str,
    import_id: str,
    session_id: str,
    line: int,
    participant: dict[str, Any],
    links: ParticipantLinks | None,
) -> bool:
    """Register one line, or record why not, with the job's counters, in one transaction; False if the
    claim was lost (nothing written). A refusal rolls the registration back and is recorded afresh."""
    with unit_of_work() as uow:
        if not queue.renew(token, import_id, on=uow.session):
            return False
        try:
            registration = register_participant(uow, session_id, _stored_participant(participant), links=links)
        except (RuleViolation, Conflict) as error:
            refusal = error
        else:
            _record_line(uow, import_id, line, registration.status, None, registration.id)
            uow.commit()
            return True
    with unit_of_work() as uow:  # the failed attempt's transaction is gone; record the refusal in a new one
        if not queue.renew(token, import_id, on=uow.session):
            return False
        if isinstance(refusal, Conflict) and refusal.errors and "nip" in refusal.errors:
            outcome, problems = "duplicate", [{"field": "nip", "reason": "Already registered for this session."}]
        elif isinstance(refusal, RuleViolation):
            outcome, problems = "invalid", _problems_of(refusal.errors or {"_schema": [refusal.detail]})
        else:
            outcome, problems = "refused", [{"field": None, "reason": refusal.detail}]
        _record_line(uow, import_id, line, outcome, problems, None)
        uow.commit()
    return True


def _stored_participant(participant: dict[str, Any]) -> dict[str, Any]:
    """A participant as stored in an import line (JSON): the fields :func:`register_participant` takes."""
    fields = ("name", "nip", "email", "phone", "opd", "job_title", "language", "answers")
    return {name: participant.get(name) for name in fields}


def _record_line(
    uow: UnitOfWork,
    import_id: str,
    line: int,
    outcome: str,
    problems: list[dict[str, str | None]] | None,
    registration_id: str | None,
) -> None:
    changed = uow.session.execute(
        update(RegistrationImportLine)
        .where(
            RegistrationImportLine.import_id == import_id,
            RegistrationImportLine.line == line,
            RegistrationImportLine.outcome == "pending",
        )
        .values(outcome=outcome, problems=problems, registration_id=registration_id)
    ).rowcount
    if changed:
        counter = getattr(RegistrationImport, _OUTCOME_COUNTERS[outcome])
        uow.session.execute(
            update(RegistrationImport)
            .where(RegistrationImport.id == import_id)
            .values({RegistrationImport.done: RegistrationImport.done + 1, counter: counter + 1})
        )


def run_due_imports(
    unit_of_work: Callable[[], UnitOfWork], engine: Engine, links: ParticipantLinks | None = None
) -> int:
    """The worker's turn: claim one due import, register a batch of its lines (their events carrying the
    participants' links made with ``links``), give it back unless finished. Returns how many imports it
    worked on (0: nothing due)."""
    queue = import_queue(engine)
    claim = queue.claim(1)
    for job in claim.rows:
        if not work_on_import(unit_of_work, queue, claim.token, job.id, IMPORT_BATCH, links=links):
            queue.release(claim.token, [job.id])
    return len(claim.rows)


def get_import(uow: UnitOfWork, session_id: str, import_id: str) -> RegistrationImport:
    job = uow.session.get(RegistrationImport, import_id)
    if job is None or job.session_id != session_id:
        raise NotFound(f"There is no import {import_id} for this session.")
    return job


def import_lines(
    uow: UnitOfWork, import_id: str, *, problems_only: bool = True, limit: int = 100, offset: int = 0
) -> list[RegistrationImportLine]:
    """An import's lines in file order: those a person should look at (``problems_only``), or all."""
    query = select(RegistrationImportLine).where(RegistrationImportLine.import_id == import_id)
    if problems_only:
        query = query.where(RegistrationImportLine.outcome.in_(IMPORT_PROBLEM_OUTCOMES))
    return list(uow.session.scalars(query.order_by(RegistrationImportLine.line).limit(limit).offset(offset)))


def list_imports(uow: UnitOfWork, session_id: str, limit: int = 20) -> list[RegistrationImport]:
    return list(
        uow.session.scalars(
            select(RegistrationImport)
            .where(RegistrationImport.session_id == session_id)
            .order_by(RegistrationImport.created_at.desc())
            .limit(limit)
        )
    )


# --- calendar entries ----------------------------------------------------------------------------------


def session_calendar(lab_session: LabSession, public_url: str, zone: tzinfo) -> bytes:
    """The session's ``.ics`` calendar entry (see :func:`rules.calendar_entry`)."""
    page = f"{public_url.rstrip('/')}/registration/sessions/{lab_session.id}"
    entry = rules.CalendarSession(
        session_id=lab_session.id,
        title=lab_session.title,
        starts_at=lab_session.starts_at,
        ends_at=lab_session.ends_at,
        location=lab_session.location,
        description=lab_session.description,
        online_url=lab_session.online_url,
        page_url=page,
        cancelled=lab_session.state == "cancelled",
    )
    return rules.calendar_entry(entry, zone, datetime.now(UTC))
