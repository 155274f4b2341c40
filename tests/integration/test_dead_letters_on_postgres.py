"""Whatever arrives, the consumer can always write its dead letter to PostgreSQL — or it would loop forever."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select

from shared.worker import event_processor
from tests.support.runtimes import migrated_runtime


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x" * 300, "type": "t" * 300, "data": "\u00e9" * 10},
        {"id": None},
        ["not", "an", "object"],
        "just a string",
    ],
    ids=["overlong-id-and-type", "null-id", "list", "string"],
)
def test_any_unfit_message_becomes_one_dead_letter(tmp_path, postgres_url, body):
    runtime = migrated_runtime("evaluation", tmp_path, postgres_url)
    processor = event_processor(runtime, handlers={})

    assert processor.process(body, {}) == "dead"

    with runtime.engine.connect() as connection:
        [row] = connection.execute(select(runtime.outbox)).all()
    assert row.exchange == "labinov.dead" and row.routing_key == "evaluation"
    assert uuid.UUID(row.event_id)
    assert json.loads(row.payload) == body
    runtime.engine.dispose()
