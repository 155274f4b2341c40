"""How long to wait before trying again: one rule for every retry in the suite.

Everything that retries — the outbox relay postponing a row the broker refused, the consumer scheduling a
failed handler again, the mail sender retrying a refused mail or waiting out a mail-server outage, the relay
and the consumer reconnecting to the broker — waits ``base · factor^(n-1)`` after its n-th failure, never
more than ``cap``. Each use names its numbers once, as a :class:`Backoff` constant next to the code that
retries (``PUBLISH_RETRY`` in the outbox, ``HANDLER_RETRY`` in the consumer, ``SEND_RETRY`` in the mail
rules, ...), so the numbers are read in one line and the arithmetic is written once.

**Jitter** only where several processes fail at the same moment and would otherwise retry in lockstep: when
the broker comes back, every relay and every consumer of every service reconnects, so their reconnect
policies use :func:`equal_jitter` (a random wait between half and all of the delay: spread out, yet never
hammering a server that is still down). Retries of one row or one message need none — each row fails on its
own clock. Jitter draws from a :class:`random.Random` that callers (tests) may pass in, seeded, so every
delay is reproducible.

This module is a pure function of plain values: no database, no broker, no clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

#: Turns the computed delay into the one to wait, drawing from the given random source.
Jitter = Callable[[timedelta, random.Random], timedelta]

_shared_random = random.Random()


def no_jitter(delay: timedelta, _random: random.Random) -> timedelta:
    """The delay as computed: for retries that are not synchronised with anyone else's."""
    return delay


def full_jitter(delay: timedelta, source: random.Random) -> timedelta:
    """Anywhere between nothing and the delay: the widest spread (but the first retry may come at once)."""
    return delay * source.random()


def equal_jitter(delay: timedelta, source: random.Random) -> timedelta:
    """Between half the delay and all of it: spread out, and still backing off."""
    half = delay / 2
    return half + half * source.random()


def backoff(
    attempt: int,
    *,
    base: timedelta,
    factor: float,
    cap: timedelta,
    jitter: Jitter = no_jitter,
    source: random.Random | None = None,
) -> timedelta:
    """The wait after failure number ``attempt`` (1 for the first): ``base · factor^(attempt-1)``, at most
    ``cap``, then jittered. An attempt below 1 counts as the first; a huge one simply gives ``cap``."""
    exponent = max(attempt, 1) - 1
    try:
        seconds = base.total_seconds() * float(factor) ** exponent
    except OverflowError:
        seconds = math.inf
    delay = cap if seconds >= cap.total_seconds() else timedelta(seconds=seconds)
    return jitter(delay, source or _shared_random)


@dataclass(frozen=True)
class Backoff:
    """One named retry policy: the numbers of :func:`backoff` for one use."""

    base: timedelta
    factor: float
    cap: timedelta
    jitter: Jitter = no_jitter

    def delay(self, attempt: int, source: random.Random | None = None) -> timedelta:
        """The wait after failure number ``attempt`` (1 for the first)."""
        return backoff(attempt, base=self.base, factor=self.factor, cap=self.cap, jitter=self.jitter, source=source)

    def seconds(self, attempt: int, source: random.Random | None = None) -> float:
        """:meth:`delay` in seconds, for ``threading.Event.wait`` and the like."""
        return self.delay(attempt, source).total_seconds()

    def after_waiting(self, waited: timedelta, source: random.Random | None = None) -> timedelta:
        """The next wait for something that keeps no count of its failures, only of how long it has waited.

        Waiting ``(factor - 1) · waited`` makes the total wait grow by ``factor`` each round — the same
        geometric backoff, measured in time instead of attempts — kept within ``base`` and ``cap``. With
        ``factor=2``: wait as long again as you have waited so far. (The mail sender uses it while the mail
        server is away: an outage costs a delivery no attempt, so there is no count to back off on.)
        """
        seconds = max(waited.total_seconds() * (self.factor - 1), self.base.total_seconds())
        delay = min(timedelta(seconds=seconds), self.cap)
        return self.jitter(delay, source or _shared_random)
