"""Housekeeping keeps the outbox, inbox and idempotency keys small — and never touches what is still due."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, insert, select, update

from shared.clock import utcnow
from shared.housekeeping import RETENTION, purge_old_records
from shared.messaging.tables import outbox_row
from tests.support.runtimes import migrated_runtime

E0, E1, E2, E3 = (str(uuid.UUID(int=n)) for n in range(4))


def _count(runtime, table) -> int:
    with runtime.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(table))


def test_old_sent_rows_go_and_unsent_rows_stay_however_old(tmp_path, postgres_url):
    runtime = migrated_runtime("notification", tmp_path, postgres_url)
    long_ago = utcnow() - RETENTION - timedelta(days=1)
    keys = runtime.metadata.tables["idempotency_keys"]
    with runtime.engine.begin() as connection:
        for n in range(4):
            envelope = {"id": str(uuid.UUID(int=n))}
            connection.execute(insert(runtime.outbox).values(**outbox_row(envelope, "x", "y", {}, None)))
        # e0: sent long ago (goes); e1: sent recently (stays); e2, e3: never sent, old (stay: still due)
        connection.execute(update(runtime.outbox).where(runtime.outbox.c.event_id == E0).values(sent_at=long_ago))
        connection.execute(update(runtime.outbox).where(runtime.outbox.c.event_id == E1).values(sent_at=utcnow()))
        connection.execute(
            update(runtime.outbox).where(runtime.outbox.c.event_id.in_([E2, E3])).values(created_at=long_ago)
        )
        connection.execute(
            insert(runtime.inbox),
            [
                {"consumer": "notification", "event_id": "old", "event_type": "t", "handled_at": long_ago},
                {"consumer": "notification", "event_id": "new", "event_type": "t", "handled_at": utcnow()},
            ],
        )
        connection.execute(
            insert(keys),
            [
                {"scope": "s", "key": "old", "fingerprint": "f", "created_at": long_ago},
                {"scope": "s", "key": "new", "fingerprint": "f", "created_at": utcnow()},
            ],
        )

    deleted = purge_old_records(runtime)

    assert deleted == {"outbox": 1, "inbox": 1, "idempotency_keys": 1}
    with runtime.engine.connect() as connection:
        left = set(connection.scalars(select(runtime.outbox.c.event_id)))
    assert left == {E1, E2, E3}
    assert _count(runtime, runtime.inbox) == 1
    assert _count(runtime, keys) == 1
