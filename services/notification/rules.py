"""What happens to a delivery after a send failed: the mail sender's retry policy as plain values.

The sender (:func:`services.notification.sending.send_due_mail`) turns what went wrong into a
:class:`SendFailure` (the SMTP reply codes and exception types are :mod:`services.notification.mail`'s
business) and asks :func:`after_failed_send`; it then writes the answer. Nothing here touches a database,
a server or the clock, so every branch is tested in milliseconds (``tests/unit/test_send_failure_rules.py``).

The policy:

* A mail the server **refused** (or that could not even be composed) is that mail's fault: it costs its
  delivery one attempt and is retried later (:data:`SEND_RETRY`: 15 s, 45 s, 2¼ min … 1 h). The
  connection goes on with the next mail.
* A **mail server that is away** — the connection could not be opened, or the server answered 421 (closing
  the channel) — is no mail's fault: the deliveries wait without losing an attempt, as long again as they
  have waited so far (:data:`SERVER_WAIT`: 30 s … 10 min), however long the outage lasts.
* A connection that **broke while a mail was in flight** may have been broken by that mail (a server that
  crashes on it): that mail pays one attempt, like a refusal, so a mail that kills the server every time
  still ends; the mails behind it in the batch wait for the server like any outage.
* A recipient address the server **refused for good** (a 5xx reply to ``RCPT TO``: no such mailbox) will
  not exist tomorrow either: the delivery fails at once, without a retry.
* A delivery fails for good after :data:`MAX_SEND_ATTEMPTS` charged attempts, or at its first failure
  once it is older than :data:`MAX_DELIVERY_AGE` (mail that is two days late is no longer worth sending).
* Retries of refused mail are spread with jitter when the sender asks for it (``jitter=equal_jitter``): an
  announcement's thousand mails refused together by a busy server must not come back in lockstep.

The same module holds the service's other decisions: the hourly cap on mail from public causes
(:func:`within_hourly_cap`), the fixed placeholders organisers may write in an announcement
(:func:`unknown_placeholders`, :func:`fill_placeholders`), and those of the other channels — what an SMS/WhatsApp
gateway's answer means (:func:`gateway_failure_of`, :func:`after_gateway_failure`: 429 and ``Retry-After``
obeyed without charging an attempt, 5xx and timeouts retried with jittered backoff, any other 4xx failed at
once), the token bucket of a channel's rate (:func:`take_token`), Standard Webhooks keys and signatures
(:func:`new_webhook_secret`, :func:`webhook_signature`), a webhook's retries and when its endpoint is switched
off (:func:`after_webhook_failure`, :func:`webhook_disable_reason`), and which addresses a webhook may reach
(:func:`refused_address`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from shared.backoff import Backoff, Jitter, no_jitter

MAX_SEND_ATTEMPTS = 6  # charged attempts (refusals, broken sends) before a delivery fails
MAX_DELIVERY_AGE = timedelta(hours=48)  # a delivery still not out after this fails at its next failure
#: After the n-th charged attempt: 15 s, 45 s, 135 s ... at most an hour.
SEND_RETRY = Backoff(base=timedelta(seconds=15), factor=3, cap=timedelta(hours=1))
#: While the server is away: as long again as the delivery has waited so far, within 30 s and 10 minutes.
SERVER_WAIT = Backoff(base=timedelta(seconds=30), factor=2, cap=timedelta(minutes=10))


class SendFailure(Enum):
    """What went wrong with one send, in the policy's terms."""

    #: The server refused this one mail, or it could not be composed; the connection goes on.
    MAIL_REFUSED = "mail refused"
    #: No connection could be opened, or the server is closing it (421); no mail's fault.
    SERVER_UNAVAILABLE = "server unavailable"
    #: The connection broke while this mail was in flight; it may be the cause.
    BROKEN_IN_FLIGHT = "broken in flight"
    #: The server refused the recipient for good (5xx to RCPT TO); the connection goes on.
    PERMANENTLY_REFUSED = "permanently refused"

    @property
    def connection_lost(self) -> bool:
        """Whether the connection is over: the mails behind this one wait as :attr:`SERVER_UNAVAILABLE`."""
        return self not in (SendFailure.MAIL_REFUSED, SendFailure.PERMANENTLY_REFUSED)

    @property
    def charges_an_attempt(self) -> bool:
        return self is not SendFailure.SERVER_UNAVAILABLE


class FailReason(Enum):
    TOO_MANY_ATTEMPTS = "too many attempts"
    TOO_OLD = "too old"
    REFUSED = "address refused"


@dataclass(frozen=True)
class RetryAt:
    """Send again at ``at``; the delivery has now used ``attempts``."""

    at: datetime
    attempts: int


@dataclass(frozen=True)
class WaitForServer:
    """The server is away: try again at ``at``, with no attempt charged."""

    at: datetime


@dataclass(frozen=True)
class Fail:
    """The delivery fails for good, for ``reason``, having used ``attempts``."""

    reason: FailReason
    attempts: int


SendDecision = RetryAt | WaitForServer | Fail


def after_failed_send(
    failure: SendFailure,
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    jitter: Jitter = no_jitter,
    source: random.Random | None = None,
) -> SendDecision:
    """The next step for a delivery whose send failed with ``failure``.

    ``attempts`` is how many it had used before this send; ``created_at`` and ``now`` are in one time zone
    (both aware, or both naive UTC), and so is the time returned. ``jitter`` (drawing from ``source``)
    spreads a retry of refused mail; the wait for a server that is away needs none, since it grows with
    each delivery's own age.
    """
    if failure is SendFailure.PERMANENTLY_REFUSED:
        return Fail(FailReason.REFUSED, attempts + 1)
    waited = now - created_at
    if not failure.charges_an_attempt:
        if waited > MAX_DELIVERY_AGE:
            return Fail(FailReason.TOO_OLD, attempts)
        return WaitForServer(now + SERVER_WAIT.after_waiting(waited))
    used = attempts + 1
    if used >= MAX_SEND_ATTEMPTS:
        return Fail(FailReason.TOO_MANY_ATTEMPTS, used)
    if waited > MAX_DELIVERY_AGE:
        return Fail(FailReason.TOO_OLD, used)
    return RetryAt(now + jitter(SEND_RETRY.delay(used), source or random.Random()), used)


# --- the hourly cap on mail from public causes ------------------------------------------------------------


def hour_of(moment: datetime) -> datetime:
    """The start of the clock hour ``moment`` falls in: the cap counts per address and clock hour."""
    return moment.replace(minute=0, second=0, microsecond=0)


def within_hourly_cap(count_this_hour: int, cap: int) -> bool:
    """Whether the ``count_this_hour``-th message (counting this one) from a public cause to one address in
    this hour may go. Anyone can type anyone's address into a registration form, so without a cap the suite
    could be made to flood an inbox; what is over the cap is held back, for organisers to see."""
    return count_this_hour <= cap


# --- announcement placeholders ----------------------------------------------------------------------------

#: What an organiser may write in an announcement's subject and body, in braces: ``{name}``. Nothing else
#: is interpreted — organisers never write template code. ``{{`` and ``}}`` write a brace.
PLACEHOLDERS = (
    "name",
    "email",
    "opd",
    "session_title",
    "session_starts_at",
    "session_location",
    "online_url",
)
_BRACED = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def unknown_placeholders(text: str) -> list[str]:
    """The placeholders in ``text`` that are not in :data:`PLACEHOLDERS`, in the order written, once each."""
    unknown: list[str] = []
    for match in _BRACED.finditer(text):
        name = match.group(1)
        if name is not None and name not in PLACEHOLDERS and name not in unknown:
            unknown.append(name)
    return unknown


def fill_placeholders(text: str, values: Mapping[str, str | None]) -> str:
    """``text`` with each known placeholder replaced by its value (empty when the recipient has none)."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name not in PLACEHOLDERS:
            return token
        return values.get(name) or ""

    return _BRACED.sub(replace, text)


# --- one-click opt-out links ------------------------------------------------------------------------------


def unsubscribe_token(key: bytes, email: str, channel: str) -> str:
    """The opt-out link's token for ``email`` on ``channel``: the address and channel, signed (HMAC-SHA256
    under a key derived from the service's secret). It does not expire — a link in an old mail must still
    work — and it only ever opts its own address out, so a stranger cannot forge one for someone else."""
    payload = _b64(f"{channel}:{email.lower()}".encode())
    return f"{payload}.{_signature(key, payload)}"


def read_unsubscribe_token(key: bytes, token: str) -> tuple[str, str] | None:
    """``(email, channel)`` of a genuine token; ``None`` for anything else."""
    payload, _, signature = token.partition(".")
    if not payload or not hmac.compare_digest(signature, _signature(key, payload)):
        return None
    try:
        channel, _, email = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (email, channel) if email and channel else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _signature(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest()[:18])


# --- SMS and WhatsApp through an HTTP gateway -----------------------------------------------------------------

MAX_GATEWAY_ATTEMPTS = 8  # charged attempts (5xx, timeouts) before a message fails
#: After the n-th charged attempt: 5 s, 15 s, 45 s ... at most half an hour.
GATEWAY_RETRY = Backoff(base=timedelta(seconds=5), factor=3, cap=timedelta(minutes=30))
#: The longest ``Retry-After`` the sender honours as given; a gateway asking for more gets this.
LONGEST_RETRY_AFTER = timedelta(hours=1)


class GatewayFailure(Enum):
    """What a gateway's answer (or its silence) means, in the policy's terms."""

    #: 5xx, a timeout or no connection: try again later, charging an attempt.
    TEMPORARY = "temporary"
    #: 429, or a 503 that says when to come back (``Retry-After``): wait that long, charging nothing.
    RATE_LIMITED = "rate limited"
    #: Any other 4xx: this message will never be accepted (a bad number, a refused sender): fail now.
    PERMANENT = "permanent"


def gateway_failure_of(status: int | None, retry_after: timedelta | None = None) -> GatewayFailure:
    """Classify the gateway's HTTP ``status`` (``None``: no answer — a timeout, a refused connection)."""
    if status is None or status >= 500 or status == 408:
        if status == 503 and retry_after is not None:
            return GatewayFailure.RATE_LIMITED
        return GatewayFailure.TEMPORARY
    if status == 429:
        return GatewayFailure.RATE_LIMITED
    return GatewayFailure.PERMANENT


def retry_after_of(header: str | None, now: datetime) -> timedelta | None:
    """A ``Retry-After`` header (seconds, or an HTTP date) as a wait from ``now`` (aware UTC); ``None`` if absent
    or unreadable. Never negative, never more than :data:`LONGEST_RETRY_AFTER`."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        wait = timedelta(seconds=int(header))
    else:
        from email.utils import parsedate_to_datetime

        try:
            wait = parsedate_to_datetime(header) - now
        except (TypeError, ValueError):
            return None
    return min(max(wait, timedelta(0)), LONGEST_RETRY_AFTER)


def after_gateway_failure(
    failure: GatewayFailure,
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    retry_after: timedelta | None = None,
    jitter: Jitter = no_jitter,
    source: random.Random | None = None,
) -> RetryAt | Fail:
    """The next step for an SMS/WhatsApp message whose send failed with ``failure``.

    A permanent refusal fails at once (never retried). A gateway that asks us to slow down is obeyed: the
    message waits ``Retry-After`` (or the backoff when it gave none), with a little jitter so that workers
    that were told together do not come back together, and no attempt is charged — only its age bounds it.
    A temporary failure costs an attempt and backs off (:data:`GATEWAY_RETRY`, jittered); after
    :data:`MAX_GATEWAY_ATTEMPTS`, or once older than :data:`MAX_DELIVERY_AGE`, the message fails.
    """
    source = source or random.Random()
    if failure is GatewayFailure.PERMANENT:
        return Fail(FailReason.REFUSED, attempts + 1)
    waited = now - created_at
    if failure is GatewayFailure.RATE_LIMITED:
        if waited > MAX_DELIVERY_AGE:
            return Fail(FailReason.TOO_OLD, attempts)
        wait = retry_after if retry_after is not None else GATEWAY_RETRY.delay(max(attempts, 1))
        return RetryAt(now + wait + wait * 0.2 * source.random(), attempts)
    used = attempts + 1
    if used >= MAX_GATEWAY_ATTEMPTS:
        return Fail(FailReason.TOO_MANY_ATTEMPTS, used)
    if waited > MAX_DELIVERY_AGE:
        return Fail(FailReason.TOO_OLD, used)
    return RetryAt(now + jitter(GATEWAY_RETRY.delay(used), source), used)


def gateway_payload(fields: Mapping[str, str], *, to: str, text: str, channel: str, reference: str) -> dict[str, str]:
    """The JSON body for the gateway: our four fields under the gateway's names (``LABINOV_SMS_GATEWAY_FIELDS``)."""
    values = {"to": to, "text": text, "channel": channel, "reference": reference}
    return {fields.get(name, name): value for name, value in values.items()}


#: The longest short text of a transactional message: two SMS segments (GSM-7, 153 characters each).
SHORT_TEXT_LIMIT = 306


def short_text(subject: str, link: str | None = None, limit: int = SHORT_TEXT_LIMIT) -> str:
    """The SMS variant of a transactional message: its subject and the link that does the rest, within
    ``limit`` characters (the subject is cut, never the link)."""
    tail = f" {link}" if link else ""
    room = max(limit - len(tail), 0)
    head = subject if len(subject) <= room else subject[: max(room - 1, 0)].rstrip() + "…"
    return f"{head}{tail}"


# --- per-channel rate limits: a token bucket -------------------------------------------------------------------


@dataclass(frozen=True)
class BucketState:
    """A channel's bucket after a request: ``tokens`` left at ``at``; ``wait`` until the next token (0 if one was
    taken now)."""

    tokens: float
    at: datetime
    wait: timedelta

    @property
    def granted(self) -> bool:
        return self.wait == timedelta(0)


def take_token(tokens: float, refilled_at: datetime, now: datetime, rate: float, burst: int) -> BucketState:
    """Take one token from a bucket of ``burst`` tokens that refills at ``rate`` tokens per second.

    The bucket held ``tokens`` at ``refilled_at``; a clock that went back (another worker's, a little ahead)
    refills nothing. Returns the bucket after taking one, or — when less than one is there — unchanged but for
    the refill, with the wait until a whole token has grown."""
    elapsed = max((now - refilled_at).total_seconds(), 0.0)
    available = min(float(burst), tokens + elapsed * rate)
    moment = max(now, refilled_at)
    if available >= 1.0:
        return BucketState(available - 1.0, moment, timedelta(0))
    return BucketState(available, moment, timedelta(seconds=(1.0 - available) / rate))


# --- outgoing webhooks (Standard Webhooks) -----------------------------------------------------------------------

WEBHOOK_SECRET_PREFIX = "whsec_"
#: Attempts of one webhook delivery before it fails: 5 s, 30 s, 3 min ... at most 6 h apart (about a day in all).
MAX_WEBHOOK_ATTEMPTS = 10
WEBHOOK_RETRY = Backoff(base=timedelta(seconds=5), factor=6, cap=timedelta(hours=6))
#: An endpoint is switched off after this many failed attempts in a row ...
WEBHOOK_DISABLE_AFTER_FAILURES = 10
#: ... that went on for at least this long (a receiver down for a minute's deploy is not switched off).
WEBHOOK_DISABLE_AFTER = timedelta(days=1)


def new_webhook_secret(random_bytes: bytes) -> str:
    """A Standard Webhooks key: ``whsec_`` and the base64 of at least 24 random bytes."""
    if len(random_bytes) < 24:
        raise ValueError("a webhook secret needs at least 24 random bytes")
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(random_bytes).decode()


def webhook_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,`` and the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` under
    the decoded secret, as the Standard Webhooks specification defines it."""
    key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def after_webhook_failure(
    *, attempts: int, now: datetime, jitter: Jitter = no_jitter, source: random.Random | None = None
) -> RetryAt | Fail:
    """A webhook delivery whose attempt failed (any answer but 2xx, or none): retry with backoff and jitter, or
    fail after :data:`MAX_WEBHOOK_ATTEMPTS`."""
    used = attempts + 1
    if used >= MAX_WEBHOOK_ATTEMPTS:
        return Fail(FailReason.TOO_MANY_ATTEMPTS, used)
    return RetryAt(now + jitter(WEBHOOK_RETRY.delay(used), source or random.Random()), used)


def webhook_disable_reason(
    *, consecutive_failures: int, failing_since: datetime | None, now: datetime, gone: bool = False
) -> str | None:
    """Why an endpoint is switched off now, or ``None`` to keep it: 410 Gone at once (the receiver says it is
    gone for good); else :data:`WEBHOOK_DISABLE_AFTER_FAILURES` failures in a row over at least
    :data:`WEBHOOK_DISABLE_AFTER`."""
    if gone:
        return "the receiver answered 410 Gone"
    if (
        consecutive_failures >= WEBHOOK_DISABLE_AFTER_FAILURES
        and failing_since is not None
        and now - failing_since >= WEBHOOK_DISABLE_AFTER
    ):
        hours = int((now - failing_since).total_seconds() // 3600)
        return f"{consecutive_failures} failed attempts in a row over {hours} hours"
    return None


def refused_address(address: str, allow_local: bool = False) -> str | None:
    """Why a webhook may not go to IP ``address``, or ``None``: only addresses on the public internet, unless
    ``allow_local`` (development and tests). An IPv4 address written as IPv6 (``::ffff:127.0.0.1``) is judged
    as the IPv4 address it is."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if allow_local:
        return None
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_unspecified or ip.is_multicast:
        return f"{ip} is a private, link-local or reserved address"
    if not ip.is_global:
        return f"{ip} is not on the public internet"
    return None
