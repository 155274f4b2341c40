"""The ``idempotency_keys`` table as a store of claimed keys and their answers — without any web framework.

:mod:`shared.idempotency` (the Flask decorator) decides *when* to claim, replay or store; this module only
reads and writes rows, so that a worker's housekeeping can purge expired keys without importing Flask.
The design — claim, run, store or release, and the one window a crash leaves — is written in
:mod:`shared.idempotency`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Delete, Engine, Row, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from shared.clock import utcnow

#: How long a key is remembered: a retry after a lost answer comes within minutes, not days.
KEY_LIFETIME = timedelta(hours=24)
#: A claim without an answer after this long was left by a process that died mid-request.
CLAIM_TIMEOUT = timedelta(seconds=60)


class KeyKeepsVanishing(RuntimeError):
    """The key's row was released and re-claimed again and again while this request tried to claim it."""


def expired_keys(table: Table) -> Delete:
    """Delete every key older than :data:`KEY_LIFETIME` (housekeeping runs it)."""
    return delete(table).where(table.c.created_at < utcnow() - KEY_LIFETIME)


def claim_key(engine: Engine, table: Table, scope: str, key: str, fingerprint: str) -> Row[Any] | None:
    """Claim ``key`` in ``scope``: ``None`` if this request now holds it, else the earlier request's row.

    An expired key, or a claim abandoned for longer than :data:`CLAIM_TIMEOUT`, is deleted first, so it can
    be claimed anew. The primary key ``(scope, key)`` makes the insert the exclusive claim.
    """
    c = table.c
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            delete(table).where(
                c.scope == scope,
                c.key == key,
                (c.created_at < now - KEY_LIFETIME) | (c.status.is_(None) & (c.created_at < now - CLAIM_TIMEOUT)),
            )
        )
    for _ in range(3):  # the earlier row may be released and vanish between our insert and our read
        try:
            with engine.begin() as connection:
                connection.execute(insert(table).values(scope=scope, key=key, fingerprint=fingerprint, created_at=now))
            return None
        except IntegrityError:
            with engine.connect() as connection:
                earlier = connection.execute(select(table).where(c.scope == scope, c.key == key)).first()
            if earlier is not None:
                return earlier
    raise KeyKeepsVanishing(f"could not claim idempotency key {key!r}: it keeps appearing and vanishing")


def store_answer(engine: Engine, table: Table, scope: str, key: str, status: int, content_type: str, body: str) -> None:
    """Keep the answer on the claimed row, for replays."""
    c = table.c
    with engine.begin() as connection:
        connection.execute(
            update(table)
            .where(c.scope == scope, c.key == key)
            .values(status=status, content_type=content_type, body=body)
        )


def release_key(engine: Engine, table: Table, scope: str, key: str) -> None:
    """Give the claim up (after a server error), so that a retry runs the request again."""
    with engine.begin() as connection:
        connection.execute(delete(table).where(table.c.scope == scope, table.c.key == key))
