"""Per-channel rate limits that hold across every notification worker process together.

A gateway sells (and enforces) so many messages per second; with several workers each counting alone, N
workers would send N times that and get 429s back. So the count is shared, **in the service's own
database**: one token-bucket row per channel (``channel_rate_buckets``), ``burst`` tokens at most, refilled at
``rate`` per second (``LABINOV_SMS_RATE=5/second``: 5 a second, 5 at once). The database rather than Redis,
because the gateway loop already holds a connection to it, it is there on every kind of run (SQLite files,
PostgreSQL), and a lost Redis must not turn into an unlimited one.

Concurrency design — taking a token is one short transaction:

1. ``SELECT … FOR UPDATE`` the channel's row (PostgreSQL; on SQLite the transaction holds the database write
   lock from ``BEGIN IMMEDIATE``, see :mod:`shared.db`), so two workers taking a token queue on that row and
   never both spend the last one;
2. the pure rule :func:`services.notification.rules.take_token` computes the refill and whether a whole token
   is there;
3. the row is written back and the transaction commits at once (the lock is held for two statements).

A missing row is created first with ``INSERT … ON CONFLICT DO NOTHING`` (a full bucket), so racing first
takers make one row. A worker told to wait sleeps that long and asks again; it holds no lock meanwhile.
Clocks of several machines differ a little: a bucket last written by a clock ahead of ours refills nothing
until ours catches up (``take_token`` never refills for negative time), which errs on the slow side.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.notification import rules
from services.notification.tables import ChannelRateBucket
from shared.clock import utcnow

buckets = ChannelRateBucket.__table__


class ChannelLimiter:
    """Tokens of the channels' buckets, ``rates`` being ``(channel, per second, burst)`` (``Settings.channel_rates``)."""

    def __init__(self, engine: Engine, rates: tuple[tuple[str, float, int], ...]) -> None:
        self.engine = engine
        self.rates = {channel: (rate, burst) for channel, rate, burst in rates}

    def try_take(self, channel: str) -> timedelta:
        """Take one token of ``channel`` now (``timedelta(0)``), or say how long until one has grown (nothing is
        taken then). A channel without a configured rate is not limited."""
        if channel not in self.rates:
            return timedelta(0)
        rate, burst = self.rates[channel]
        with self.engine.begin() as connection:
            now = utcnow()
            locked = select(buckets.c.tokens, buckets.c.refilled_at).where(buckets.c.channel == channel)
            if self.engine.dialect.name == "postgresql":
                locked = locked.with_for_update()
            row = connection.execute(locked).first()
            if row is None:
                insert = postgresql_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
                statement = insert(buckets).values(channel=channel, tokens=float(burst), refilled_at=now)
                connection.execute(statement.on_conflict_do_nothing(index_elements=["channel"]))
                row = connection.execute(locked).one()
            state = rules.take_token(row.tokens, row.refilled_at, now, rate, burst)
            connection.execute(
                update(buckets).where(buckets.c.channel == channel).values(tokens=state.tokens, refilled_at=state.at)
            )
        return state.wait

    def take(self, channel: str, stop: threading.Event | None = None, longest: float = 30.0) -> bool:
        """Wait for a token of ``channel`` and take it; ``False`` if ``stop`` was set, or nothing came within
        ``longest`` seconds (the caller gives the message back rather than sit on its lease)."""
        waited = 0.0
        stop = stop or threading.Event()
        while True:
            wait = self.try_take(channel).total_seconds()
            if wait == 0:
                return True
            if waited + wait > longest or stop.wait(wait):
                return False
            waited += wait
