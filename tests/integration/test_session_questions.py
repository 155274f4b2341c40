"""The session's extra questions on the real PostgreSQL and on SQLite: answers stored with the registration
and read back from the table, refusals that write nothing, a bulk import whose question columns are
answers, and a change of the questions racing registrations that never leaves an answer missing."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from services.registration import domain
from services.registration.tables import LabSession, Registration
from tests.integration.test_registration_import import API, Office
from tests.support.runtimes import create_session_directly, migrated_runtime
from tests.support.suite import participant

SHIRT = {"key": "kaos", "label": "Ukuran kaos", "kind": "choice", "required": True, "choices": ["S", "M", "L"]}
LAPTOP = {"key": "laptop", "label": "Membawa laptop?", "kind": "yes-no", "required": False}
NOTES = {"key": "catatan", "label": "Catatan", "kind": "text", "required": False, "max_length": 100}


@pytest.fixture
def runtime(tmp_path, database_url):
    runtime = migrated_runtime("registration", tmp_path, database_url)
    yield runtime
    runtime.engine.dispose()


@pytest.fixture
def office(runtime):
    return Office(runtime)


def _stored_answers(runtime, session_id: str) -> dict[str, dict | None]:
    with runtime.engine.connect() as connection:
        return dict(
            connection.execute(
                select(Registration.nip, Registration.answers).where(Registration.session_id == session_id)
            ).all()
        )


def _register(office, session_id, i, answers):
    return office.client.post(f"{API}/sessions/{session_id}/registrations", json={**participant(i), "answers": answers})


def test_answers_are_written_with_the_registration_and_read_back_from_the_table(office, runtime):
    session_id = office.session(capacity=1, questions=[SHIRT, LAPTOP, NOTES])
    confirmed = _register(office, session_id, 1, {"kaos": "M", "laptop": True, "catatan": "Baris satu\nbaris dua"})
    waiting = _register(office, session_id, 2, {"kaos": "S"})
    assert (confirmed.status_code, waiting.status_code) == (201, 201)
    assert waiting.get_json()["status"] == "waitlisted"

    assert _stored_answers(runtime, session_id) == {
        participant(1)["nip"]: {"kaos": "M", "laptop": True, "catatan": "Baris satu\nbaris dua"},
        participant(2)["nip"]: {"kaos": "S"},
    }
    with runtime.engine.connect() as connection:
        stored = connection.scalar(select(LabSession.questions).where(LabSession.id == session_id))
    assert stored == [SHIRT, LAPTOP, NOTES]


def test_a_session_without_questions_stores_no_answers(office, runtime):
    session_id = office.session()
    assert _register(office, session_id, 1, {}).status_code == 201
    assert _stored_answers(runtime, session_id) == {participant(1)["nip"]: None}


def test_refused_answers_write_neither_a_registration_nor_an_event_nor_a_counter(office, runtime):
    session_id = office.session(capacity=5, questions=[SHIRT])
    refused = _register(office, session_id, 1, {"kaos": "XXL"})
    assert refused.status_code == 422 and list(refused.get_json()["errors"]) == ["answers.kaos"]
    with runtime.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Registration)) == 0
        assert connection.scalar(select(LabSession.confirmed_count).where(LabSession.id == session_id)) == 0
        assert connection.scalar(select(func.count()).where(runtime.outbox.c.event_type.like("registration.%"))) == 0


def test_an_import_reads_the_columns_named_after_question_keys_as_answers(office, runtime):
    session_id = office.session(questions=[SHIRT, LAPTOP])
    people = [participant(i) for i in (1, 2, 3)]
    lines = ["nama;nip;email;ponsel;opd;kaos;Laptop;catatan lain"]
    for person, shirt, laptop in zip(people, ("M", "", "L"), ("ya", "tidak", "mungkin"), strict=True):
        lines.append(
            ";".join(
                [person["name"], person["nip"], person["email"], person["phone"], person["opd"], shirt, laptop, "-"]
            )
        )
    uploaded = office.upload(session_id, "\n".join(lines) + "\n")
    assert uploaded.status_code == 201, uploaded.get_json()
    report = uploaded.get_json()

    assert (report["confirmed"], report["invalid"]) == (1, 2)
    problems = {line["line"]: line["problems"] for line in report["lines"]}
    assert problems == {
        3: [{"field": "answers.kaos", "reason": "This question must be answered."}],
        4: [{"field": "answers.laptop", "reason": "Must be yes or no (true or false)."}],
    }
    assert _stored_answers(runtime, session_id) == {people[0]["nip"]: {"kaos": "M", "laptop": True}}


@pytest.mark.parametrize("seed", range(3))
def test_a_required_question_added_while_people_register_never_leaves_an_answer_missing(runtime, seed):
    """Under the session row's lock either the change comes first — and every later registration without
    the answer is refused — or a registration does, and the change is refused (409): never a required
    question that a stored registration has not answered."""
    session_id = create_session_directly(runtime, capacity=50).id
    start = threading.Barrier(9)
    outcomes: list[str] = []

    def register(i: int) -> None:
        start.wait()
        try:
            with runtime.unit_of_work() as uow:
                domain.register_participant(uow, session_id, participant(seed * 100 + i))
                uow.commit()
            outcomes.append("registered")
        except domain.RuleViolation:
            outcomes.append("refused")

    def require_a_shirt_size() -> None:
        start.wait()
        try:
            with runtime.unit_of_work() as uow:
                domain.change_session(uow, session_id, {"questions": [SHIRT]})
                uow.commit()
            outcomes.append("changed")
        except domain.QuestionsInUse:
            outcomes.append("change refused")

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    threads.append(threading.Thread(target=require_a_shirt_size))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    stored = _stored_answers(runtime, session_id)
    with runtime.engine.connect() as connection:
        questions = connection.scalar(select(LabSession.questions).where(LabSession.id == session_id)) or []
    if "changed" in outcomes:
        assert questions == [SHIRT]
        assert all((answers or {}).get("kaos") for answers in stored.values()), stored
    else:
        assert outcomes.count("change refused") == 1 and questions == []
    assert outcomes.count("registered") == len(stored)
