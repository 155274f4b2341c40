"""The registration hot path's round trips, counted on the real PostgreSQL, so that it cannot regress silently.

``domain.register_participant`` holds the session row's lock for two statements and a commit (its module
docstring, step 3): the locking ``SELECT … FOR NO KEY UPDATE`` and one ``WITH …`` statement that writes the
counters, the registration (with its answers to the session's questions) and the outbox row. Each
statement the database driver sends is one ``before_cursor_execute`` event, so counting them counts the
round trips; a new statement under the lock — a pre-ping, an ORM flush, a lookup of the questions —
fails these tests. (Timing is measured in ``make bench``, never in a test.)
"""

from __future__ import annotations

import pytest
from sqlalchemy import event

from services.registration import domain
from shared.auth import Principal
from tests.support.runtimes import create_session_directly, migrated_runtime
from tests.support.suite import participant

pytestmark = pytest.mark.postgres

QUESTIONS = [
    {"key": "kaos", "label": "Ukuran kaos", "kind": "choice", "required": True, "choices": ["S", "M", "L"]},
    {"key": "catatan", "label": "Catatan", "kind": "text", "required": False, "max_length": 500},
]


@pytest.fixture
def runtime(tmp_path, postgres_url):
    runtime = migrated_runtime("registration", tmp_path, postgres_url)
    yield runtime
    runtime.engine.dispose()


def statements_of_registering(runtime, session_id: str, person: dict, links=None) -> list[str]:
    """The statements one registration sends, from opening its transaction to its commit (its event carrying
    the participant's link and ticket made with ``links``, as the app's views pass them)."""
    sent: list[str] = []

    def record(_connection, _cursor, statement, _parameters, _context, _executemany) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        with runtime.unit_of_work() as uow:
            domain.register_participant(uow, session_id, person, links=links)
            uow.commit()
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)
    return sent


def _with_questions(runtime, session_id: str) -> None:
    with runtime.unit_of_work() as uow:
        domain.change_session(uow, session_id, {"questions": QUESTIONS})
        uow.commit()


@pytest.mark.parametrize("with_links", [True, False], ids=["with-links", "without-links"])
@pytest.mark.parametrize("capacity", [5, 0], ids=["confirmed", "waitlisted"])
def test_registering_sends_exactly_the_lock_and_one_write_statement(runtime, capacity, with_links):
    links = domain.ParticipantLinks.from_settings(runtime.settings) if with_links else None
    session_id = create_session_directly(runtime, capacity=max(capacity, 1)).id
    if capacity == 0:  # fill the one seat first: the next registrant waits
        statements_of_registering(runtime, session_id, participant(0), links)
    sent = statements_of_registering(runtime, session_id, participant(1), links)

    assert len(sent) == 2, sent
    assert sent[0].startswith("SELECT lab_sessions.id") and sent[0].endswith("FOR NO KEY UPDATE OF lab_sessions")
    assert sent[1].startswith("WITH w0 AS (UPDATE lab_sessions")
    assert "INSERT INTO registrations" in sent[1] and "INSERT INTO outbox" in sent[1]


def test_answering_the_sessions_questions_adds_no_statement(runtime):
    session_id = create_session_directly(runtime, capacity=5).id
    _with_questions(runtime, session_id)
    sent = statements_of_registering(runtime, session_id, {**participant(1), "answers": {"kaos": "M"}})

    assert len(sent) == 2, sent
    assert "questions" in sent[0].split(" FROM ")[0], "the locking statement reads the questions"
    assert "answers" in sent[1].split("INSERT INTO registrations")[1].split(")")[0]


def test_a_refused_answer_sends_nothing_after_the_lock(runtime):
    session_id = create_session_directly(runtime, capacity=5).id
    _with_questions(runtime, session_id)
    sent: list[str] = []

    def record(_connection, _cursor, statement, *_rest) -> None:
        sent.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        with pytest.raises(domain.RuleViolation), runtime.unit_of_work() as uow:
            domain.register_participant(uow, session_id, {**participant(1), "answers": {"kaos": "XL"}})
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)
    assert len(sent) == 1 and "FOR NO KEY UPDATE" in sent[0]


def test_with_an_agency_quota_the_agencys_counter_is_the_one_statement_more(runtime):
    organiser = Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser")
    with runtime.unit_of_work() as uow:
        programme = domain.create_programme(
            uow, {"name": "Labinov Kaltara", "year": 2027, "opds": [participant(1)["opd"]], "opd_quota": 3}, organiser
        )
        uow.commit()
    session_id = create_session_directly(runtime, capacity=5).id
    with runtime.unit_of_work() as uow:
        domain.get_session(uow, session_id, lock=True).programme_id = programme.id
        uow.commit()
    sent = statements_of_registering(runtime, session_id, participant(1))

    assert len(sent) == 3, sent  # step 4 of the design: the (session, agency) counter, read and created at once
    assert sent[1].startswith("INSERT INTO opd_seats") and sent[2].startswith("WITH w0 AS")
