"""The transactional outbox and its relay.

Producers never talk to the broker: :class:`shared.db.UnitOfWork` writes an outbox row in the same
transaction as the state change. The relay (one thread in each worker process) publishes pending rows.

Concurrency design — several relays of one service may run at once (scaled-out workers):

1. **Claim** up to ``batch_size`` due rows with a lease (:func:`shared.db.claim_due_rows`: ``FOR UPDATE
   SKIP LOCKED`` on PostgreSQL, the write lock on SQLite), so concurrent relays take disjoint rows.
2. **Publish** the claimed rows in id order, each with publisher confirms (RabbitMQ) or a synchronous
   push (Redis). Only then **mark** them ``sent_at``, still guarded by the claim token.
3. A relay that dies between publish and mark leaves rows whose lease expires; another relay publishes them
   again. That is the only way a row is published twice, and consumers are idempotent (inbox) for it.
4. A publish that fails postpones that row (1 s, 2 s, 4 s … 60 s) and releases the rest of the batch at once;
   the relay reconnects with backoff. A broker outage only delays rows, and a row the broker keeps refusing
   never holds up the rows behind it.

Order: a relay publishes in id order, except that a postponed row is overtaken by later ones. With several
relays, batches may interleave — consumers never depend on cross-event order (each event carries the full
state it reports).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from typing import Any

from kombu import Connection
from sqlalchemy import Engine, Table, func, select, update

from shared.clock import utcnow
from shared.db import claim_due_rows
from shared.messaging.broker import connect
from shared.messaging.topology import EXCHANGES, declare_topology
from shared.observability import MESSAGES_PUBLISHED

log = logging.getLogger(__name__)

CLAIM_LEASE = timedelta(seconds=30)
#: How long to wait for RabbitMQ to confirm one message; past it the connection is taken for dead
#: (a half-open TCP connection would otherwise block the relay for good).
CONFIRM_TIMEOUT = 10


class OutboxRelay:
    """Publishes a service's pending outbox rows (see the module docstring for the locking design)."""

    def __init__(
        self,
        engine: Engine,
        outbox: Table,
        broker_url: str,
        service: str,
        batch_size: int = 100,
        poll_interval: float = 0.2,
    ) -> None:
        self.engine = engine
        self.outbox = outbox
        self.broker_url = broker_url
        self.service = service
        self.batch_size = batch_size
        self.poll_interval = poll_interval

    def claim_batch(self) -> tuple[str, list[Any]]:
        """Claim due rows for this relay (see :func:`shared.db.claim_due_rows` for the locking)."""
        o = self.outbox.c
        return claim_due_rows(
            self.engine, self.outbox, (o.sent_at.is_(None), o.not_before <= utcnow()), self.batch_size, CLAIM_LEASE
        )

    def _mark_sent(self, token: str, ids: list[int]) -> None:
        if not ids:
            return
        with self.engine.begin() as connection:
            connection.execute(
                update(self.outbox)
                .where(self.outbox.c.id.in_(ids), self.outbox.c.claim_token == token)
                .values(sent_at=utcnow(), claimed_until=None)
            )

    def _release(self, token: str, ids: list[int]) -> None:
        """Give rows that were claimed but not tried back to any relay, at once."""
        if ids:
            with self.engine.begin() as connection:
                connection.execute(
                    update(self.outbox)
                    .where(self.outbox.c.id.in_(ids), self.outbox.c.claim_token == token)
                    .values(claimed_until=None, claim_token=None)
                )

    def _postpone(self, token: str, row: Any, error: str) -> None:
        """The row whose publish failed waits a little (1 s, 2 s, 4 s ... 60 s), so that a row the broker
        keeps refusing cannot hold up the rows behind it."""
        delay = timedelta(seconds=min(2**row.publish_attempts, 60))
        with self.engine.begin() as connection:
            connection.execute(
                update(self.outbox)
                .where(self.outbox.c.id == row.id, self.outbox.c.claim_token == token)
                .values(
                    claimed_until=None,
                    claim_token=None,
                    publish_attempts=row.publish_attempts + 1,
                    last_error=error[:2000],
                    not_before=utcnow() + delay,
                )
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
                    json.loads(row.payload),
                    exchange=EXCHANGES[row.exchange],
                    routing_key=row.routing_key,
                    headers=json.loads(row.headers),
                    message_id=row.event_id,
                    delivery_mode=2,
                    serializer="json",
                    retry=False,
                    confirm_timeout=CONFIRM_TIMEOUT,
                )
            except Exception as exc:
                MESSAGES_PUBLISHED.labels(self.service, "failed").inc()
                self._mark_sent(token, published)
                self._postpone(token, row, repr(exc))
                self._release(token, [r.id for r in rows[position + 1 :]])
                raise
            published.append(row.id)
            MESSAGES_PUBLISHED.labels(self.service, "published").inc()
        self._mark_sent(token, published)
        return len(published)

    def _idle(self, connection: Connection, stop: threading.Event) -> None:
        """Wait for the next poll. On AMQP, wait by reading the connection: that answers the broker's
        heartbeats (sending ours is not enough — py-amqp also needs to see traffic from the broker)."""
        if connection.transport.driver_type != "amqp":
            stop.wait(self.poll_interval)
            return
        connection.heartbeat_check()
        try:
            connection.drain_events(timeout=self.poll_interval)
        except TimeoutError:
            pass

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set, reconnecting with backoff while the broker or database is away."""
        backoff = 0.5
        while not stop.is_set():
            try:
                with connect(self.broker_url) as connection:
                    connection.ensure_connection(max_retries=1, timeout=5)
                    declare_topology(connection.default_channel)
                    log.info("outbox relay connected", extra={"broker": connection.as_uri()})
                    backoff = 0.5
                    while not stop.is_set():
                        if self.relay_once(connection) < self.batch_size:
                            self._idle(connection, stop)
            except Exception as exc:  # broker or database away: rows stay pending, nothing is lost
                log.warning("outbox relay paused: %r; retrying in %.1fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)


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
