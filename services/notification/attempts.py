"""What every sender of the other channels (gateway, webhooks) records the same way as the mail sender: each
attempt in ``delivery_attempts`` (kept for good, in the transaction that records its outcome), and the events
about a delivery under the correlation id of the request that caused it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import insert

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
