"""What every sender of the other channels (gateway, webhooks) records the same way as the mail sender: each
attempt in ``delivery_attempts`` (kept for good, in the transaction that records its outcome), the events
about a delivery under the correlation id of the request that caused it, and what another system reports
later about a delivery (:func:`apply_report`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, update

from services.notification.tables import DeliveryAttempt
from shared.db import UnitOfWork
from shared.observability import new_correlation_id, reset_correlation_id, set_correlation_id


def record_attempt(uow: UnitOfWork, delivery_id: str, outcome: str, error: str | None = None) -> None:
    uow.session.execute(
        insert(DeliveryAttempt.__table__).values(
            delivery_id=delivery_id, outcome=outcome, error=error, at=datetime.now(UTC)
        )
    )


@contextmanager
def correlation_of(correlation_id: str | None) -> Iterator[None]:
    previous = set_correlation_id(correlation_id or new_correlation_id())
    try:
        yield
    finally:
        reset_correlation_id(previous)


def apply_report(uow: UnitOfWork, row: Any, from_states: Sequence[str], values: dict[str, Any]) -> str | None:
    """Write ``values`` onto ``row`` (a mail or gateway delivery, read ``FOR UPDATE``) as another system
    reported — a gateway's status callback, a mail provider's bounce — if it is in one of ``from_states``;
    returns the state it changed from, or ``None`` when the report changes nothing (a repeat, a final state).

    A compare-and-set on the state read (``UPDATE … WHERE status = <the state read>``): of two reports racing,
    one changes the row and the other nothing. PostgreSQL's row lock makes one try enough; on SQLite the sender
    may commit between the read and the write, and the row is read again. A report about a row still
    ``sending`` also counts the sender's try (which its own record, refused by the work queue's guard since the
    row is no longer pending, will not)."""
    table = row.__table__
    c = table.c
    for _try in range(3):
        before = row.status
        if before not in from_states:
            return None
        counted = {"attempts": c.attempts + 1} if before == "sending" else {}
        statement = update(table).where(c.id == row.id, c.status == before).values(**values, **counted)
        if uow.session.execute(statement).rowcount:
            uow.session.refresh(row)
            return before
        uow.session.refresh(row)
    return None
