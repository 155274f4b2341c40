"""Sending due mail: the deliveries work queue and its outcomes (the worker's mail loops).

:func:`send_due_mail` claims due deliveries, oldest due first, from the deliveries work queue
(:class:`shared.workqueue.WorkQueue`: leases, claim tokens, ``SKIP LOCKED``) and sends them over one
connection. The claim itself marks the batch ``sending`` (one statement with the lease); before each mail
the sender makes sure it still holds that row's lease (see *the lease of a batch*) and skips the row if another
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
over mid-batch is never sent by both (below).

**The lease of a batch.** The claim leases the whole batch for :data:`SEND_LEASE` (2 minutes); a batch of
:data:`SEND_BATCH` mails normally goes out in well under a second. Renewing each row's lease before its mail
(one ``UPDATE`` per mail, the sender's second largest wait after SMTP's replies) is therefore replaced by
:class:`_BatchLease`: the sender keeps the end of the lease it was given (the earliest ``claimed_until`` of
the batch, as the database wrote it) and, before each mail, renews the lease of every row of the batch not
yet recorded — one guarded ``UPDATE … RETURNING id`` — only when less than :data:`RENEW_WHEN_LEFT` (half the
lease) is left; a row the renewal did not return is no longer this claim's and is skipped. Why no row is
ever sent by two workers: another worker can claim a row only once its ``claimed_until`` has passed (the
claim's condition) or after this claim has given it back (postponed, finished — guarded by this claim's
token); nothing else in the service changes a leased row (an opt-out or a cancelled announcement skips
leased deliveries). So while the sender's clock says the lease has at least :data:`RENEW_WHEN_LEFT` to run,
the row is still this claim's without asking the database — exactly what a per-mail renewal proved, whose
``UPDATE`` answered "yours for two more minutes" and was then followed by the send just as this check is.
Both hold as long as sending one mail (bounded by the SMTP timeout, 15 s) and the clock difference between
the workers' machines stay well under that margin of a minute.

These operations need transactions of their own (per lease renewal, per batch of outcomes, per failure), so
they take the runtime and commit each themselves (the rule in ``UnitOfWork``); a renewal is a single
statement and runs in autocommit on PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert

from services.notification import rules
from services.notification.attempts import correlation_of, record_attempt
from services.notification.domain import opted_out, unsubscribe_links
from services.notification.mail import MailTransport, Send, classify_send_failure
from services.notification.messages import Unsubscribe, compose
from services.notification.rules import MAX_SEND_ATTEMPTS, Fail, RetryAt, SendFailure, WaitForServer
from services.notification.tables import UNFINISHED_STATES, Delivery, DeliveryAttempt
from shared.backoff import equal_jitter
from shared.clock import utcnow
from shared.runtime import ServiceRuntime
from shared.workqueue import WorkQueue

log = logging.getLogger(__name__)

SEND_LEASE = timedelta(minutes=2)
#: A batch's lease is renewed before a mail only when less than this is left of it (see the module docstring).
RENEW_WHEN_LEFT = SEND_LEASE / 2
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
    token, rows = queue.claim(batch_size, status="sending")
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
                record_attempt(uow, row.id, "cancelled", "opted out")
        uow.commit()
    return [row for row in rows if row not in cancelled]


def _send_batch(runtime: ServiceRuntime, queue: WorkQueue, send: Send, token: str, rows: Sequence) -> None:
    """Send each row on its own; once the connection is lost, the rest of the batch waits for the server.
    The mails the server accepted are recorded together: before any failure is, and at the end."""
    links = unsubscribe_links(runtime) if any(row.announcement_id for row in rows) else None
    lease = _BatchLease(runtime.engine, queue, token, rows)
    accepted: list = []
    for index, row in enumerate(rows):
        if not lease.holds(row.id):
            log.warning("delivery %s skipped: its lease ran out and another worker has claimed it", row.id)
            continue
        try:
            unsubscribe = None
            if links is not None and row.announcement_id:
                unsubscribe = Unsubscribe(links(row.recipient, row.channel))
            send(compose(row, runtime.settings.mail_from, unsubscribe))
        except Exception as exc:
            failure = classify_send_failure(exc)
            _record_sent(runtime, queue, token, accepted)
            lease.done(accepted)
            accepted = []
            _after_failure(runtime, queue, token, [row], failure, exc)
            lease.done([row])
            if failure.connection_lost:
                _after_failure(runtime, queue, token, rows[index + 1 :], SendFailure.SERVER_UNAVAILABLE, exc)
                return
            continue
        accepted.append(row)
    # a database error here leaves these rows ``sending`` and leased until the lease ends, when they are sent
    # again (the widened window, see the module docstring)
    _record_sent(runtime, queue, token, accepted)


class _BatchLease:
    """What a sender knows of its batch's lease, renewed for the rows not yet recorded only when it runs low.

    ``holds(row_id)`` before each mail: True if the row is still this claim's (see *the lease of a batch* in
    the module docstring for why no database round trip is needed while enough of the lease is left)."""

    def __init__(self, engine: Engine, queue: WorkQueue, token: str, rows: Sequence) -> None:
        self.engine = engine
        self.queue = queue
        self.token = token
        self.until = min(row.claimed_until for row in rows)  # as the claim wrote it: the database's own figure
        self.ours = {row.id for row in rows}  # claimed, and not yet recorded or given back by this sender

    def holds(self, row_id: str) -> bool:
        if row_id in self.ours and utcnow() + RENEW_WHEN_LEFT >= self.until:
            self._renew()
        return row_id in self.ours

    def done(self, rows: Sequence) -> None:
        """These rows are recorded (or given back): their lease is no longer this sender's to renew."""
        self.ours.difference_update(row.id for row in rows)

    def _renew(self) -> None:
        """One guarded ``UPDATE`` for every row still ours; those it does not return were taken over."""
        until = utcnow() + self.queue.lease
        statement = (
            self.queue.guarded(self.token, sorted(self.ours)).values(claimed_until=until).returning(deliveries.c.id)
        )
        if self.engine.dialect.name == "postgresql":  # a single statement is atomic by itself: no BEGIN/COMMIT
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                renewed = set(connection.scalars(statement))
        else:
            with self.engine.begin() as connection:
                renewed = set(connection.scalars(statement))
        lost = self.ours - renewed
        if lost:
            log.warning("%d deliveries of a batch were taken over by another worker after its lease ran out", len(lost))
        self.ours = renewed
        self.until = until


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
                with correlation_of(row.correlation_id):
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
            record_attempt(uow, row.id, outcome, error)
        uow.commit()


def _record_outcome(
    runtime: ServiceRuntime, queue: WorkQueue, token: str, row, status: str, attempts: int, error: str | None = None
) -> None:
    """Mark the delivery sent or failed, keep the attempt and publish the matching event, in one transaction."""
    with correlation_of(row.correlation_id), runtime.unit_of_work() as uow:
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
            record_attempt(uow, row.id, status, error)
            uow.publish(
                "notification.delivered" if status == "sent" else "notification.failed",
                outcome_event_data(row, error),
                subject=row.id,
            )
        uow.commit()
