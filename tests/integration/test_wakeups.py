"""Wake-ups on the real PostgreSQL (LISTEN/NOTIFY) and on SQLite (a datagram after commit): a committed row
wakes the loops of its queue, a rolled-back one wakes nobody, every loop wakes, and the registration hot path
rings the relay without one statement more while it holds the session row's lock.

Each test waits on evidence (a listener reporting a ring, a row marked sent) with a poll interval far longer
than the test's timeout, so only a wake-up can explain what it sees.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import event, select

from shared.messaging import wakeup
from shared.messaging.outbox import OutboxRelay
from shared.messaging.topology import EVENTS_EXCHANGE
from shared.worker import work_loop
from tests.support.runtimes import create_session_directly, migrated_runtime
from tests.support.suite import participant
from tests.support.waiting import wait_until

#: A poll no test lives to see: what happens within a test's timeout was woken, not polled.
NEVER = 3600.0
OUTBOX_CHANNEL = wakeup.channel("registration", wakeup.OUTBOX)


@pytest.fixture
def runtime(tmp_path, database_url):
    runtime = migrated_runtime("registration", tmp_path, database_url, "memory://")
    yield runtime
    runtime.engine.dispose()


@pytest.fixture
def outbox_listener(runtime) -> Iterator[wakeup.Listener]:
    listener = wakeup.listen(runtime.engine, OUTBOX_CHANNEL)
    yield listener
    listener.close()


def _publish_one(runtime, commit: bool = True) -> str:
    """One outbox row, written as every producer writes one (``enqueue`` is what ``publish`` ends in)."""
    event_id = str(uuid.uuid4())
    with runtime.unit_of_work() as uow:
        uow.enqueue({"id": event_id, "type": "test.wakeup"}, exchange=EVENTS_EXCHANGE.name, routing_key="test.wakeup")
        if commit:
            uow.commit()
    return event_id


def _sent(runtime, event_id: str) -> bool:
    with runtime.engine.connect() as connection:
        sent_at = connection.scalar(select(runtime.outbox.c.sent_at).where(runtime.outbox.c.event_id == event_id))
    return sent_at is not None


def test_a_committed_outbox_row_wakes_a_listening_relay(runtime, outbox_listener):
    assert not outbox_listener.wait(0.05), "rung before anything was written"
    _publish_one(runtime)
    assert outbox_listener.wait(10), "the commit did not ring the outbox channel"
    assert not outbox_listener.wait(0.05), "one transaction rang twice"


def test_a_rolled_back_outbox_row_wakes_nobody(runtime, outbox_listener):
    _publish_one(runtime, commit=False)
    assert not outbox_listener.wait(0.5)


def test_a_ring_while_the_relay_is_busy_claiming_is_kept_for_its_next_wait(runtime, outbox_listener):
    """The listener exists before the claim: a row committed between a claim and the wait is not missed."""
    for _ in range(3):
        _publish_one(runtime)
    assert outbox_listener.wait(0), "the rings of rows committed before the wait were lost"


def test_every_relay_listening_on_the_outbox_wakes(runtime, outbox_listener):
    other = wakeup.listen(runtime.engine, OUTBOX_CHANNEL)
    try:
        _publish_one(runtime)
        assert outbox_listener.wait(10) and other.wait(10)
    finally:
        other.close()


def test_notify_after_commit_wakes_the_loops_of_that_queue_and_not_the_relay(runtime, outbox_listener):
    deliveries = wakeup.listen(runtime.engine, wakeup.channel("registration", wakeup.DELIVERIES))
    try:
        with runtime.unit_of_work() as uow:
            uow.notify_after_commit(wakeup.DELIVERIES)
            uow.notify_after_commit(wakeup.DELIVERIES)
            assert not deliveries.wait(0.2), "woken before the commit"
            uow.commit()
        assert deliveries.wait(10)
        assert not deliveries.wait(0.05), "asked twice in one transaction, rung twice"
        assert not outbox_listener.wait(0.05)
    finally:
        deliveries.close()


def test_a_woken_relay_publishes_a_row_without_waiting_for_its_poll(runtime):
    relay = OutboxRelay(runtime.engine, runtime.outbox, "memory://", "registration", poll_interval=NEVER)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    first = _publish_one(runtime)
    thread.start()
    try:
        wait_until(lambda: _sent(runtime, first), timeout=30, what="the relay's first claim")
        second = _publish_one(runtime)  # the relay is idle now, with an hour until its next poll
        wait_until(lambda: _sent(runtime, second), timeout=30, what="the woken relay to publish the second row")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive(), "the relay did not stop within its wait slice"


def test_a_work_loop_is_woken_by_its_queue_and_stops_at_once_however_long_its_poll(runtime):
    queued: list[str] = []
    done: list[str] = []

    def work_once() -> int:
        taken = list(queued)
        queued.clear()
        done.extend(taken)
        return len(taken)

    stop = threading.Event()
    thread = threading.Thread(target=work_loop, args=(runtime, stop, wakeup.DELIVERIES, work_once, NEVER), daemon=True)
    thread.start()
    try:
        wait_until(lambda: _listening(runtime, wakeup.DELIVERIES), timeout=10, what="the loop to listen")
        with runtime.unit_of_work() as uow:
            queued.append("mail-1")
            uow.notify_after_commit(wakeup.DELIVERIES)
            uow.commit()
        wait_until(lambda: done == ["mail-1"], timeout=10, what="the woken loop to do the work")
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def _listening(runtime, queue: str) -> bool:
    """Whether some loop listens on ``queue``'s channel (the datagram sockets on SQLite; PostgreSQL's
    ``pg_listening_channels`` is per session, so there the answer is taken from the server's activity)."""
    channel = wakeup.channel("registration", queue)
    if runtime.engine.dialect.name == "postgresql":
        with runtime.engine.connect() as connection:
            return bool(
                connection.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE %(q)s",
                    {"q": f'LISTEN "{channel}"'},
                ).scalar()
            )
    return any(wakeup.socket_folder(runtime.engine.url.database, channel).iterdir())


def test_registering_rings_the_relay_at_commit_without_a_statement_more_under_the_session_lock(
    runtime, outbox_listener
):
    """On PostgreSQL the ring is part of the registration's one combined write: from the locking statement to
    the commit the hot path still sends exactly two statements. On SQLite it is a datagram after the commit
    (no statement at all). Either way nobody is woken before the commit."""
    lab_session = create_session_directly(runtime, capacity=5)
    statements: list[str] = []

    def record(_connection, _cursor, statement, *_args) -> None:
        statements.append(statement)

    from services.registration import domain

    assert outbox_listener.wait(5)  # creating the session published session.created
    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        with runtime.unit_of_work() as uow:
            domain.register_participant(uow, lab_session.id, participant(1))
            assert not outbox_listener.wait(0.2), "woken before the registration committed"
            uow.commit()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)
    assert outbox_listener.wait(10), "registering did not wake the relay"
    if runtime.engine.dialect.name == "postgresql":
        under_lock = [s for s in statements if not s.lstrip().upper().startswith(("BEGIN", "COMMIT"))]
        assert len(under_lock) == 2, "\n---\n".join(under_lock)
        assert "FOR NO KEY UPDATE" in under_lock[0] and "pg_notify" in under_lock[1]
    else:
        assert not any("notify" in s.lower() for s in statements)
