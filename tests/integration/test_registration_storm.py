"""A storm of registrations and cancellations from several OS processes at once, on PostgreSQL and on the
embedded SQLite, ends in a consistent state: checked by queries over the tables (confirmed ≤ capacity and
equal to the counter, each agency within its quota, waiting places 1..n, every promotion with its event),
not by what the answers said."""

from __future__ import annotations

import multiprocessing
from collections import Counter

from services.registration import domain
from shared.tokens import Principal
from tests.support.racers import register_and_cancel
from tests.support.runtimes import create_session_directly, migrated_runtime
from tests.support.seat_invariants import seat_problems, waiting_places
from tests.support.suite import participant

RACERS = 6
PER_RACER = 15
CAPACITY = 10
AGENCIES = ["Dinas Kesehatan", "Bappeda", "Dinas Pendidikan"]
QUOTA = 4


def test_a_storm_of_registrations_and_cancellations_leaves_every_invariant_holding(tmp_path, database_url):
    runtime = migrated_runtime("registration", tmp_path, database_url)
    organiser = Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser")
    with runtime.unit_of_work() as uow:
        programme = domain.create_programme(
            uow, {"name": "Labinov Kaltara 2027", "year": 2027, "opds": AGENCIES, "opd_quota": QUOTA}, organiser
        )
        uow.commit()
    lab_session = create_session_directly(runtime, CAPACITY, title="Display expo")
    with runtime.unit_of_work() as uow:
        domain.get_session(uow, lab_session.id).programme_id = programme.id
        uow.commit()
    people = [participant(i, opd=AGENCIES[i % 3 if i % 5 else 0]) for i in range(RACERS * PER_RACER)]
    batches = [people[i::RACERS] for i in range(RACERS)]

    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(RACERS)
    with context.Pool(RACERS) as pool:
        results = pool.starmap(
            register_and_cancel,
            [(str(tmp_path), database_url, lab_session.id, batch, barrier, seed) for seed, batch in enumerate(batches)],
        )
    outcomes = sum((Counter(result) for result in results), Counter())

    assert outcomes["confirmed"] + outcomes["waitlisted"] == len(people)  # nothing refused, nothing lost
    assert outcomes["cancelled"] > 10 and outcomes["promoted"] > 0, outcomes
    assert seat_problems(runtime, lab_session.id) == []
    places = waiting_places(runtime, lab_session.id)
    assert places == list(range(1, len(places) + 1))
    with runtime.reading() as uow:
        counts = domain.registration_counts(uow, lab_session.id)["by_status"]
        stored = domain.get_session(uow, lab_session.id)
    assert counts["cancelled"] == outcomes["cancelled"]
    assert counts["confirmed"] == stored.confirmed_count <= CAPACITY
    # every seat that could be filled was: the waiting list holds only people whose agency is at its quota
    if counts["confirmed"] < CAPACITY:
        assert all(c["confirmed"] == QUOTA for c in domain_counts_by_opd(runtime, lab_session.id) if c["waitlisted"])
    runtime.engine.dispose()


def domain_counts_by_opd(runtime, session_id):
    with runtime.reading() as uow:
        return domain.registration_counts(uow, session_id)["by_opd"]
