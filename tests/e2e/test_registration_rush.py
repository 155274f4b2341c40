"""The rush, through the real web tier: 300 people register for 50 seats at the same moment, from several
OS processes, through several gunicorn workers of the registration service on the real PostgreSQL.

Exactly 50 are confirmed, the other 250 are waitlisted with the places 1..250 — each place given once —
and nothing is lost: the tables hold 300 registrations and 300 events, and every invariant holds there."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from services.registration.tables import Registration
from tests.support.racers import register_over_http
from tests.support.runtimes import migrated_runtime
from tests.support.seat_invariants import seat_problems
from tests.support.suite import participant

pytestmark = pytest.mark.e2e

SEATS = 50
PEOPLE = 300
SENDERS = 4  # OS processes, each with 8 connections


def test_300_people_rushing_50_seats_through_several_workers_get_exactly_50_seats_and_places_1_to_250(
    postgres_url, suite_factory, tmp_path
):
    suite = suite_factory(
        database_urls={"registration": postgres_url}, extra_env={"LABINOV_PUBLIC_RATE_LIMIT": "off"}
    ).start_alone("registration", workers=3)
    session_id = suite.create_session(capacity=SEATS, title="Sosialisasi Laboratorium Inovasi 2027")
    people = [participant(i) for i in range(PEOPLE)]
    url = suite.url("registration", f"api/v1/sessions/{session_id}/registrations")

    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(SENDERS)
    started = time.monotonic()
    with context.Pool(SENDERS) as pool:
        results = pool.starmap(register_over_http, [(url, people[i::SENDERS], barrier) for i in range(SENDERS)])
    elapsed = time.monotonic() - started
    answers = [answer for result in results for answer in result]

    assert Counter(code for code, _, _ in answers) == {201: PEOPLE}
    assert Counter(status for _, status, _ in answers) == {"confirmed": SEATS, "waitlisted": PEOPLE - SEATS}
    assert sorted(position for _, status, position in answers if status == "waitlisted") == list(
        range(1, PEOPLE - SEATS + 1)
    )
    assert all(position is None for _, status, position in answers if status == "confirmed")
    runtime = migrated_runtime("registration", tmp_path / "check", postgres_url)
    with runtime.reading() as uow:
        stored = uow.session.scalar(select(func.count()).select_from(Registration))
        events = uow.session.scalar(select(func.count()).where(runtime.outbox.c.event_type.like("registration.%")))
    assert (stored, events) == (PEOPLE, PEOPLE)
    assert seat_problems(runtime, session_id) == []
    runtime.engine.dispose()
    print(f"\n{PEOPLE} registrations in {elapsed:.2f} s ({PEOPLE / elapsed:.0f}/s, includes process start-up)")
