"""The transactional outbox and its relay.

Producers never talk to the broker: :class:`shared.db.UnitOfWork` writes an outbox row in the same
transaction as the state change. The relay (one thread in each worker process) publishes pending rows.

Concurrency design — several relays of one service may run at once (scaled-out workers). The outbox is a
:class:`shared.workqueue.WorkQueue` (its module docstring has the claim, guard and lease design):

1. **Claim** up to ``batch_size`` due rows (``sent_at`` empty, ``not_before`` passed) with a lease, so
   concurrent relays take disjoint rows.
2. **Publish** the claimed rows in id order, each with publisher confirms (RabbitMQ) or a synchronous
   push (Redis). Only then **finish** them (``sent_at``), still guarded by the claim token.
3. A relay that dies between publish and finish leaves rows whose lease expires; another relay publishes
   them again. That is the only way a row is published twice (the work queue's one unavoidable window),
   and consumers are idempotent (inbox) for it.
4. A publish that fails postpones that row (:data:`PUBLISH_RETRY`: 1 s, 2 s, 4 s … 60 s) and releases the
   rest of the batch at once; the relay reconnects with backoff (:data:`RELAY_RECONNECT`). A broker outage
   only delays rows, and a row the broker keeps refusing never holds up the rows behind it.

**Waking.** A relay does not wait for its poll when a row commits: every outbox row's transaction rings the
service's outbox channel (:mod:`shared.messaging.wakeup` — ``pg_notify`` in the row's own ``INSERT`` on
PostgreSQL, a datagram after commit on SQLite), and an idle relay waits on that channel, listening since
before its first claim, so a ring during a claim is not missed. Every relay of the service wakes; their
claims stay disjoint (1.). The poll (``poll_interval``, ``LABINOV_RELAY_POLL_MS``) remains the safety net
for a lost ring and for retry rows whose ``not_before`` comes later: a lost ring only delays a row.
While waiting on AMQP, the relay also reads its broker connection every :data:`~shared.messaging.wakeup.WAIT_SLICE`
(heartbeats).

**Its own transactions do not wait for the disk.** Every commit of a claim or a mark would wait for a WAL
flush — milliseconds each, twice per batch, on the path of every event (and on SQLite while holding the one
write lock every writer of the database queues for). The relay's connections (:func:`relay_engine`, a small
pool of its own) run with ``synchronous_commit = off`` on PostgreSQL and ``synchronous = NORMAL`` on SQLite
(WAL mode): a commit returns at once, visible to every other session at once, and reaches the disk within a
moment (PostgreSQL's WAL writer; SQLite's next checkpoint or synchronous commit). That is safe here, and only here, because losing such a commit in a database crash is a case the
design already handles: a lost claim or a lost mark leaves the row pending, so it is published again — the
duplicate of step 3, which the consumers' inboxes absorb — and a lost postponement only retries sooner. The
transactions that create outbox rows (a state change and its events) and the consumers' (inbox row and
handler, acked after the commit) stay synchronous. On PostgreSQL the claim is also one statement,
``WITH due AS MATERIALIZED (SELECT id … LIMIT n FOR UPDATE SKIP LOCKED) UPDATE … FROM due RETURNING …``
(:meth:`OutboxRelay.claim_batch`): the materialised CTE runs once, so its LIMIT holds (unlike ``… WHERE id IN
(SELECT … LIMIT n)``, see :mod:`shared.workqueue`), and the rows come back with their lease — one round trip
instead of four. The guard and the lease are the work queue's, unchanged.

Order: a relay publishes in id order, except that a postponed row is overtaken by later ones. With several
relays, batches may interleave — consumers never depend on cross-event order (each event carries the full
state it reports).
"""

from __future__ import annotations

import functools
import json
import logging
import select as io_select
import threading
import uuid
from datetime import timedelta

from kombu import Connection
from sqlalchemy import Engine, Table, bindparam, func, or_, select, update

from shared.backoff import Backoff, equal_jitter
from shared.clock import utcnow
from shared.db import create_database_engine, is_postgresql
from shared.messaging import wakeup
from shared.messaging.broker import connect
from shared.messaging.topology import EXCHANGES, declare_topology
from shared.observability import MESSAGES_PUBLISHED
from shared.workqueue import Claim, WorkQueue

log = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(seconds=30)
#: How long to wait for RabbitMQ to confirm one message; past it the connection is taken for dead
#: (a half-open TCP connection would otherwise block the relay for good).
CONFIRM_TIMEOUT = 10
#: A row the broker refused waits 1 s, 2 s, 4 s ... 60 s (it fails on its own: no jitter needed).
PUBLISH_RETRY = Backoff(base=timedelta(seconds=1), factor=2, cap=timedelta(seconds=60))
#: Between attempts to reach the broker: 0.5 s doubling to 5 s, jittered — when the broker comes back,
#: every relay of every service reconnects at once, and the jitter spreads them out.
RELAY_RECONNECT = Backoff(base=timedelta(seconds=0.5), factor=2, cap=timedelta(seconds=5), jitter=equal_jitter)


def relay_engine(engine: Engine) -> Engine:
    """The relay's own engine on ``engine``'s database, whose commits do not wait for the disk (see "Its own
    transactions" in the module docstring): a small pool of its own. A database in memory is only reachable
    through ``engine`` itself, so it keeps it."""
    database = engine.url.database
    if not is_postgresql(engine) and (not database or database == ":memory:"):
        return engine
    return create_database_engine(
        engine.url.render_as_string(hide_password=False), wait_for_disk=False, pool_size=1, max_overflow=2
    )


def outbox_queue(engine: Engine, outbox: Table) -> WorkQueue:
    """A service's outbox as a work queue: rows not yet sent, due from ``not_before``, in id order."""
    return WorkQueue(
        engine, outbox, pending=(outbox.c.sent_at.is_(None),), due_at=outbox.c.not_before, lease=CLAIM_LEASE
    )


class OutboxRelay:
    """Publishes a service's pending outbox rows (see the module docstring for the locking design)."""

    def __init__(
        self,
        engine: Engine,
        outbox: Table,
        broker_url: str,
        service: str,
        batch_size: int = 100,
        poll_interval: float = 1.0,
    ) -> None:
        self.engine = relay_engine(engine)
        self.outbox = outbox
        self.broker_url = broker_url
        self.service = service
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.queue = outbox_queue(self.engine, outbox)

    def claim_batch(self) -> Claim:
        """Claim due rows for this relay (see :class:`shared.workqueue.WorkQueue` for the locking); on PostgreSQL
        in one statement (see the module docstring)."""
        if not is_postgresql(self.engine):
            return self.queue.claim(self.batch_size)
        now = utcnow()
        token = uuid.uuid4().hex
        values = {"claim_now": now, "claim_token_new": token, "claim_until": now + self.queue.lease}
        with self.engine.begin() as connection:
            rows = sorted(connection.execute(_claim_statement(self.outbox, self.batch_size), values), key=_by_id)
        return Claim(token, rows)

    def _finish(self, token: str, published: list[int]) -> None:
        """Mark the published rows sent (guarded by the claim token, as :meth:`WorkQueue.finish`); on PostgreSQL
        with a statement made once."""
        if not published:
            return
        if not is_postgresql(self.engine):
            self.queue.finish(token, published, sent_at=utcnow())
            return
        with self.engine.begin() as connection:
            connection.execute(
                _finish_statement(self.outbox), {"finish_ids": published, "finish_token": token, "sent_now": utcnow()}
            )

    def _postpone(self, token: str, row, error: str) -> None:
        """The row whose publish failed waits a little (:data:`PUBLISH_RETRY`), so that a row the broker
        keeps refusing cannot hold up the rows behind it."""
        attempts = row.publish_attempts + 1
        self.queue.postpone(
            token,
            row.id,
            utcnow() + PUBLISH_RETRY.delay(attempts),
            publish_attempts=attempts,
            last_error=error[:2000],
        )

    # -- publishing --------------------------------------------------------------------------------------

    def relay_once(self, connection: Connection) -> int:
        """Claim one batch, publish it and mark what the broker confirmed; returns the count published."""
        token, rows = self.claim_batch()
        producer = connection.Producer()
        published: list[int] = []
        for position, row in enumerate(rows):
            try:
                producer.publish(
                    row.payload,  # the envelope's JSON as the producer wrote it: not parsed and dumped again
                    exchange=EXCHANGES[row.exchange],
                    routing_key=row.routing_key,
                    headers=json.loads(row.headers),
                    message_id=row.event_id,
                    delivery_mode=2,
                    content_type="application/json",
                    content_encoding="utf-8",
                    retry=False,
                    confirm_timeout=CONFIRM_TIMEOUT,
                )
            except Exception as exc:
                MESSAGES_PUBLISHED.labels(self.service, "failed").inc()
                self._finish(token, published)
                self._postpone(token, row, repr(exc))
                self.queue.release(token, [r.id for r in rows[position + 1 :]])
                raise
            published.append(row.id)
            MESSAGES_PUBLISHED.labels(self.service, "published").inc()
        self._finish(token, published)
        return len(published)

    def listen(self) -> wakeup.Listener:
        """This relay's end of the service's outbox channel; listen before the first claim."""
        return wakeup.listen(self.engine, wakeup.channel(self.service, wakeup.OUTBOX))

    def _idle(self, connection: Connection, stop: threading.Event, listener: wakeup.Listener) -> None:
        """Wait until a row commits (rung) or the next poll. On AMQP, read the connection between the slices
        of the wait: that answers the broker's heartbeats (sending ours is not enough — py-amqp also needs
        to see traffic from the broker)."""
        between = None
        if connection.transport.driver_type == "amqp":
            between = lambda: _answer_heartbeats(connection)  # noqa: E731
        wakeup.wait_for_work(listener, stop, self.poll_interval, between)

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set, reconnecting with backoff while the broker or database is away."""
        failures = 0  # since the last successful connection
        while not stop.is_set():
            listener: wakeup.Listener | None = None
            try:
                listener = self.listen()
                with connect(self.broker_url) as connection:
                    connection.ensure_connection(max_retries=1, timeout=5)
                    declare_topology(connection.default_channel)
                    log.info("outbox relay connected", extra={"broker": connection.as_uri()})
                    failures = 0
                    while not stop.is_set():
                        if self.relay_once(connection) < self.batch_size:
                            self._idle(connection, stop, listener)
            except Exception as exc:  # broker or database away: rows stay pending, nothing is lost
                failures += 1
                wait = RELAY_RECONNECT.seconds(failures)
                log.warning("outbox relay paused: %r; retrying in %.1fs", exc, wait)
                stop.wait(wait)
            finally:
                if listener is not None:
                    listener.close()


def _by_id(row) -> int:
    return row.id


@functools.cache
def _claim_statement(outbox: Table, batch_size: int):
    """PostgreSQL: the claim of up to ``batch_size`` due rows in one statement (see the module docstring), made
    once per table and size; its values are ``claim_now``, ``claim_token_new`` and ``claim_until``."""
    c = outbox.c
    now = bindparam("claim_now", type_=c.not_before.type)
    due = (
        select(c.id)
        .where(c.sent_at.is_(None), c.not_before <= now, or_(c.claimed_until.is_(None), c.claimed_until < now))
        .order_by(c.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
        .cte("due")
        .prefix_with("MATERIALIZED")
    )
    return (
        update(outbox)
        .where(c.id == due.c.id)
        .values(
            claim_token=bindparam("claim_token_new", type_=c.claim_token.type),
            claimed_until=bindparam("claim_until", type_=c.claimed_until.type),
        )
        .returning(*outbox.columns)
    )


@functools.cache
def _finish_statement(outbox: Table):
    """PostgreSQL: mark the rows ``finish_ids`` sent at ``sent_now`` if the claim ``finish_token`` still holds
    them and they are still pending — :meth:`shared.workqueue.WorkQueue.finish`'s guard, made once."""
    c = outbox.c
    return (
        update(outbox)
        .where(
            c.id.in_(bindparam("finish_ids", expanding=True)),
            c.claim_token == bindparam("finish_token", type_=c.claim_token.type),
            c.sent_at.is_(None),
        )
        .values(sent_at=bindparam("sent_now", type_=c.sent_at.type), claimed_until=None)
    )


def _answer_heartbeats(connection: Connection) -> None:
    """Send a heartbeat if one is due and read what the broker sent (its heartbeats), without blocking."""
    connection.heartbeat_check()
    sock = getattr(connection.connection, "sock", None)
    if sock is None or not io_select.select([sock], [], [], 0)[0]:
        return
    try:
        connection.drain_events(timeout=0.01)
    except TimeoutError:
        pass


def pending_summary(engine: Engine, outbox: Table) -> tuple[int, float]:
    """(rows due but not yet sent, age in seconds of the oldest) — for metrics. Retries that are not due yet
    are not pending: they wait on purpose."""
    now = utcnow()
    with engine.connect() as connection:
        count, oldest = connection.execute(
            select(func.count(), func.min(outbox.c.not_before)).where(
                outbox.c.sent_at.is_(None), outbox.c.not_before <= now
            )
        ).one()
    age = (now - oldest).total_seconds() if oldest else 0.0
    return int(count), max(age, 0.0)
