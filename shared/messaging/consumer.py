"""Idempotent event consumers with delayed retry and a dead-letter queue.

For every message on the service's queue:

1. The envelope and ``data`` are validated against the catalogue. A message that does not fit goes to the
   service's dead-letter queue at once: retrying cannot make it fit.
2. In **one** transaction ``(consumer, event id)`` is written to the ``inbox`` first, by ``INSERT … ON
   CONFLICT DO NOTHING``, and the handler runs only if that row was new. If the inbox already holds the
   event (a redelivery, or a relay that published twice) nothing happens — one round trip, no separate
   check. Two workers racing on the same event meet on the inbox primary key: PostgreSQL makes the second
   insert wait for the first transaction, and it inserts nothing (``duplicate``) if that one committed, or
   takes over if it rolled back; on SQLite the write lock (``BEGIN IMMEDIATE``) orders them the same way.
3. Only after that commit is the message acknowledged. A worker that dies before the ack has committed
   either everything or nothing; the broker redelivers and step 2 makes the second delivery harmless.
4. A handler that raises is retried later: a copy of the message with ``x-labinov-attempt`` + 1 is written
   to the service's own outbox with a "not before" time (:data:`HANDLER_RETRY`: 1 s, 4 s, 16 s … 10 min),
   and the original is acked. After ``max_attempts`` the copy goes to the dead-letter queue instead, with
   the last error attached (the decision is :func:`after_handler_failure`, a plain function).
   The retry and dead-letter rows leave through the outbox, so they are never lost either.

Handlers are plain functions ``handler(uow, event)`` that call domain operations; they only touch their
own service's database (side effects such as sending mail are themselves outbox-like rows, sent later).

**Batches: one transaction for the messages that are already here.** A commit waits for the database's
disk (a WAL flush: milliseconds, most of an event's cost), so one transaction per message caps one consumer
at a few hundred events per second on a quiet disk, and below 100 on a busy one. The consumer therefore
takes every message that has already arrived (up to :data:`BATCH_LIMIT`; it never waits for more, so a lone
message is not delayed) and settles them in **one** transaction (:meth:`EventProcessor.process_batch`):

* their inbox rows are one ``INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING event_id``, in event
  id order, and each handler runs only for the events whose row was new — step 2 above, for each message;
  the same event twice in one batch runs once (the second is ``duplicate``);
* the handlers' writes and all the inbox rows commit together, and only then is each message acked, so each
  event's all-or-nothing and idempotency hold as in step 2 and 3: an event's inbox row exists exactly when
  its handler's writes do, and a crash before the commit leaves all of them to the redelivery;
* **a failing event does not take the others with it.** If anything in the batch raises — a handler, a
  constraint, a deadlock with another worker — the whole transaction rolls back (nothing of it is written)
  and each of its messages is processed again on its own, in a transaction of its own, exactly as a single
  message is (handled, duplicate, retried or dead, step 4). The batch costs the rare failure one more try of
  its neighbours, never their outcome.

Two workers' batches may wait for each other's row locks (the same session's projection, the same
address's hourly counter); the inbox rows are written in event id order, so two batches never deadlock on
them. Should their other writes deadlock, PostgreSQL aborts one transaction and that batch goes one by one as
above. A batch is only what prefetch has already brought, so at a low rate it is one message, and the
latency of a message is at most one batch's transaction more than alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from kombu import Connection
from kombu.exceptions import OperationalError
from kombu.mixins import ConsumerMixin
from sqlalchemy import Insert, Table, bindparam, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from shared.backoff import Backoff, equal_jitter
from shared.clock import utcnow
from shared.db import UnitOfWork
from shared.events import Event, InvalidEvent, parse_event
from shared.messaging.broker import connect
from shared.messaging.topology import (
    DEAD_EXCHANGE,
    RETRY_EXCHANGE,
    declare_topology,
    events_queue,
    events_queue_name,
)
from shared.observability import (
    MESSAGES_CONSUMED,
    reset_correlation_id,
    set_correlation_id,
)

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, Event], None]

ATTEMPT_HEADER = "x-labinov-attempt"
ERROR_HEADER = "x-labinov-error"
#: Messages the broker may send ahead of the acks: what one batch can take (see "Batches" above).
PREFETCH_COUNT = 50
#: At most this many messages settled in one transaction.
BATCH_LIMIT = PREFETCH_COUNT
#: A failed handler runs again after 1 s, 4 s, 16 s ... at most 10 minutes (each message on its own clock).
HANDLER_RETRY = Backoff(base=timedelta(seconds=1), factor=4, cap=timedelta(minutes=10))
#: Between attempts to reach the broker: 1 s doubling to 5 s, jittered — when the broker comes back, every
#: consumer of every service reconnects at once, and the jitter spreads them out.
CONSUMER_RECONNECT = Backoff(base=timedelta(seconds=1), factor=2, cap=timedelta(seconds=5), jitter=equal_jitter)


def retry_delay(attempt: int) -> timedelta:
    """Backoff before attempt number ``attempt`` (2, 3, ...): 1 s, 4 s, 16 s, ... capped at 10 minutes."""
    return HANDLER_RETRY.delay(attempt - 1)


def after_handler_failure(attempt: int, max_attempts: int) -> timedelta | None:
    """A handler failed on delivery ``attempt`` (1 for the first) of at most ``max_attempts``: how long until
    the next attempt, or ``None`` when it was the last one and the message goes to the dead-letter queue."""
    if attempt >= max_attempts:
        return None
    return retry_delay(attempt + 1)


class EventProcessor:
    """What happens to one message, independent of how it arrived (testable without a broker)."""

    def __init__(
        self,
        service: str,
        handlers: Mapping[str, Handler],
        unit_of_work: Callable[[], UnitOfWork],
        inbox: Table,
        max_attempts: int,
    ) -> None:
        self.service = service
        self.handlers = dict(handlers)
        self.unit_of_work = unit_of_work
        self.inbox = inbox
        self.max_attempts = max_attempts
        self._inbox_inserts: dict[str, Insert] = {}

    def process(self, body: Any, headers: Mapping[str, Any] | None) -> str:
        """Handle one message; returns the outcome: handled, duplicate, retried or dead.

        Raises only if the service's own database cannot be written — then the message must not be acked.
        """
        try:
            event = parse_event(body)
        except InvalidEvent as exc:
            log.error("dead-lettering a message that does not fit the catalogue: %s", exc)
            self._forward(body, DEAD_EXCHANGE.name, self.service, _attempt_number(headers or {}), str(exc))
            return self._count("invalid", "dead")
        return self._process_event(body, headers, event)

    def process_batch(self, messages: Sequence[tuple[Any, Mapping[str, Any] | None]]) -> list[str | None]:
        """Handle the messages ``(body, headers)`` that have arrived, those that fit in one transaction (see
        "Batches" in the module docstring); the outcome of each, in order, or ``None`` for one whose outcome
        could not be recorded (the service's own database is away): that one must not be acked."""
        outcomes: list[str | None] = [None] * len(messages)
        together: list[tuple[int, Event]] = []
        first_of: dict[str, int] = {}
        repeated: list[tuple[int, Event]] = []
        for index, (body, headers) in enumerate(messages):
            try:
                event = parse_event(body)
            except InvalidEvent:
                event = None
            if event is None or event.type not in self.handlers:  # dead-lettered, each on its own
                outcomes[index] = self._recording(partial(self.process, body, headers))
            elif event.id in first_of:
                repeated.append((index, event))
            else:
                first_of[event.id] = index
                together.append((index, event))
        if len(together) == 1:  # alone, it takes the single-message path itself
            [(index, _event)] = together
            body, headers = messages[index]
            outcomes[index] = self._recording(partial(self.process, body, headers))
        elif together:
            try:
                handled = self._handle_together([event for _index, event in together])
            except Exception as exc:
                log.warning(
                    "a batch of %d events failed (%s: %s); processing each on its own",
                    len(together),
                    type(exc).__name__,
                    exc,
                )
                for index, event in together:
                    body, headers = messages[index]
                    outcomes[index] = self._recording(partial(self._process_event, body, headers, event))
            else:
                for index, event in together:
                    outcomes[index] = self._settled(event, "handled" if event.id in handled else "duplicate")
        for index, event in repeated:  # the same event again in this batch: never handled twice
            if outcomes[first_of[event.id]] is not None:
                outcomes[index] = self._settled(event, "duplicate")
        return outcomes

    def _recording(self, process: Callable[[], str]) -> str | None:
        try:
            return process()
        except Exception:
            log.exception("could not record the outcome of a message; it will be redelivered")
            return None

    def _settled(self, event: Event, outcome: str) -> str:
        token = set_correlation_id(event.correlationid)
        try:
            log.info("%s %s: %s", event.type, event.id, outcome)
        finally:
            reset_correlation_id(token)
        return self._count(event.type, outcome)

    def _handle_together(self, events: Sequence[Event]) -> set[str]:
        """One transaction for ``events`` (distinct ids): their inbox rows, then the handler of each new one;
        the ids handled. Raises if any part fails, and then nothing of it is written."""
        with self.unit_of_work() as uow:
            new = self._enter_inbox_together(uow, events)
            for event in events:
                if event.id in new:
                    token = set_correlation_id(event.correlationid)
                    try:
                        self.handlers[event.type](uow, event)
                    finally:
                        reset_correlation_id(token)
            uow.commit()
        return new

    def _enter_inbox_together(self, uow: UnitOfWork, events: Sequence[Event]) -> set[str]:
        """Write the inbox rows of ``events`` in one statement, in event id order (so two workers' batches take
        the rows' locks in one order); the ids whose row was new."""
        now = utcnow()
        rows = [
            {"consumer": self.service, "event_id": event.id, "event_type": event.type, "handled_at": now}
            for event in sorted(events, key=lambda event: event.id)
        ]
        # the one-row template with a list of rows: SQLAlchemy sends it as one INSERT … VALUES (…), (…) RETURNING
        # ("insertmanyvalues"), in the rows' order
        return set(uow.session.scalars(self._inbox_template(uow), rows))

    def _process_event(self, body: Any, headers: Mapping[str, Any] | None, event: Event) -> str:
        attempt = _attempt_number(headers or {})
        token = set_correlation_id(event.correlationid)
        try:
            handler = self.handlers.get(event.type)
            if handler is None:
                self._forward(body, DEAD_EXCHANGE.name, self.service, attempt, f"no handler for {event.type}")
                return self._count(event.type, "dead")
            try:
                outcome = self._handle_once(handler, event)
            except Exception as exc:
                return self._handle_failure(body, event, attempt, exc)
            log.info("%s %s: %s", event.type, event.id, outcome)
            return self._count(event.type, outcome)
        finally:
            reset_correlation_id(token)

    def _handle_once(self, handler: Handler, event: Event) -> str:
        try:
            with self.unit_of_work() as uow:
                if not self._enter_inbox(uow, event):
                    return "duplicate"
                handler(uow, event)
                uow.commit()
                return "handled"
        except IntegrityError:
            with self.unit_of_work() as uow:
                if self._already_handled(uow, event.id):  # a concurrent worker handled it first
                    return "duplicate"
            raise

    def _enter_inbox(self, uow: UnitOfWork, event: Event) -> bool:
        """Write the event's inbox row in this transaction; False if the inbox already has it (handled)."""
        values = {"consumer": self.service, "event_id": event.id, "event_type": event.type, "handled_at": utcnow()}
        return uow.session.execute(self._inbox_template(uow), values).first() is not None

    def _inbox_template(self, uow: UnitOfWork) -> Insert:
        """``INSERT INTO inbox … ON CONFLICT DO NOTHING RETURNING event_id`` with named values, made once per
        dialect (the hot path neither builds nor compiles a statement). RETURNING, not rowcount: an INSERT's
        cursor is closed at once, and psycopg forgets its rowcount."""
        dialect = uow.session.get_bind().dialect.name
        statement = self._inbox_inserts.get(dialect)
        if statement is None:
            insert_for = postgresql_insert if dialect == "postgresql" else sqlite_insert
            statement = self._inbox_inserts[dialect] = (
                insert_for(self.inbox)
                .values(
                    consumer=bindparam("consumer"),
                    event_id=bindparam("event_id"),
                    event_type=bindparam("event_type"),
                    handled_at=bindparam("handled_at"),
                )
                .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
                .returning(self.inbox.c.event_id)
            )
        return statement

    def _already_handled(self, uow: UnitOfWork, event_id: str) -> bool:
        i = self.inbox.c
        return (
            uow.session.execute(select(i.event_id).where(i.consumer == self.service, i.event_id == event_id)).first()
            is not None
        )

    def _handle_failure(self, body: Any, event: Event, attempt: int, exc: Exception) -> str:
        error = f"{type(exc).__name__}: {exc}"
        delay = after_handler_failure(attempt, self.max_attempts)
        if delay is None:
            log.error("%s %s failed %d times, dead-lettering: %s", event.type, event.id, attempt, error)
            self._forward(body, DEAD_EXCHANGE.name, self.service, attempt, error)
            return self._count(event.type, "dead")
        log.warning(
            "%s %s failed (attempt %d of %d), retrying in %s: %s",
            event.type,
            event.id,
            attempt,
            self.max_attempts,
            delay,
            error,
            exc_info=exc,
        )
        self._forward(body, RETRY_EXCHANGE.name, events_queue_name(self.service), attempt + 1, error, utcnow() + delay)
        return self._count(event.type, "retried")

    def _forward(self, body, exchange, routing_key, attempt, error, not_before=None) -> None:
        with self.unit_of_work() as uow:
            uow.enqueue(
                body,
                exchange=exchange,
                routing_key=routing_key,
                headers={ATTEMPT_HEADER: attempt, ERROR_HEADER: error[:1000]},
                not_before=not_before,
            )
            uow.commit()

    def _count(self, event_type: str, outcome: str) -> str:
        MESSAGES_CONSUMED.labels(self.service, event_type, outcome).inc()
        return outcome


def _attempt_number(headers: Mapping[str, Any]) -> int:
    """Which attempt this delivery is (1 for the first); a header we cannot read counts as the first."""
    try:
        return max(int(headers.get(ATTEMPT_HEADER, 1)), 1)
    except (TypeError, ValueError):
        return 1


class _QueueConsumer(ConsumerMixin):
    """Kombu's consume loop, settling messages in batches: each drain that brought a message is followed by
    draining, without waiting, whatever else has already arrived (up to :data:`BATCH_LIMIT`); then the batch is
    processed (:meth:`EventProcessor.process_batch`) and each message acked once its outcome is committed.
    Everything happens on this one thread, the only one that touches the connection. Messages in hand when the
    connection breaks are dropped unacked: the broker redelivers them, and the inbox makes that harmless."""

    def __init__(self, connection: Connection, processor: EventProcessor, stop: threading.Event) -> None:
        self.connection = connection
        self.processor = processor
        self.stop = stop
        self._pending: list[tuple[Any, Any]] = []  # (body, kombu message) received, not yet settled
        self._live: Connection | None = None  # the connection consume() drains (a clone of ``connection``)

    @property
    def should_stop(self) -> bool:  # type: ignore[override]  # ConsumerMixin polls this between drains
        return self.stop.is_set()

    @contextmanager
    def establish_connection(self):
        """ConsumerMixin's, but waiting :data:`CONSUMER_RECONNECT` between attempts and giving up as soon as
        the worker stops."""
        with self.create_connection() as connection:
            failures = 0
            while True:
                try:
                    connection.ensure_connection(max_retries=0)  # one attempt; the waiting is ours
                    break
                except OperationalError as exc:  # kombu's name for every recoverable connection error
                    failures += 1
                    wait = CONSUMER_RECONNECT.seconds(failures)
                    self.on_connection_error(exc, wait)
                    if self.stop.wait(wait):
                        raise _Stopping from exc
            yield connection

    def get_consumers(self, Consumer, channel):
        declare_topology(channel)
        return [
            Consumer(
                queues=[events_queue(self.processor.service, self.connection)],
                callbacks=[self.on_message],
                accept=["json"],
                prefetch_count=PREFETCH_COUNT,
                on_decode_error=self.on_decode_error,
            )
        ]

    def on_consume_ready(self, connection, channel, consumers, **kwargs) -> None:
        self._live = connection
        self._pending = []  # a new channel: messages of an older one can no longer be acked (they come again)

    def consume(self, *args, **kwargs):
        """ConsumerMixin's loop, with the batch settled after each drain that brought something."""
        for _ in super().consume(*args, **kwargs):
            if self._pending:
                self._drain_arrived()
                self._settle_pending()
            yield

    def _drain_arrived(self) -> None:
        """Take what has already arrived, never waiting (``timeout=0``: py-amqp and kombu's virtual transports
        keep a partly read message for the next drain)."""
        assert self._live is not None
        while len(self._pending) < BATCH_LIMIT:
            try:
                self._live.drain_events(timeout=0)
            except TimeoutError:
                return

    def on_message(self, body: Any, message) -> None:
        self._pending.append((body, message))

    def on_decode_error(self, message, exc: Exception) -> None:
        """Not JSON (or not an accepted content type): dead-letter the raw body like any unfit message."""
        raw = message.body if isinstance(message.body, str) else repr(message.body)[:10000]
        self._pending.append(({"undecodable": raw, "error": str(exc)}, message))

    def _settle_pending(self) -> None:
        """Process the batch, then ack each message whose outcome is committed in the service's own database;
        one whose outcome could not be recorded (the database is away) goes back to the broker, to come again."""
        batch, self._pending = self._pending, []
        outcomes = self.processor.process_batch([(body, message.headers) for body, message in batch])
        for (_body, message), outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                message.requeue()
            else:
                message.ack()
        if None in outcomes:
            time.sleep(1)


class _Stopping(Exception):
    """Raised inside a reconnect loop when the worker is asked to stop."""


def consume_events(broker_url: str, processor: EventProcessor, stop: threading.Event) -> None:
    """Consume the service's queue until ``stop`` is set; reconnects by itself if the broker goes away."""
    with connect(broker_url) as connection:
        try:
            _QueueConsumer(connection, processor, stop).run()
        except _Stopping:
            pass
