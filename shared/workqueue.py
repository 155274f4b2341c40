"""Rows of a table as a work queue that several workers share: claim with a lease, renew, postpone, finish.

Work that leaves the process — outbox rows to publish, mail to send, and later SMS, webhooks and
announcement fan-out — is first written as a row in the service's own database, in the transaction that
caused it, and then done by a worker loop. This module is that loop's half that touches the table; each
sender adds only what is its own (what "done" means, what to do after a failure).

A queue table needs an ``id`` primary key, ``claim_token`` (text) and ``claimed_until`` (naive UTC) columns,
a condition that says a row still waits to be done (``pending``, e.g. ``sent_at IS NULL``) and a column that
says from when it is due (``due_at``, e.g. ``not_before``).

Concurrency design — any number of workers, in any number of processes, may work one table at once:

1. **Claim.** :meth:`WorkQueue.claim` takes up to ``batch_size`` rows that are pending, due and not leased,
   in one transaction::

       SELECT id FROM t WHERE <pending> AND <due> AND <unleased> ORDER BY ... LIMIT n
          FOR UPDATE SKIP LOCKED                         -- PostgreSQL
       UPDATE t SET claim_token = :new, claimed_until = now + lease [, what the caller adds]
        WHERE id IN (:those ids) AND <pending> AND <due> AND <unleased>
       RETURNING *

   On PostgreSQL ``SKIP LOCKED`` lets concurrent claims take disjoint rows without waiting for each other:
   the rows one claim selected stay locked by it until it commits, so no other claim can select them, and
   once it has committed they are leased. On SQLite the transaction holds the database write lock from its
   first statement (``BEGIN IMMEDIATE``, see :mod:`shared.db`), so claims simply take turns. The ``UPDATE``
   re-checks the conditions all the same. The new random token marks the batch. The rows come back from the
   ``UPDATE`` itself (``RETURNING``), put in the ``SELECT``'s order: reading them again by their token would
   be a scan of the whole table (the token has no index), a cost that grew with every row the table keeps.
   A claim may also write values of the caller's with the lease (the mail sender marks its batch
   ``sending`` so), in the same statement.
2. **Guard.** Every later change of a claimed row — :meth:`~WorkQueue.renew`, :meth:`~WorkQueue.postpone`,
   :meth:`~WorkQueue.release`, :meth:`~WorkQueue.finish`, or any :meth:`~WorkQueue.guarded` statement —
   applies only ``WHERE id = :id AND claim_token = :token AND <pending>``. A worker whose lease ran out and
   whose rows another worker has claimed since (with a new token) changes nothing; the methods say so by
   returning ``False`` or a count of 0, and the worker leaves those rows to their new holder.
3. **Lease.** A worker that dies holding a claim only delays its rows: once ``claimed_until`` has passed,
   any worker may claim them again. A worker whose single piece of work may outlast the lease renews it
   first (:meth:`~WorkQueue.renew`) and skips the row if that fails.
4. **The one unavoidable window.** Work done outside the database (a message published, a mail accepted)
   and the row finished afterwards cannot be one transaction. If the worker dies, or the database fails,
   between the two, the row is done again once its lease runs out: every queue here is *at least once*, and
   what it feeds must recognise a repeat (consumers keep an inbox; a resent mail keeps its ``Message-ID``).

Transactions: each method runs in a transaction of its own, unless given ``on=`` — a connection or a
database session whose transaction the caller commits — so that finishing a row can commit together with
what its outcome writes (a delivery's state and its ``notification.delivered`` event, in one unit of work).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import Column, ColumnElement, Connection, CursorResult, Engine, Row, Table, Update, or_, select, update
from sqlalchemy.orm import Session

from shared.clock import utcnow

#: Where a guarded change runs: its own transaction (``None``), or the caller's connection or session.
Executor = Connection | Session | None


class Claim(NamedTuple):
    """The rows one claim took, in order, and the token that guards every later change of them."""

    token: str
    rows: list[Row[Any]]


class WorkQueue:
    """One table's rows as a queue shared by competing workers (see the module docstring for the design)."""

    def __init__(
        self,
        engine: Engine,
        table: Table,
        *,
        pending: Sequence[ColumnElement[bool]],
        due_at: Column[Any],
        lease: timedelta,
        order_by: Sequence[Any] = (),
    ) -> None:
        self.engine = engine
        self.table = table
        self.pending = tuple(pending)
        self.due_at = due_at
        self.lease = lease
        self.order = (*order_by, table.c.id)

    # -- claiming ----------------------------------------------------------------------------------------

    def claim(self, batch_size: int, **values: Any) -> Claim:
        """Lease up to ``batch_size`` due rows to this worker, taken and returned in ``order_by`` order, writing
        ``values`` (if any) on them with the lease."""
        now = utcnow()
        token = uuid.uuid4().hex
        c = self.table.c
        claimable = (*self.pending, self.due_at <= now, or_(c.claimed_until.is_(None), c.claimed_until < now))
        due_ids = select(c.id).where(*claimable).order_by(*self.order).limit(batch_size)
        if self.engine.dialect.name == "postgresql":
            due_ids = due_ids.with_for_update(skip_locked=True)
        with self.engine.begin() as connection:
            # Two statements, not UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED): PostgreSQL
            # may plan that as a semi-join that runs the subquery once per row, and its LIMIT then no longer
            # limits anything (a claim of 2 took every due row).
            ids = list(connection.scalars(due_ids))
            if not ids:
                return Claim(token, [])
            claimed = connection.execute(
                update(self.table)
                .where(c.id.in_(ids), *claimable)
                .values(**values, claim_token=token, claimed_until=now + self.lease)
                .returning(*self.table.c)
            ).all()
        by_id = {row.id: row for row in claimed}
        return Claim(token, [by_id[row_id] for row_id in ids if row_id in by_id])

    # -- changing claimed rows, always through the guard -------------------------------------------------

    def guarded(self, token: str, row_ids: Iterable[Any]) -> Update:
        """``UPDATE`` of those of ``row_ids`` that this claim still holds and that are still pending: the one
        guard every change of a claimed row goes through. Add ``.values(...)`` and execute it anywhere."""
        c = self.table.c
        return update(self.table).where(c.id.in_(list(row_ids)), c.claim_token == token, *self.pending)

    def renew(self, token: str, row_id: Any, *, on: Executor = None) -> bool:
        """Extend the lease on one row before working on it; False if the row is no longer this claim's."""
        statement = self.guarded(token, [row_id]).values(claimed_until=utcnow() + self.lease)
        return self._execute(statement, on) == 1

    def postpone(self, token: str, row_id: Any, until: datetime, *, on: Executor = None, **values: Any) -> bool:
        """Give one row back, due again at ``until`` (naive or aware UTC), writing ``values`` with it (an
        attempt count, the last error); False if the row is no longer this claim's."""
        statement = self.guarded(token, [row_id]).values(
            **values, claim_token=None, claimed_until=None, **{self.due_at.key: _naive_utc(until)}
        )
        return self._execute(statement, on) == 1

    def release(self, token: str, row_ids: Iterable[Any], *, on: Executor = None) -> int:
        """Give rows that were claimed but not tried back to any worker, due at once; how many were ours."""
        ids = list(row_ids)
        if not ids:
            return 0
        return self._execute(self.guarded(token, ids).values(claim_token=None, claimed_until=None), on)

    def finish(self, token: str, row_ids: Iterable[Any], *, on: Executor = None, **values: Any) -> int:
        """Mark rows done with ``values`` (which must make them no longer pending, e.g. ``sent_at=now``) and
        end their lease; returns how many were still this claim's. The token stays on the row as a record
        of the batch that did it."""
        ids = list(row_ids)
        if not ids:
            return 0
        return self._execute(self.guarded(token, ids).values(**values, claimed_until=None), on)

    def _execute(self, statement: Update, on: Executor) -> int:
        """Run a guarded ``UPDATE`` on ``on`` (or in a transaction of its own); how many rows it changed."""
        if on is None:
            with self.engine.begin() as connection:
                return connection.execute(statement).rowcount
        return cast(CursorResult[Any], on.execute(statement)).rowcount


def _naive_utc(moment: datetime) -> datetime:
    """Queue tables store naive UTC (as :func:`shared.clock.utcnow`); accept aware times too."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)
