"""Time, in one place: infrastructure tables store naive UTC; domain times are aware. Where times are shown to
people is configuration (``LABINOV_TIMEZONE``, ``Settings.timezone``), not this module's business."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """Naive UTC 'now', the form every Labinov table stores (SQLite keeps no offsets)."""
    return datetime.now(UTC).replace(tzinfo=None)


class UTCDateTime(TypeDecorator):
    """An aware datetime stored as naive UTC and read back aware, identically on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)
