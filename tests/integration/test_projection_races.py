"""Projections fed by events stay correct when two workers handle events about the same person at once."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from services.evaluation import domain as evaluation
from services.evaluation.tables import Participant
from services.notification import domain as notification
from services.notification.tables import Recipient
from tests.support.runtimes import migrated_runtime


def _confirmed(name: str, registration_id: str) -> dict:
    return {
        "nip": "198503152010011001",
        "name": name,
        "email": "sari@kaltaraprov.go.id",
        "phone": "+6281234567890",
        "opd": "Dinas Kominfo",
        "position": None,
        "registration_id": registration_id,
    }


PROJECTIONS = {
    "evaluation": (evaluation.record_participant, Participant),
    "notification": (notification.remember_recipient, Recipient),
}


@pytest.mark.parametrize("service", PROJECTIONS)
def test_two_events_about_one_person_in_parallel_both_succeed_and_the_later_wins(tmp_path, postgres_url, service):
    record, model = PROJECTIONS[service]
    runtime = migrated_runtime(service, tmp_path, postgres_url)
    first_written = threading.Event()

    def first_worker() -> None:
        with runtime.unit_of_work() as uow:
            record(uow, _confirmed("Sari (first event)", "r-1"))
            uow.flush()  # the row is written but not committed: the second worker must wait for it
            first_written.set()
            threading.Event().wait(0.5)
            uow.commit()

    thread = threading.Thread(target=first_worker)
    thread.start()
    first_written.wait(5)
    with runtime.unit_of_work() as uow:  # would collide on the primary key with a read-then-insert
        record(uow, _confirmed("Sari (second event)", "r-2"))
        uow.commit()
    thread.join()

    with runtime.reading() as uow:
        [person] = uow.session.scalars(select(model)).all()
    assert person.name == "Sari (second event)"
    runtime.engine.dispose()
