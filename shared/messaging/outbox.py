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
   A broker outage only delays rows: their claim is released and the relay backs off and reconnects.

Order: one relay publishes in id order. With several relays, rows of different batches may interleave —
consumers never depend on cross-event order (each event carries the full state it reports).
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

    def _release(self, token: str, ids: list[int], error: str) -> None:
        if not ids:
            return
        with self.engine.begin() as connection:
            connection.execute(
                update(self.outbox)
                .where(self.outbox.c.id.in_(ids), self.outbox.c.claim_token == token)
                .values(
                    claimed_until=None,
                    claim_token=None,
                    publish_attempts=self.outbox.c.publish_attempts + 1,
                    last_error=error[:2000],
                )
            )

    # -- publishing --------------------------------------------------------------------------------------

    def relay_once(self, connection: Connection) -> int:
        """Claim one batch, publish it and mark what the broker confirmed; returns the count published."""
        token, rows = self.claim_batch()
        if not rows:
            return 0
        producer = connection.Producer()
        published: list[int] = []
        try:
            for row in rows:
                producer.publish(
                    json.loads(row.payload),
                    exchange=EXCHANGES[row.exchange],
                    routing_key=row.routing_key,
                    headers=json.loads(row.headers),
                    message_id=row.event_id,
                    delivery_mode=2,
                    serializer="json",
                    retry=False,
                )
                published.append(row.id)
        except Exception as exc:
            MESSAGES_PUBLISHED.labels(self.service, "failed").inc(len(rows) - len(published))
            self._mark_sent(token, published)
            self._release(token, [r.id for r in rows if r.id not in set(published)], repr(exc))
            raise
        finally:
            MESSAGES_PUBLISHED.labels(self.service, "published").inc(len(published))
        self._mark_sent(token, published)
        return len(published)

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set, reconnecting with backoff while the broker or database is away."""
        backoff = 0.5
        while not stop.is_set():
            try:
                with connect(self.broker_url) as connection:
                    connection.ensure_connection(max_retries=1, timeout=5)
                    declare_topology(connection)
                    log.info("outbox relay connected", extra={"broker": connection.as_uri()})
                    backoff = 0.5
                    while not stop.is_set():
                        if self.relay_once(connection) < self.batch_size:
                            stop.wait(self.poll_interval)
            except Exception as exc:  # broker or database away: rows stay pending, nothing is lost
                log.warning("outbox relay paused: %r; retrying in %.1fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)


def pending_summary(engine: Engine, outbox: Table) -> tuple[int, float]:
    """(number of unsent rows, age in seconds of the oldest) — for metrics and the readiness page."""
    with engine.connect() as connection:
        count, oldest = connection.execute(
            select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.sent_at.is_(None))
        ).one()
    age = (utcnow() - oldest).total_seconds() if oldest else 0.0
    return int(count), max(age, 0.0)
