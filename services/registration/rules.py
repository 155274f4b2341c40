"""Registration's decisions as pure functions: plain values in, plain values out (the functional core).

Nothing here touches a database, a request or the network, so every rule is unit-tested in milliseconds
(``tests/unit/test_registration_rules.py``); ``domain.py`` loads the state, asks these functions and writes
what they decided. An import-linter contract keeps SQLAlchemy, Flask, smtplib and kombu out of this module.

- **the seat decision** — confirmed or waitlisted (:func:`decide_seat`);
- **the sign-in throttle** — may this attempt check a password, or wait how long (:func:`sign_in_verdict`);
- **participant data** — NIP, mobile number and e-mail rules;
- **accounts** — the roles an account may have.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from math import ceil

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# --- seats ---------------------------------------------------------------------------------------------


class SeatOutcome(StrEnum):
    """Where a new registration stands; its value is the registration's status and names its event."""

    CONFIRMED = "confirmed"
    WAITLISTED = "waitlisted"


@dataclass(frozen=True)
class SeatRequest:
    """Everything the seat decision looks at when someone registers for a lab session.

    Today that is the session's capacity and how many registrations it has confirmed. Later rules (a
    per-OPD quota, a switch that closes the waiting list, a registration window) arrive as further fields
    with defaults that keep today's answer, so existing callers stay valid.
    """

    capacity: int
    confirmed: int


def decide_seat(request: SeatRequest) -> SeatOutcome:
    """Confirmed while a seat is free, otherwise waitlisted."""
    return SeatOutcome.CONFIRMED if request.confirmed < request.capacity else SeatOutcome.WAITLISTED


@dataclass(frozen=True)
class SeatCount:
    """A session's seats as people see them: its capacity, how many are confirmed, how many are left."""

    capacity: int
    confirmed: int

    @property
    def available(self) -> int:
        return max(self.capacity - self.confirmed, 0)


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
