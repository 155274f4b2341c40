"""The outbox relay against the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import collections
import logging
import multiprocessing
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import event, func, select, text

from shared.clock import utcnow
from shared.messaging.broker import connect
from shared.messaging.outbox import OutboxRelay
from shared.messaging.topology import declare_topology
from tests.support.broker_client import QueueReader
from tests.support.racers import relay_until_empty
from tests.support.runtimes import migrated_runtime
from tests.support.suite import participant
from tests.support.waiting import wait_until

EVENTS = 300


def _write_events(runtime, count: int) -> list[str]:
    """Write ``count`` registration.confirmed events as the domain would, one transaction each."""
    ids = []
    for i in range(count):
        person = participant(i)
        with runtime.unit_of_work() as uow:
            envelope = uow.publish(
                "registration.confirmed",
                {
                    "registration_id": f"00000000-0000-4000-8000-{i:012d}",
                    "session_id": "s-1",
                    "session_title": "Sosialisasi",
                    "session_starts_at": "2027-03-01T09:00:00+08:00",
                    "session_location": "Aula",
                    "status": "confirmed",
                    "phone": "+6281200000001",
                    **{k: person[k] for k in ("name", "nip", "email", "opd")},
                },
            )
            uow.commit()
        ids.append(envelope["id"])
    return ids


def _unsent(runtime) -> int:
    with runtime.engine.connect() as connection:
        return connection.scalar(select(func.count()).where(runtime.outbox.c.sent_at.is_(None)))


def test_one_relay_publishes_pending_rows_in_order_and_marks_them_sent(tmp_path, postgres_url, rabbitmq):
    broker_url, _ = rabbitmq
    runtime = migrated_runtime("registration", tmp_path, postgres_url, broker_url)
    ids = _write_events(runtime, 30)
    relay = OutboxRelay(runtime.engine, runtime.outbox, broker_url, "registration", batch_size=7)

    with connect(broker_url) as connection:
        declare_topology(connection.default_channel)
        while relay.relay_once(connection):
            pass

    reader = QueueReader(broker_url, "evaluation-events")
    received = wait_until(lambda: reader.at_least(30), what="30 messages")
    assert [m.properties["message_id"] for m in received] == ids
    assert [m.payload["id"] for m in received] == ids
    assert _unsent(runtime) == 0


def test_a_claim_on_postgresql_is_one_statement_whose_limit_holds_and_the_relay_alone_skips_the_disk_wait(
    tmp_path, postgres_url, rabbitmq
):
    broker_url, _ = rabbitmq
    runtime = migrated_runtime("registration", tmp_path, postgres_url, broker_url)
    ids = _write_events(runtime, 20)
    relay = OutboxRelay(runtime.engine, runtime.outbox, broker_url, "registration", batch_size=7)
    relay.claim_batch()  # first use: connection made, statement compiled
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(relay.engine, "before_cursor_execute", count)
    try:
        token, rows = relay.claim_batch()
    finally:
        event.remove(relay.engine, "before_cursor_execute", count)

    assert len(statements) == 1 and "MATERIALIZED" in statements[0], statements
    with runtime.engine.connect() as connection:
        ours = connection.scalars(select(runtime.outbox.c.event_id).where(runtime.outbox.c.claim_token == token))
        assert sorted(ours) == sorted(ids[7:14])
        assert connection.scalar(text("SHOW synchronous_commit")) == "on", "producers' commits wait for the disk"
    assert [row.event_id for row in rows] == ids[7:14], "the second claim takes the next seven, in id order"
    with relay.engine.connect() as connection:
        assert connection.scalar(text("SHOW synchronous_commit")) == "off"


def test_two_relays_racing_on_one_outbox_publish_every_row_exactly_once(tmp_path, postgres_url, rabbitmq):
    broker_url, _ = rabbitmq
    runtime = migrated_runtime("registration", tmp_path, postgres_url, broker_url)
    ids = _write_events(runtime, EVENTS)

    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(2)
    with context.Pool(2) as pool:
        counts = pool.starmap(relay_until_empty, [(str(tmp_path), postgres_url, broker_url, barrier) for _ in range(2)])

    reader = QueueReader(broker_url, "notification-events")
    received = wait_until(lambda: reader.at_least(EVENTS), what="every message")
    per_id = collections.Counter(m.payload["id"] for m in received)
    assert set(per_id) == set(ids)
    assert set(per_id.values()) == {1}, "a row was published twice"
    assert sum(counts) == EVENTS and min(counts) > 0, f"both relays should have worked: {counts}"
    assert _unsent(runtime) == 0


def test_a_row_the_broker_refuses_waits_and_does_not_hold_up_the_rows_behind_it(tmp_path, postgres_url, rabbitmq):
    broker_url, _ = rabbitmq
    runtime = migrated_runtime("registration", tmp_path, postgres_url, broker_url)
    with runtime.unit_of_work() as uow:  # a row for an exchange that does not exist: it can never be published
        uow.enqueue({"id": "not-routable"}, exchange="labinov.nowhere", routing_key="x")
        uow.commit()
    ids = _write_events(runtime, 3)
    relay = OutboxRelay(runtime.engine, runtime.outbox, broker_url, "registration")

    with connect(broker_url) as connection:
        declare_topology(connection.default_channel)
        with pytest.raises(KeyError):
            relay.relay_once(connection)
        assert relay.relay_once(connection) == 3

    reader = QueueReader(broker_url, "evaluation-events")
    assert [m.payload["id"] for m in wait_until(lambda: reader.at_least(3), what="3 messages")] == ids
    with runtime.engine.connect() as connection:
        stuck = connection.execute(select(runtime.outbox).where(runtime.outbox.c.sent_at.is_(None))).one()
    assert stuck.exchange == "labinov.nowhere"
    assert stuck.publish_attempts == 1 and "KeyError" in stuck.last_error
    assert stuck.not_before > utcnow()


def test_an_idle_relay_keeps_its_rabbitmq_connection_through_several_heartbeats(
    tmp_path, postgres_url, rabbitmq, monkeypatch, caplog
):
    broker_url, _ = rabbitmq
    monkeypatch.setattr("shared.messaging.broker.HEARTBEAT_SECONDS", 1)
    heartbeats_from_broker = _count_heartbeats_the_relay_reads(monkeypatch)
    runtime = migrated_runtime("registration", tmp_path, postgres_url, broker_url)
    relay = OutboxRelay(runtime.engine, runtime.outbox, broker_url, "registration")
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    caplog.set_level(logging.INFO, logger="shared.messaging.outbox")
    thread.start()
    try:
        # evidence, not a clock: the idle relay has read the broker's heartbeats for well over the two missed
        # intervals after which RabbitMQ drops a silent peer — a relay that only sent heartbeats, or answered
        # none, would have been dropped by now
        wait_until(lambda: heartbeats_from_broker() >= 5, timeout=30, what="5 heartbeats read from the broker")
        assert "paused" not in caplog.text
        ids = _write_events(runtime, 1)
        reader = QueueReader(broker_url, "evaluation-events")
        assert [m.payload["id"] for m in wait_until(lambda: reader.at_least(1), what="the event")] == ids
    finally:
        stop.set()
        thread.join(10)
    assert caplog.text.count("outbox relay connected") == 1


def _count_heartbeats_the_relay_reads(monkeypatch) -> Callable[[], int]:
    """Count the heartbeat checks in which py-amqp saw new frames from the broker (an idle connection gets
    nothing but heartbeats), for every AMQP connection of this test."""
    from amqp.connection import Connection as AmqpConnection

    seen = {"count": 0}
    original = AmqpConnection.heartbeat_tick

    def counting_tick(self, rate=2):
        before = self.bytes_recv
        result = original(self, rate)
        if self.bytes_recv != getattr(self, "_labinov_seen_bytes", before):
            seen["count"] += 1
        self._labinov_seen_bytes = self.bytes_recv
        return result

    monkeypatch.setattr(AmqpConnection, "heartbeat_tick", counting_tick)
    return lambda: seen["count"]
