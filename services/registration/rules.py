"""Registration's decisions as pure functions: plain values in, plain values out (the functional core).

Nothing here touches a database, a request or the network, so every rule is unit-tested in milliseconds
(``tests/unit/test_registration_rules.py``); ``domain.py`` loads the state, asks these functions and writes
what they decided. An import-linter contract keeps SQLAlchemy, Flask, smtplib and kombu out of this module.

- **whether a session takes registrations now** — state, window, start (:func:`registration_refusal`);
- **the seat decision** — confirmed, waitlisted or refused, with the OPD quota (:func:`decide_seat`);
- **who is promoted** when a seat comes free (:func:`choose_promotion`);
- **what a caller may do with a registration** — organisers anything, a participant's token its own
  registration only, and only reading once it is cancelled (:func:`registration_access`);
- **how long a participant's link lives** (:func:`participant_token_lifetime`);
- **session changes worth telling registrants about** (:func:`notable_changes`);
- **the sign-in throttle** — may this attempt check a password, or wait how long (:func:`sign_in_verdict`);
- **participant data** — NIP, mobile number and e-mail rules;
- **accounts** — the roles an account may have;
- **tickets** — the signed check-in code of a registration, and reading a typed or scanned one back
  (:func:`ticket_code`, :func:`read_ticket_code`), and whether a ticket may be checked in
  (:func:`check_in_refusal`);
- **spreadsheets** — reading the CSV an agency sends for a bulk import (exports are written by
  :mod:`shared.spreadsheets`)
  (:func:`read_import_sheet`);
- **calendar entries** — a session as an iCalendar ``VEVENT`` (:func:`calendar_entry`);
- **the session's extra questions** — which definitions a session may have, which changes its organiser
  may make once people have registered (:func:`question_change_refusal`), and whether a registrant's answers
  fit them (:func:`check_answers`).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import ipaddress
import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from enum import StrEnum
from math import ceil
from typing import Any, NotRequired, TypedDict

import icalendar
import phonenumbers
from email_validator import EmailNotValidError, validate_email

# --- programmes and sessions ---------------------------------------------------------------------------

#: A programme's stages: LAN's "5D" and its documentation step, in the order they happen.
STAGES = ("drum-up", "diagnose", "design", "deliver", "display", "documentation")
#: A session's states; only a published one takes registrations.
SESSION_STATES = ("draft", "published", "cancelled")
#: What a registrant is told about a session that changes (the fields of ``session.changed``).
NOTABLE_FIELDS = ("starts_at", "ends_at", "location", "online_url")


@dataclass(frozen=True)
class SessionWindow:
    """What decides whether a session takes registrations at all (seats aside)."""

    state: str
    starts_at: datetime
    opens_at: datetime | None = None
    closes_at: datetime | None = None


def registration_refusal(session: SessionWindow, now: datetime) -> str | None:
    """Why the session takes no registration at ``now``, or ``None`` if it does.

    Only a published session takes registrations, from its window's opening (if it has one) until its
    closing — which is the session's start unless the organiser set another time.
    """
    if session.state == "draft":
        return "The session is not published yet."
    if session.state == "cancelled":
        return "The session has been cancelled."
    if session.opens_at is not None and now < session.opens_at:
        return f"Registration opens at {session.opens_at.isoformat()}."
    closes_at = session.closes_at or session.starts_at
    if now >= closes_at:
        if session.closes_at is None:
            return "The session has already started; registration is closed."
        return f"Registration closed at {closes_at.isoformat()}."
    return None


def opd_problem(opd: str, programme_opds: list[str] | None) -> str | None:
    """Why ``opd`` may not register for a session of a programme with these agencies, or ``None``."""
    if programme_opds is None or opd in programme_opds:
        return None
    return "Must be one of the programme's agencies (OPD): " + ", ".join(programme_opds) + "."


def notable_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The time and place fields that differ, each as ``{"old": ..., "new": ...}`` (registrants hear of them)."""
    return {
        name: {"old": before.get(name), "new": after.get(name)}
        for name in NOTABLE_FIELDS
        if name in after and before.get(name) != after.get(name)
    }


# --- seats ---------------------------------------------------------------------------------------------


class SeatOutcome(StrEnum):
    """Where a new registration stands; its value is the registration's status and names its event."""

    CONFIRMED = "confirmed"
    WAITLISTED = "waitlisted"
    REFUSED = "refused"  # full, and the session keeps no waiting list


@dataclass(frozen=True)
class SeatRequest:
    """Everything the seat decision looks at when someone registers for a lab session.

    The session's capacity and confirmed count; the registrant's agency's quota (``None``: no quota) and how
    many of its people are confirmed; whether the session keeps a waiting list. The domain reads these
    under the session row's lock, so the decision and its write are one step for every other registrant.
    """

    capacity: int
    confirmed: int
    opd_quota: int | None = None
    opd_confirmed: int = 0
    waitlist: bool = True


def decide_seat(request: SeatRequest) -> SeatOutcome:
    """Confirmed while the session and the registrant's agency both have a seat free; otherwise waitlisted,
    or refused when the session keeps no waiting list."""
    session_has_room = request.confirmed < request.capacity
    opd_has_room = request.opd_quota is None or request.opd_confirmed < request.opd_quota
    if session_has_room and opd_has_room:
        return SeatOutcome.CONFIRMED
    return SeatOutcome.WAITLISTED if request.waitlist else SeatOutcome.REFUSED


@dataclass(frozen=True)
class SeatCount:
    """A session's seats as people see them: its capacity, how many are confirmed, how many are left."""

    capacity: int
    confirmed: int

    @property
    def available(self) -> int:
        return max(self.capacity - self.confirmed, 0)


@dataclass(frozen=True)
class Waiting:
    """A registrant on the waiting list: who, of which agency, and their place in the order."""

    registration_id: str
    opd: str
    sequence: int


def choose_promotion(waiting: list[Waiting], opd_confirmed: dict[str, int], opd_quota: int | None) -> Waiting | None:
    """The first registrant in waiting-list order whose agency still has room under the quota, or ``None``.

    A seat that came free goes to the earliest registrant who fits: someone whose agency already holds its
    quota keeps their place (and is promoted once a seat of their own agency comes free).
    """
    for candidate in sorted(waiting, key=lambda w: w.sequence):
        if opd_quota is None or opd_confirmed.get(candidate.opd, 0) < opd_quota:
            return candidate
    return None


def seats_to_fill(capacity: int, confirmed: int, state: str, starts_at: datetime, now: datetime) -> int:
    """How many waiting registrants to promote now: the free seats, while the session has not started and
    is not cancelled (a seat freed during or after the session is no use to anyone)."""
    if state == "cancelled" or now >= starts_at:
        return 0
    return max(capacity - confirmed, 0)


# --- participants' links -------------------------------------------------------------------------------

#: The participant's link works until this long after the session ends...
PARTICIPANT_LINK_AFTER_SESSION = timedelta(days=30)
#: ...but never longer than this from when it was made, nor shorter than a day.
PARTICIPANT_LINK_LONGEST = timedelta(days=400)
PARTICIPANT_LINK_SHORTEST = timedelta(days=1)


def participant_token_lifetime(session_ends_at: datetime, now: datetime) -> int:
    """Seconds a participant's token lives: until 30 days after the session ends, within [1 day, 400 days].

    The upper bound is also every verifier's maximum for the ``participant`` role (``shared.tokens``), so a
    link can never open anything longer than that, whoever signed it.
    """
    wanted = session_ends_at + PARTICIPANT_LINK_AFTER_SESSION - now
    return int(min(max(wanted, PARTICIPANT_LINK_SHORTEST), PARTICIPANT_LINK_LONGEST).total_seconds())


class Access(StrEnum):
    """What a caller may do with one registration."""

    FULL = "full"  # read everything, cancel
    STATUS_ONLY = "status-only"  # read that it is cancelled, nothing more
    FORBIDDEN = "forbidden"


class RegistrationAction(StrEnum):
    READ = "read"
    CANCEL = "cancel"


def registration_access(
    role: str, subject: str, registration_id: str, status: str | None, action: RegistrationAction
) -> tuple[Access, str | None]:
    """May a caller with ``role`` (token subject ``subject``) do ``action`` on this registration? With why not.

    Organisers may do anything with any registration. A participant's token opens only the registration it
    was issued for (its subject): another registration's id is refused *before* anything is looked up, so the
    answer (403) is the same whether that registration exists or not. Once the registration is cancelled, its
    token only reads that it is cancelled. ``status`` may be ``None`` when not loaded yet (checked again later).
    """
    if role == "organiser":
        return Access.FULL, None
    if role != "participant":
        return Access.FORBIDDEN, f"A {role} may not see registrations."
    if subject != registration_id:
        return Access.FORBIDDEN, "This link belongs to another registration."
    if status == "cancelled":
        if action is RegistrationAction.READ:
            return Access.STATUS_ONLY, None
        return Access.FORBIDDEN, "This registration is cancelled; its link now only shows that."
    return Access.FULL, None


# --- the sign-in throttle ------------------------------------------------------------------------------

#: Attempts for one account from one client per window; after them that client waits for that account.
SIGN_IN_ATTEMPTS = 5
#: Attempts from one client per window, across every e-mail address it tries.
SIGN_IN_ATTEMPTS_PER_CLIENT = 20
#: How long a window lasts; it starts at the first attempt that finds no current window.
SIGN_IN_WINDOW = timedelta(minutes=15)


class ThrottleScope(StrEnum):
    """Which counter an attempt is counted on (the ``scope`` column of ``login_attempts``)."""

    ACCOUNT_FROM_CLIENT = "account-client"
    CLIENT = "client"


#: The limit of each counter.
SIGN_IN_LIMITS: dict[ThrottleScope, int] = {
    ThrottleScope.ACCOUNT_FROM_CLIENT: SIGN_IN_ATTEMPTS,
    ThrottleScope.CLIENT: SIGN_IN_ATTEMPTS_PER_CLIENT,
}


@dataclass(frozen=True)
class AttemptWindow:
    """One counter after this attempt was counted: attempts in the window (this one included), its start."""

    attempts: int
    started_at: datetime


@dataclass(frozen=True)
class SignInVerdict:
    """Whether an attempt may check its password; if not, which counter refused it and for how long."""

    allowed: bool
    retry_after_seconds: int = 0
    refused_by: ThrottleScope | None = None


def sign_in_verdict(counters: dict[ThrottleScope, AttemptWindow], now: datetime) -> SignInVerdict:
    """Allow the attempt while every counter is within its limit; else refuse until the last full one ends.

    Why these counters (the lockout a black-box probe found): a limit per e-mail address alone let anyone
    lock the owner out with six wrong passwords, and never noticed one client guessing across many
    addresses. So attempts are counted per *(account, client)* — a stranger's guesses fill the stranger's
    own counter, never the owner's — and per *client* across all addresses. There is deliberately no
    refusing limit per account across all clients: a fresh address of a distributed attacker and the
    owner's own are indistinguishable, so any such limit is exactly the lockout above. The per-client limit
    already makes every guess at one account cost a client address per :data:`SIGN_IN_ATTEMPTS`, each
    guess runs argon2 against a password of at least :data:`MIN_PASSWORD_LENGTH` characters, and a botnet
    is the gateway's (or a second factor's) problem, not a counter's.

    A counter whose window has ended refuses nothing (the database starts a new window on the next attempt).
    """
    waits = [
        (window.started_at + SIGN_IN_WINDOW - now, scope)
        for scope, window in counters.items()
        if window.attempts > SIGN_IN_LIMITS[scope] and window.started_at + SIGN_IN_WINDOW > now
    ]
    if not waits:
        return SignInVerdict(allowed=True)
    longest, refused_by = max(waits)
    return SignInVerdict(False, max(ceil(longest.total_seconds()), 1), refused_by)


def client_key(address: str | None) -> str:
    """The client an attempt is counted against: its IP address, written one way only.

    IPv4 addresses (also IPv4-mapped IPv6) count as themselves; an IPv6 address counts as its /64 network,
    because one subscriber usually holds a whole /64 and could otherwise take a fresh address per guess.
    Anything unparsable counts as its own (bounded) text.
    """
    text = (address or "").strip()
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


# --- accounts ------------------------------------------------------------------------------------------

#: The roles an organiser or evaluator account may have (participants have no account).
ACCOUNT_ROLES = ("organiser", "evaluator")
MIN_PASSWORD_LENGTH = 10


# --- participant data ----------------------------------------------------------------------------------

#: Exactly 18 ASCII digits. Not ``\d``: it also matches Arabic-Indic, fullwidth, Devanagari and other
#: digits, so one NIP written in other digits would pass the duplicate rule as a different NIP.
_NIP = re.compile(r"[0-9]{18}")


def nip_problem(nip: str) -> str | None:
    """Why ``nip`` is not a valid NIP, or ``None``.

    A NIP has 18 digits 0-9: birth date YYYYMMDD, appointment YYYYMM, sex digit (1 male, 2 female), and a
    3-digit sequence number. Other scripts' digits are refused rather than converted: the NIP is an
    identifier people copy from their papers, and one spelling per NIP keeps the duplicate rule exact.
    """
    if not _NIP.fullmatch(nip or ""):
        return "NIP must be exactly 18 digits 0-9."
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
    """The address in its normalised form (the domain lower-cased); raises ``ValueError`` with the reason."""
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


# --- tickets -------------------------------------------------------------------------------------------
#
# A ticket's check-in code is 10 bytes written as 16 base32 letters in four groups (``ABCD-EFGH-JKLM-NPQR``):
# short enough to type from a phone screen or a printout, and a QR code of it is small (the letters, digits
# and ``-`` are the QR alphanumeric set). The bytes are the first 4 bytes of the registration id (so the
# code finds its registration with one indexed lookup, without a stored code) followed by the first 6 bytes
# of an HMAC-SHA256 of the whole registration id under a key derived from the service's secret key. Without
# the key nobody can make a code for a registration (one guess in 2**48 is right), and a code belongs to one
# registration only; two registrations that share the 4-byte prefix are told apart by the MAC.

#: Bytes of the registration id at the start of a code, and of the MAC after it.
TICKET_ID_BYTES = 4
TICKET_MAC_BYTES = 6
_TICKET_LETTERS = 16
_TICKET_KEY_PURPOSE = b"labinov registration ticket codes v1"
#: Letters people (and phone keyboards) type for the base32 letters they look like.
_LOOK_ALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})
_BASE32 = re.compile(r"[A-Z2-7]{16}")


def ticket_key(service_secret: bytes) -> bytes:
    """The key of ticket codes, derived from the service's secret key (never the secret itself, so a code
    reveals nothing about the key that signs the page sessions)."""
    return hmac.new(service_secret, _TICKET_KEY_PURPOSE, hashlib.sha256).digest()


def _ticket_mac(key: bytes, registration_id: str) -> bytes:
    return hmac.new(key, registration_id.encode(), hashlib.sha256).digest()[:TICKET_MAC_BYTES]


def ticket_code(key: bytes, registration_id: str) -> str:
    """The check-in code of registration ``registration_id`` (a UUID), e.g. ``"ABCD-EFGH-JKLM-NPQR"``."""
    prefix = bytes.fromhex(registration_id.replace("-", "")[: TICKET_ID_BYTES * 2])
    letters = base64.b32encode(prefix + _ticket_mac(key, registration_id)).decode()
    return "-".join(letters[i : i + 4] for i in range(0, _TICKET_LETTERS, 4))


@dataclass(frozen=True)
class TypedTicket:
    """A code as typed or scanned, read back: the registration-id prefix to look up, and the whole code."""

    id_prefix: str  # the first 8 hex digits of the registration id
    code: str  # normalised: ``ABCD-EFGH-JKLM-NPQR``


def read_ticket_code(typed: str) -> TypedTicket | None:
    """The code in what someone typed or a camera scanned (any case, spaces or dashes, 0/1/8 for O/I/B), or
    ``None`` if it cannot be a ticket code. Whether it is *signed* is :func:`ticket_belongs_to`'s question."""
    letters = re.sub(r"[\s\-]", "", typed or "").upper().translate(_LOOK_ALIKES)
    if not _BASE32.fullmatch(letters):
        return None
    raw = base64.b32decode(letters)
    return TypedTicket(raw[:TICKET_ID_BYTES].hex(), "-".join(letters[i : i + 4] for i in range(0, 16, 4)))


def ticket_belongs_to(key: bytes, ticket: TypedTicket, registration_id: str) -> bool:
    """Whether ``ticket`` is the signed code of ``registration_id`` (compared in constant time)."""
    return hmac.compare_digest(ticket_code(key, registration_id), ticket.code)


class CheckInRefusal(StrEnum):
    """Why a real ticket cannot be checked in at this session; the value is the problem's type slug."""

    ANOTHER_SESSION = "ticket-for-another-session"  # 422: the code is not a ticket of this session
    CANCELLED = "ticket-cancelled"  # 409
    WAITLISTED = "ticket-waitlisted"  # 409: no seat, so no ticket yet
    ALREADY_CHECKED_IN = "already-checked-in"  # 409
    SESSION_CANCELLED = "session-cancelled"  # 409


#: What each refusal tells the organiser at the door, and its HTTP status.
CHECK_IN_REFUSALS: dict[CheckInRefusal, tuple[int, str]] = {
    CheckInRefusal.ANOTHER_SESSION: (422, "This ticket is for another session."),
    CheckInRefusal.CANCELLED: (409, "This registration was cancelled; its ticket is no longer valid."),
    CheckInRefusal.WAITLISTED: (409, "This registrant is on the waiting list and holds no seat yet."),
    CheckInRefusal.ALREADY_CHECKED_IN: (409, "This ticket was already checked in."),
    CheckInRefusal.SESSION_CANCELLED: (409, "The session has been cancelled."),
}


def check_in_refusal(
    session_id: str, session_state: str, ticket_session_id: str, ticket_status: str, already_checked_in: bool
) -> CheckInRefusal | None:
    """Why the registration behind a genuine ticket may not be checked in at session ``session_id``, or
    ``None`` if it may. Checked in this order, so the organiser hears the most useful reason first: a
    ticket of another session, a cancelled session, a cancelled or waiting registration, a second scan."""
    if ticket_session_id != session_id:
        return CheckInRefusal.ANOTHER_SESSION
    if session_state == "cancelled":
        return CheckInRefusal.SESSION_CANCELLED
    if ticket_status == "cancelled":
        return CheckInRefusal.CANCELLED
    if ticket_status == "waitlisted":
        return CheckInRefusal.WAITLISTED
    if already_checked_in:
        return CheckInRefusal.ALREADY_CHECKED_IN
    return None


#: Header names an agency's sheet may use for each registration field (compared lower-cased, trimmed).
IMPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("name", "full name", "nama", "nama lengkap"),
    "nip": ("nip",),
    "email": ("email", "e-mail", "surel", "alamat e-mail", "alamat email"),
    "phone": ("phone", "mobile", "mobile number", "ponsel", "nomor ponsel", "no hp", "no. hp", "hp", "telepon"),
    "opd": ("opd", "agency", "perangkat daerah", "perangkat daerah (opd)", "instansi", "unit kerja"),
    "job_title": ("job_title", "job title", "position", "jabatan"),
}
#: The columns a sheet must have; ``job_title`` may be missing.
REQUIRED_IMPORT_COLUMNS = ("name", "nip", "email", "phone", "opd")
#: The most rows one import takes (a whole province's civil servants would be several files).
MAX_IMPORT_ROWS = 20_000


class UnreadableSheet(ValueError):
    """The file as a whole cannot be imported (not text, no header, a required column missing)."""


@dataclass(frozen=True)
class SheetRow:
    """One data row of an import: the line it starts on in the file (the header is line 1), and its
    registration fields by the API's names (blank cells left out, so a required one is "missing")."""

    line: int
    fields: dict[str, str]
    answers: dict[str, str] = field(default_factory=dict)  # cells of the columns named after question keys


@dataclass(frozen=True)
class ImportSheet:
    rows: list[SheetRow]
    ignored_columns: list[str] = field(default_factory=list)


def _decode_sheet(raw: bytes) -> str:
    """UTF-8 (with or without the BOM spreadsheets write), else Windows-1252, which Excel's plain "CSV"
    saves in; a file that is neither (a spreadsheet's binary format) is refused."""
    if b"\x00" in raw[:4096]:
        raise UnreadableSheet("The file is not a CSV text file (save the sheet as CSV UTF-8).")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def read_import_sheet(raw: bytes, answer_columns: Collection[str] = ()) -> ImportSheet:
    """The rows of the CSV an agency sends: comma- or semicolon-separated (Excel in Indonesian locales
    writes ``;``), headers in Indonesian or English (:data:`IMPORT_COLUMNS`), blank lines skipped. A column
    named after one of ``answer_columns`` (the session's question keys) is read as that question's answer.

    Raises :class:`UnreadableSheet` with a sentence when the file as a whole cannot be imported; a row with
    wrong values is *not* refused here — each row is checked by the registration rules, line by line.
    """
    text = _decode_sheet(raw)
    first_line = text.split("\n", 1)[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise UnreadableSheet("The file is empty.") from None
    except csv.Error as exc:
        raise UnreadableSheet(f"The file is not a readable CSV: {exc}.") from None
    names = {alias: name for name, aliases in IMPORT_COLUMNS.items() for alias in aliases}
    columns = [names.get(cell.strip().lower()) for cell in header]
    missing = [name for name in REQUIRED_IMPORT_COLUMNS if name not in columns]
    if missing:
        raise UnreadableSheet(
            "The first line must name the columns; missing: " + ", ".join(missing) + " "
            "(accepted names: " + "; ".join(f"{n}: {', '.join(IMPORT_COLUMNS[n])}" for n in missing) + ")."
        )
    answer_keys = [cell.strip().lower() if cell.strip().lower() in answer_columns else None for cell in header]
    ignored = [
        cell.strip()
        for cell, name, key in zip(header, columns, answer_keys, strict=False)
        if name is None and key is None and cell.strip()
    ]
    rows: list[SheetRow] = []
    next_line = reader.line_num + 1
    try:
        for cells in reader:
            line, next_line = next_line, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if len(rows) >= MAX_IMPORT_ROWS:
                raise UnreadableSheet(f"The file has more than {MAX_IMPORT_ROWS} rows; split it into several files.")
            values = {
                name: cell.strip()
                for name, cell in zip(columns, cells, strict=False)
                if name is not None and cell.strip()
            }
            answers = {
                key: cell.strip()
                for key, cell in zip(answer_keys, cells, strict=False)
                if key is not None and cell.strip()
            }
            rows.append(SheetRow(line, values, answers))
    except csv.Error as exc:
        raise UnreadableSheet(f"Line {next_line} is not readable CSV: {exc}.") from None
    return ImportSheet(rows, ignored)


def import_progress(total: int, done: int) -> float:
    """How far an import is, from 0.0 to 1.0 (an empty import is done)."""
    return 1.0 if total == 0 else round(min(done, total) / total, 4)


# --- calendar entries ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalendarSession:
    """What a calendar entry says about a session."""

    session_id: str
    title: str
    starts_at: datetime
    ends_at: datetime
    location: str
    description: str | None
    online_url: str | None
    page_url: str
    cancelled: bool = False


def calendar_entry(session: CalendarSession, zone: tzinfo, stamp: datetime) -> bytes:
    """The session as an iCalendar file with one ``VEVENT`` (RFC 5545).

    The ``UID`` is the session id, so a calendar that imports the file again (after a change) updates the
    entry instead of adding a second one; the times are written in the programme's time zone with its
    ``VTIMEZONE``, so a phone shows the local hour; a cancelled session says ``STATUS:CANCELLED``.
    """
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//Labinov//Registration//ID")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    event = icalendar.Event()
    event.add("uid", f"{session.session_id}@labinov")
    event.add("dtstamp", stamp)
    event.add("dtstart", session.starts_at.astimezone(zone))
    event.add("dtend", session.ends_at.astimezone(zone))
    event.add("summary", session.title)
    event.add("location", session.location)
    lines = [session.description or ""]
    if session.online_url:
        lines.append(f"Online: {session.online_url}")
    lines.append(session.page_url)
    event.add("description", "\n\n".join(line for line in lines if line))
    event.add("url", session.online_url or session.page_url)
    event.add("status", "CANCELLED" if session.cancelled else "CONFIRMED")
    calendar.add_component(event)
    calendar.add_missing_timezones()
    return calendar.to_ical()


# --- the session's extra questions ---------------------------------------------------------------------
#
# An organiser may ask registrants a few questions of their own (T-shirt size, dietary needs, "will you bring
# a laptop?"). The definitions are stored on the session row as JSON (``lab_sessions.questions``), so the
# statement that locks the session for a registration reads them too and checking the answers costs no
# statement; the answers are stored on the registration row (``registrations.answers``), written by the
# same INSERT as the registration itself.

#: The kinds of question: free text, one of the organiser's choices, or yes/no.
QUESTION_KINDS = ("text", "choice", "yes-no")
#: The most questions one session may ask, and choices one question may offer.
MAX_QUESTIONS = 20
MAX_CHOICES = 50
#: A text answer's length limit when the organiser sets none, and the largest they may set.
DEFAULT_TEXT_LENGTH = 500
LONGEST_TEXT_LENGTH = 5000
#: A question's key: a short slug (it names the answer in the API, the CSV column and the import column).
QUESTION_KEY = re.compile(r"[a-z][a-z0-9_-]{0,39}")
#: Keys a question may not have: the registration's own fields and columns, and every header an import
#: reads as a registration field (a question ``nip`` would be ambiguous in an export and in an import).
RESERVED_QUESTION_KEYS = frozenset(
    {
        *(alias for aliases in IMPORT_COLUMNS.values() for alias in aliases),
        *IMPORT_COLUMNS,
        "id",
        "session_id",
        "status",
        "position",
        "language",
        "created_at",
        "cancelled_at",
        "answers",
        "ticket_code",
        "checked_in_at",
    }
)


class Question(TypedDict):
    """One question as stored on the session (the API's ``questions`` items): ``choices`` only for a
    ``choice`` question, ``max_length`` only for a ``text`` one."""

    key: str
    label: str
    kind: str
    required: bool
    choices: NotRequired[list[str]]
    max_length: NotRequired[int]


def question_definition_problems(questions: Sequence[Question]) -> list[str]:
    """Why this list of (individually valid) questions may not be a session's, or ``[]``: too many, or
    a key used twice. Each question's own fields are the schema's to check."""
    problems = []
    if len(questions) > MAX_QUESTIONS:
        problems.append(f"A session asks at most {MAX_QUESTIONS} questions.")
    seen: set[str] = set()
    for question in questions:
        if question["key"] in seen:
            problems.append(f"The key {question['key']} is used by two questions; each needs its own.")
        seen.add(question["key"])
    return problems


def question_change_refusal(before: Sequence[Question], after: Sequence[Question], registered: bool) -> str | None:
    """Why the session's questions may not change from ``before`` to ``after``, or ``None``.

    Before anyone has registered, the organiser may change anything. Once someone has (``registered``:
    any registration, cancelled ones too, since their answers stay on record), a change may not make a stored
    answer lost, meaningless or incomplete. So it may relabel and reorder questions, add *optional* ones,
    add choices, make a required question optional and allow longer text — and may not remove a question,
    add a required one, make one required, change a question's kind, drop a choice or shorten the limit.
    """
    if not registered:
        return None
    old = {question["key"]: question for question in before}
    new = {question["key"]: question for question in after}
    for key in old.keys() - new.keys():
        return f"People have registered: the question {key} cannot be removed (their answers would be lost)."
    for key, question in new.items():
        if key not in old:
            if question["required"]:
                return (
                    f"People have registered: the new question {key} must be optional "
                    "(those already registered have not answered it)."
                )
            continue
        was = old[key]
        if question["kind"] != was["kind"]:
            return (
                f"People have registered: the question {key} cannot change its kind "
                "(the answers given would no longer fit)."
            )
        if question["required"] and not was["required"]:
            return f"People have registered: the question {key} cannot become required (some have not answered it)."
        dropped = [choice for choice in was.get("choices", []) if choice not in question.get("choices", [])]
        if dropped:
            return (
                f"People have registered: the question {key} must keep its choices "
                f"({', '.join(dropped)} may have been chosen)."
            )
        if question.get("max_length", 0) < was.get("max_length", 0):
            return f"People have registered: the question {key} cannot allow shorter answers than before."
    return None


#: Control characters a text answer may not hold; a line break (``\n``) is allowed.
_ANSWER_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
#: The refusals of :func:`check_answers` (the pages translate them).
ANSWER_REQUIRED = "This question must be answered."
ANSWER_UNKNOWN = "The session asks no such question."
ANSWER_NOT_TEXT = "Must be text."
ANSWER_CONTROL_CHARACTERS = "Must be text without control characters (line breaks are allowed)."
ANSWER_NOT_YES_NO = "Must be yes or no (true or false)."


def check_answers(
    questions: Sequence[Question], answers: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """A registrant's answers to the session's questions, checked: ``(answers as stored, problems)``.

    ``problems`` names each refused answer as ``answers.<key>`` with its rule, and is empty when the
    answers may be stored. Text is trimmed (a blank answer counts as no answer), may span lines (``\n``;
    ``\r\n`` is made ``\n``) but hold no other control character, and is at most the question's
    ``max_length``; a choice is exactly one of the question's choices; a yes/no answer is a boolean. A
    required question must be answered; a key the session does not ask is refused. Unanswered optional
    questions are left out of what is stored.
    """
    stored: dict[str, Any] = {}
    problems: dict[str, list[str]] = {}
    asked = {question["key"]: question for question in questions}
    for key in answers:
        if key not in asked:
            problems[f"answers.{key}"] = [ANSWER_UNKNOWN]
    for key, question in asked.items():
        value = answers.get(key)
        if isinstance(value, str):
            value = value.replace("\r\n", "\n").strip()
            if value == "":
                value = None
        if value is None:
            if question["required"]:
                problems[f"answers.{key}"] = [ANSWER_REQUIRED]
            continue
        problem = _answer_problem(question, value)
        if problem:
            problems[f"answers.{key}"] = [problem]
        else:
            stored[key] = value
    return stored, problems


def _answer_problem(question: Question, value: Any) -> str | None:
    if question["kind"] == "yes-no":
        return None if isinstance(value, bool) else ANSWER_NOT_YES_NO
    if not isinstance(value, str):
        return ANSWER_NOT_TEXT
    if question["kind"] == "choice":
        choices = question.get("choices", [])
        return None if value in choices else "Must be one of: " + ", ".join(choices) + "."
    if _ANSWER_CONTROLS.search(value):
        return ANSWER_CONTROL_CHARACTERS
    longest = question.get("max_length", DEFAULT_TEXT_LENGTH)
    return f"Longer than maximum length {longest}." if len(value) > longest else None


#: How people write yes and no in a sheet or a form (compared lower-cased, trimmed).
_YES = frozenset({"yes", "y", "ya", "true", "1", "iya", "benar"})
_NO = frozenset({"no", "n", "tidak", "tdk", "false", "0", "bukan"})


def read_yes_no(text: str) -> bool | str:
    """A yes/no answer typed in a sheet or sent by a form (``ya``/``tidak``, ``yes``/``no``, ``1``/``0``…)
    as a boolean; anything else is returned unchanged, for :func:`check_answers` to refuse."""
    word = text.strip().lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    return text


def typed_answers(questions: Sequence[Question], typed: dict[str, str]) -> dict[str, Any]:
    """Answers typed as text (a form, an imported sheet) as the API takes them: yes/no read as booleans
    (:func:`read_yes_no`), blanks left out. Keys the session does not ask stay (they are refused later)."""
    kinds = {question["key"]: question["kind"] for question in questions}
    answers: dict[str, Any] = {}
    for key, text in typed.items():
        if not text.strip():
            continue
        answers[key] = read_yes_no(text) if kinds.get(key) == "yes-no" else text
    return answers


def answer_cell(value: Any) -> str:
    """An answer as a spreadsheet cell: ``yes``/``no`` for a yes/no answer, blank when unanswered."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)


def question_key_from(label: str, taken: Collection[str]) -> str:
    """A key for a question the organiser wrote on the page without one: its label as a slug (accents
    dropped, at most 40 characters), kept clear of ``taken`` keys and of the reserved names by a number."""
    folded = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:32].strip("-")
    if not slug or not slug[0].isalpha():
        slug = ("q-" + slug).strip("-")
    key, number = slug, 2
    while key in taken or key in RESERVED_QUESTION_KEYS:
        key, number = f"{slug}-{number}", number + 1
    return key


def programme_label(name: str, year: int) -> str:
    """How a programme is named to people: its name, and its year unless the name already says it
    ("Laboratorium Inovasi Kaltara 2027", not "… 2027 2027")."""
    return name if str(year) in name else f"{name} {year}"
