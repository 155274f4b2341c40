"""On SQLite, reading never waits behind a writer; writers still queue one after another."""

from __future__ import annotations

import threading
import time

from services.registration import domain


def test_a_read_answers_at_once_while_a_write_transaction_is_open(runtime_for):
    runtime = runtime_for("registration")
    writing = runtime.unit_of_work()
    with writing as uow:
        uow.session.execute(domain.select(domain.LabSession))  # BEGIN IMMEDIATE: the write lock is held
        started = time.monotonic()
        with runtime.reading() as reader:
            assert domain.list_sessions(reader) == []
        assert time.monotonic() - started < 1.0


def test_a_second_writer_waits_for_the_first(runtime_for):
    runtime = runtime_for("registration")
    order: list[str] = []
    first_has_lock = threading.Event()

    def first() -> None:
        with runtime.unit_of_work() as uow:
            uow.session.execute(domain.select(domain.LabSession))
            first_has_lock.set()
            time.sleep(0.5)
            order.append("first commits")
            uow.commit()

    thread = threading.Thread(target=first)
    thread.start()
    first_has_lock.wait(5)
    with runtime.unit_of_work() as uow:
        uow.session.execute(domain.select(domain.LabSession))
        order.append("second has the lock")
    thread.join()
    assert order == ["first commits", "second has the lock"]
