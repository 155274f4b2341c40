"""Sending due mail: the deliveries work queue and its outcomes (the worker's mail loops).

:func:`send_due_mail` claims due deliveries, oldest due first, from the deliveries work queue
(:class:`shared.workqueue.WorkQueue`: leases, claim tokens, ``SKIP LOCKED``) and sends them over one
connection. Before each mail it renews that row's lease and marks it ``sending``, and skips the row if another
worker has taken it over (a batch can outlast the lease on a slow server). An announcement's delivery to an
address that has opted out since the fan-out is cancelled instead. After a failed send it asks
:func:`services.notification.rules.after_failed_send` what to do — retry (with jitter), wait for the server,
or fail (a recipient refused for good fails at once) — and records that. Every try is kept in
``delivery_attempts``, written in the transaction that records its outcome; each final outcome is recorded
with its ``notification.delivered`` or ``notification.failed`` event (under the delivery's correlation id) in
one transaction. The mails of one claimed batch (at most :data:`SEND_BATCH`) that the server accepted are
recorded together, after they went: one transaction for the batch (before any failure in it is recorded,
and at its end), not one per mail — at a thousand mails a second the per-mail commit was the sender's own
limit.

**The widened window.** The one unavoidable window — the server accepted a mail but the outcome was not
committed (the process died, the database failed) — leaves the row ``sending`` with a lease; once the lease
runs out it is claimed and sent again, with the same ``Message-ID`` (SMTP gives no way to ask whether a mail
was accepted, so the copy cannot be avoided, only recognised by mail clients). Recording a batch's outcomes
together widens it from one mail to the mails of one batch accepted before the crash: a crash re-sends at
most :data:`SEND_BATCH` mails, each with its own ``Message-ID`` again. The guarantees that matter are
unchanged: every outcome is committed with its attempt and its event, and a delivery that another worker took
over mid-batch is never sent by both (the lease is renewed per mail).

These operations need transactions of their own (per lease renewal, per batch of outcomes, per failure), so
they take the runtime and commit each themselves (the rule in ``UnitOfWork``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, insert

from services.notification import rules
from services.notification.domain import opted_out, unsubscribe_key
from services.notification.mail import MailTransport, Send, classify_send_failure
from services.notification.messages import Unsubscribe, compose
from services.notification.rules import MAX_SEND_ATTEMPTS, Fail, RetryAt, SendFailure, WaitForServer
from services.notification.tables import UNFINISHED_STATES, Delivery, DeliveryAttempt
from shared.backoff import equal_jitter
from shared.clock import utcnow
from shared.db import UnitOfWork
from shared.observability import new_correlation_id, reset_correlation_id, set_correlation_id
from shared.runtime import ServiceRuntime
from shared.workqueue import WorkQueue

log = logging.getLogger(__name__)

SEND_LEASE = timedelta(minutes=2)
deliveries = Delivery.__table__


def delivery_queue(engine: Engine) -> WorkQueue:
    """The deliveries as a work queue: queued (or left ``sending`` by a crash), due from ``next_attempt_at``,
    the longest due first."""
    c = deliveries.c
    return WorkQueue(
        engine,
        deliveries,
        pending=(c.status.in_(UNFINISHED_STATES),),
        due_at=c.next_attempt_at,
        order_by=(c.next_attempt_at,),
        lease=SEND_LEASE,
    )


#: Mails claimed at once by one sender; also the most that a crash can make the server receive twice (see
#: "the widened window" in the module docstring).
SEND_BATCH = 50


def send_due_mail(runtime: ServiceRuntime, transport: MailTransport, batch_size: int = SEND_BATCH) -> int:
    """Send the deliveries that are due, oldest first, over one connection; returns how many were claimed."""
    queue = delivery_queue(runtime.engine)
    token, rows = queue.claim(batch_size)
    if not rows:
        return 0
    rows = _cancel_opted_out(runtime, queue, token, rows)
    if not rows:
        return 1
    connection = ExitStack()
    try:
        send = connection.enter_context(transport.connection())
    except Exception as exc:  # no connection, whatever the reason: no mail can go
        _after_failure(runtime, queue, token, rows, SendFailure.SERVER_UNAVAILABLE, exc)
    else:
        with connection:
            _send_batch(runtime, queue, send, token, rows)
    return len(rows)


def _cancel_opted_out(runtime: ServiceRuntime, queue: WorkQueue, token: str, rows: Sequence) -> list:
    """Announcement mail to an address that opted out after the fan-out is cancelled, not sent."""
    announcement_rows = [row for row in rows if row.announcement_id]
    if not announcement_rows:
        return list(rows)
    with runtime.unit_of_work() as uow:
        gone = opted_out(uow.session, [row.recipient for row in announcement_rows])
        cancelled = [row for row in announcement_rows if row.recipient in gone]
        for row in cancelled:
            if queue.finish(token, [row.id], on=uow.session, status="cancelled", last_error="opted out"):
                _attempt(uow, row.id, "cancelled", "opted out")
        uow.commit()
    return [row for row in rows if row not in cancelled]


def _send_batch(runtime: ServiceRuntime, queue: WorkQueue, send: Send, token: str, rows: Sequence) -> None:
    """Send each row on its own; once the connection is lost, the rest of the batch waits for the server.
    The mails the server accepted are recorded together: before any failure is, and at the end."""
    key = unsubscribe_key(runtime) if any(row.announcement_id for row in rows) else None
    renew = _lease_renewal(runtime.engine, queue, token)
    accepted: list = []
    for index, row in enumerate(rows):
        if not renew(row.id):
            log.warning("delivery %s skipped: its lease ran out and another worker has claimed it", row.id)
            continue
        try:
            unsubscribe = None
            if key is not None and row.announcement_id:
                link = rules.unsubscribe_token(key, row.recipient, row.channel)
                unsubscribe = Unsubscribe(f"{runtime.settings.public_url}/notification/unsubscribe/{link}")
            send(compose(row, runtime.settings.mail_from, unsubscribe))
        except Exception as exc:
            failure = classify_send_failure(exc)
            _record_sent(runtime, queue, token, accepted)
            accepted = []
            _after_failure(runtime, queue, token, [row], failure, exc)
            if failure.connection_lost:
                _after_failure(runtime, queue, token, rows[index + 1 :], SendFailure.SERVER_UNAVAILABLE, exc)
                return
            continue
        accepted.append(row)
    # a database error here leaves these rows ``sending`` and leased until the lease ends, when they are sent
    # again (the widened window, see the module docstring)
    _record_sent(runtime, queue, token, accepted)


def _lease_renewal(engine: Engine, queue: WorkQueue, token: str):
    """``renew(row_id)``: renew one row's lease and mark it ``sending``; False if it is no longer this claim's.

    One guarded ``UPDATE`` per mail, so a row another worker took over mid-batch is never sent twice. On
    PostgreSQL it runs in autocommit: one round trip instead of three (BEGIN, UPDATE, COMMIT) — a single
    statement is atomic by itself."""
    c = deliveries.c
    statement = queue.guarded(token, [bindparam("row_id")]).values(
        claimed_until=bindparam("lease_until", type_=c.claimed_until.type), status="sending"
    )
    autocommit = engine.dialect.name == "postgresql"

    def renew(row_id: str) -> bool:
        values = {"row_id": row_id, "lease_until": utcnow() + queue.lease}
        if autocommit:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                return connection.execute(statement, values).rowcount == 1
        with engine.begin() as connection:
            return connection.execute(statement, values).rowcount == 1

    return renew


def _record_sent(runtime: ServiceRuntime, queue: WorkQueue, token: str, rows: Sequence) -> None:
    """Mark ``rows`` sent, keep each one's attempt and publish each one's ``notification.delivered``, all in one
    transaction (each outcome still commits with its event). A row no longer this claim's gets nothing."""
    if not rows:
        return
    c = deliveries.c
    now = datetime.now(UTC)
    by_id = {row.id: row for row in rows}
    with runtime.unit_of_work() as uow:
        finish = (
            queue.guarded(token, list(by_id))
            .values(status="sent", attempts=c.attempts + 1, last_error=None, sent_at=now, claimed_until=None)
            .returning(c.id)
        )
        finished = [by_id[row_id] for row_id in uow.session.scalars(finish)]
        if finished:
            uow.session.execute(
                insert(DeliveryAttempt.__table__),
                [{"delivery_id": row.id, "outcome": "sent", "error": None, "at": now} for row in finished],
            )
            events = []
            for row in finished:
                with _correlation_of(row):
                    _envelope, (statement, values) = uow.event_write(
                        "notification.delivered", outcome_event_data(row, None), subject=row.id
                    )
                events.append(values)
            uow.session.execute(statement, events)
        uow.commit()


def outcome_event_data(row, error: str | None) -> dict[str, Any]:
    """The data of ``notification.delivered`` / ``notification.failed`` about a delivery row, on any channel."""
    return {
        "delivery_id": row.id,
        "channel": row.channel,
        "recipient": row.recipient,
        "template": row.template,
        "caused_by": row.caused_by,
        "error": error,
    }


def _attempt(uow: UnitOfWork, delivery_id: str, outcome: str, error: str | None = None) -> None:
    uow.session.execute(
        insert(DeliveryAttempt.__table__).values(
            delivery_id=delivery_id, outcome=outcome, error=error, at=datetime.now(UTC)
        )
    )


def _after_failure(
    runtime: ServiceRuntime, queue: WorkQueue, token: str, rows: Sequence, failure: SendFailure, exc: Exception
) -> None:
    """Ask the rules what becomes of each of ``rows`` after ``failure``, and write it with its attempt."""
    if not rows:
        return
    error = f"{type(exc).__name__}: {exc}"[:2000]
    if failure is SendFailure.SERVER_UNAVAILABLE:
        log.warning("mail server unavailable, %d deliveries wait: %s", len(rows), error)
    now = datetime.now(UTC)
    for row in rows:
        decision = rules.after_failed_send(
            failure, attempts=row.attempts, created_at=row.created_at, now=now, jitter=equal_jitter
        )
        match decision:
            case RetryAt(at=at, attempts=attempts):
                log.warning("delivery %s failed (attempt %d of %d): %s", row.id, attempts, MAX_SEND_ATTEMPTS, error)
                _postpone(runtime, queue, token, row, at, "retry", error, attempts=attempts)
            case WaitForServer(at=at):
                _postpone(runtime, queue, token, row, at, "wait", error)
            case Fail(reason=reason, attempts=attempts):
                log.warning("delivery %s failed for good (%s, %d attempts): %s", row.id, reason.value, attempts, error)
                _record_outcome(runtime, queue, token, row, "failed", attempts, error)


def _postpone(
    runtime: ServiceRuntime, queue: WorkQueue, token: str, row, at: datetime, outcome: str, error: str, **values
) -> None:
    with runtime.unit_of_work() as uow:
        if queue.postpone(token, row.id, at, on=uow.session, status="queued", last_error=error, **values):
            _attempt(uow, row.id, outcome, error)
        uow.commit()


def _record_outcome(
    runtime: ServiceRuntime, queue: WorkQueue, token: str, row, status: str, attempts: int, error: str | None = None
) -> None:
    """Mark the delivery sent or failed, keep the attempt and publish the matching event, in one transaction."""
    with _correlation_of(row), runtime.unit_of_work() as uow:
        finished = queue.finish(
            token,
            [row.id],
            on=uow.session,
            status=status,
            attempts=attempts,
            last_error=error,
            sent_at=datetime.now(UTC) if status == "sent" else None,
        )
        if finished:
            _attempt(uow, row.id, status, error)
            uow.publish(
                "notification.delivered" if status == "sent" else "notification.failed",
                outcome_event_data(row, error),
                subject=row.id,
            )
        uow.commit()


@contextmanager
def _correlation_of(row) -> Iterator[None]:
    """The events about a delivery carry the correlation id of the request that caused it."""
    previous = set_correlation_id(row.correlation_id or new_correlation_id())
    try:
        yield
    finally:
        reset_correlation_id(previous)
