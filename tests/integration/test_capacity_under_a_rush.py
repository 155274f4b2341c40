"""Capacity holds when many processes register for one session at the same moment.

Real OS processes race against the real database (PostgreSQL, and the embedded SQLite default); the
invariant is checked in the database afterwards, not argued.
"""

from __future__ import annotations

import multiprocessing

from sqlalchemy import func, select

from services.registration.tables import Registration
from tests.support.racers import register_many
from tests.support.runtimes import create_session_directly, migrated_runtime
from tests.support.suite import participant

RACERS = 6
PER_RACER = 8
CAPACITY = 5


def test_a_registration_rush_confirms_exactly_capacity_and_waitlists_the_rest(tmp_path, database_url):
    runtime = migrated_runtime("registration", tmp_path, database_url)
    session = create_session_directly(runtime, CAPACITY, title="Display expo")
    people = [participant(i) for i in range(RACERS * PER_RACER)]
    batches = [people[i::RACERS] for i in range(RACERS)]
    batches[1] = batches[1] + [people[0]]  # the same NIP raced by two processes: one must get 409

    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(RACERS)
    with context.Pool(RACERS) as pool:
        results = pool.starmap(
            register_many,
            [(str(tmp_path), database_url, session.id, batch, barrier) for batch in batches],
        )
    outcomes = [o for result in results for o in result]

    assert outcomes.count("confirmed") == CAPACITY
    assert outcomes.count("waitlisted") == len(people) - CAPACITY
    assert outcomes.count("conflict") == 1
    with runtime.unit_of_work() as uow:
        confirmed = uow.session.scalar(
            select(func.count()).where(Registration.status == "confirmed", Registration.session_id == session.id)
        )
        stored = uow.session.scalar(select(func.count()).select_from(Registration))
        events = uow.session.execute(
            select(runtime.outbox.c.event_type, func.count()).group_by(runtime.outbox.c.event_type)
        ).all()
    assert confirmed == CAPACITY
    assert stored == len(people)
    assert dict(events) == {
        "session.created": 1,
        "registration.confirmed": CAPACITY,
        "registration.waitlisted": len(people) - CAPACITY,
    }
