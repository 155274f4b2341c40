"""What happens to a delivery after a send failed: the mail sender's retry policy as plain values.

The sender (:func:`services.notification.domain.send_due_mail`) turns what went wrong into a
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
* A delivery fails for good after :data:`MAX_SEND_ATTEMPTS` charged attempts, or at its first failure
  once it is older than :data:`MAX_DELIVERY_AGE` (mail that is two days late is no longer worth sending).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from shared.backoff import Backoff

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

    @property
    def connection_lost(self) -> bool:
        """Whether the connection is over: the mails behind this one wait as :attr:`SERVER_UNAVAILABLE`."""
        return self is not SendFailure.MAIL_REFUSED

    @property
    def charges_an_attempt(self) -> bool:
        return self is not SendFailure.SERVER_UNAVAILABLE


class FailReason(Enum):
    TOO_MANY_ATTEMPTS = "too many attempts"
    TOO_OLD = "too old"


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


def after_failed_send(failure: SendFailure, *, attempts: int, created_at: datetime, now: datetime) -> SendDecision:
    """The next step for a delivery whose send failed with ``failure``.

    ``attempts`` is how many it had used before this send; ``created_at`` and ``now`` are in one time zone
    (both aware, or both naive UTC), and so is the time returned.
    """
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
    return RetryAt(now + SEND_RETRY.delay(used), used)
