"""Housekeeping: the bookkeeping tables of every service stay small.

* sent outbox rows and inbox entries are kept for :data:`RETENTION` (long enough to answer "was it sent?"
  and far longer than any redelivery could arrive after), then deleted;
* idempotency keys are deleted once they have expired (:mod:`shared.idempotency_store`, which needs no web
  framework: a worker process never imports Flask).

Each worker runs :func:`housekeeping_loop`; deleting is idempotent, so several workers may do it at once.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import delete

from shared.clock import utcnow
from shared.idempotency_store import expired_keys
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)

RETENTION = timedelta(days=14)
INTERVAL_SECONDS = 600


def purge_old_records(runtime: ServiceRuntime) -> dict[str, int]:
    """Delete what has outlived its use; returns the number of rows deleted per table."""
    now = utcnow()
    outbox, inbox = runtime.outbox, runtime.inbox
    keys = runtime.metadata.tables["idempotency_keys"]
    statements = {
        "outbox": delete(outbox).where(outbox.c.sent_at.is_not(None), outbox.c.sent_at < now - RETENTION),
        "inbox": delete(inbox).where(inbox.c.handled_at < now - RETENTION),
        "idempotency_keys": expired_keys(keys),
    }
    with runtime.engine.begin() as connection:
        return {table: connection.execute(statement).rowcount for table, statement in statements.items()}


def housekeeping_loop(runtime: ServiceRuntime, stop: threading.Event) -> None:
    while not stop.wait(INTERVAL_SECONDS):
        deleted = purge_old_records(runtime)
        if any(deleted.values()):
            log.info("housekeeping deleted %s", deleted)
