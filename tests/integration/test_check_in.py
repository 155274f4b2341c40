"""Tickets and check-in at the door, through the real API on PostgreSQL and SQLite: each refusal with its
status and reason, the event, the attendance list and its CSV, and two organisers scanning one ticket at once."""

from __future__ import annotations

import csv
import io
import threading

import pytest
from sqlalchemy import func, select

from services.registration import domain, rules
from services.registration.tables import CheckIn
from shared.tokens import Principal
from tests.support.registration_api import API, RegistrationApi
from tests.support.runtimes import migrated_runtime
from tests.support.suite import participant

ORGANISER = Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser", "Panitia Kaltara")


class Door(RegistrationApi):
    """The registration API as organisers at the door and participants use it."""

    def __init__(self, runtime):
        super().__init__(runtime, ORGANISER)

    def session(self, capacity=2, **fields) -> str:
        return self.new_session(capacity, **{"title": "Sosialisasi Laboratorium Inovasi", **fields})["id"]

    def register(self, session_id, i, **overrides) -> dict:
        response = self.post_registration(session_id, i, **overrides)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    def ticket_of(self, registration: dict) -> str | None:
        headers = {"Authorization": f"Bearer {registration['manage_token']}"}
        return self.client.get(f"{API}/registrations/{registration['id']}", headers=headers).get_json()["ticket_code"]

    def check_in(self, session_id, code):
        return self.client.post(f"{API}/sessions/{session_id}/check-ins", json={"code": code}, headers=self.organiser)


@pytest.fixture
def door(database_url, tmp_path):
    runtime = migrated_runtime("registration", tmp_path, database_url)
    yield Door(runtime)
    runtime.engine.dispose()


def test_a_confirmed_ticket_is_checked_in_once_with_its_event(door):
    session_id = door.session()
    person = door.register(session_id, 1)
    code = door.ticket_of(person)
    first = door.check_in(session_id, code.lower().replace("-", " "))  # as typed on a phone: any case, spaces
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["registration_id"] == person["id"]
    assert first.get_json()["checked_in_by"] == ORGANISER.account_id
    again = door.check_in(session_id, code)
    assert again.status_code == 409
    assert again.get_json()["type"].endswith("/already-checked-in")
    assert again.get_json()["detail"] == "This ticket was already checked in."
    [event] = door.events("participant.checked_in")
    assert event["data"]["registration_id"] == person["id"] and event["data"]["session_id"] == session_id
    assert event["data"]["nip"] == participant(1)["nip"] and event["data"]["checked_in_by"] == ORGANISER.account_id
    read = door.client.get(f"{API}/registrations/{person['id']}", headers=door.organiser).get_json()
    assert read["ticket_code"] == code and read["checked_in_at"] is not None


def test_a_cancelled_registration_s_ticket_is_refused_with_409(door):
    session_id = door.session()
    person = door.register(session_id, 1)
    code = door.ticket_of(person)
    door.client.post(f"{API}/registrations/{person['id']}/cancel", headers=door.organiser)
    response = door.check_in(session_id, code)
    assert response.status_code == 409
    assert response.get_json()["type"].endswith("/ticket-cancelled")
    assert "cancelled" in response.get_json()["detail"]


def test_a_waiting_registrant_has_no_ticket_and_their_code_is_refused_with_409(door):
    session_id = door.session(capacity=1)
    door.register(session_id, 1)
    waiting = door.register(session_id, 2)
    assert waiting["status"] == "waitlisted" and door.ticket_of(waiting) is None
    code = rules.ticket_code(domain.ticket_key(door.runtime.settings), waiting["id"])  # as if kept from before
    response = door.check_in(session_id, code)
    assert response.status_code == 409
    assert response.get_json()["type"].endswith("/ticket-waitlisted")


def test_a_ticket_of_another_session_is_refused_with_422_naming_the_code(door):
    here, elsewhere = door.session(), door.session(title="Workshop diagnosis")
    code = door.ticket_of(door.register(elsewhere, 1))
    response = door.check_in(here, code)
    assert response.status_code == 422
    assert response.get_json()["type"].endswith("/ticket-for-another-session")
    assert response.get_json()["errors"] == {"code": ["This ticket is for another session."]}
    assert door.check_in(elsewhere, code).status_code == 201


@pytest.mark.parametrize(
    "mangle",
    [
        lambda code: code[:-1] + ("A" if code[-1] != "A" else "B"),  # one letter of the signature changed
        lambda code: ("A" if code[0] != "A" else "B") + code[1:],  # the registration part changed
        lambda code: code[:10],  # cut short
        lambda code: "not a ticket at all",
    ],
    ids=["signature-changed", "id-changed", "cut-short", "nonsense"],
)
def test_a_forged_or_mangled_code_is_refused_with_422(door, mangle):
    session_id = door.session()
    code = door.ticket_of(door.register(session_id, 1))
    response = door.check_in(session_id, mangle(code))
    assert response.status_code == 422
    assert response.get_json()["type"].endswith("/invalid-ticket")
    assert list(response.get_json()["errors"]) == ["code"]
    assert door.events("participant.checked_in") == []


def test_a_ticket_of_a_cancelled_session_is_refused_with_409(door):
    session_id = door.session()
    code = door.ticket_of(door.register(session_id, 1))
    door.client.post(f"{API}/sessions/{session_id}/cancel", headers=door.organiser)
    response = door.check_in(session_id, code)
    assert response.status_code == 409 and response.get_json()["type"].endswith("/session-cancelled")


def test_the_attendance_is_listed_in_arrival_order_and_exported_for_a_spreadsheet(door):
    session_id = door.session(capacity=5)
    people = [door.register(session_id, i, name=name) for i, name in ((1, "Sari"), (2, "=HYPERLINK(1)"), (3, "Budi"))]
    for person in (people[1], people[0]):
        assert door.check_in(session_id, door.ticket_of(person)).status_code == 201
    listed = door.client.get(f"{API}/sessions/{session_id}/check-ins", headers=door.organiser).get_json()
    assert [row["registration_id"] for row in listed] == [people[1]["id"], people[0]["id"]]
    exported = door.client.get(f"{API}/sessions/{session_id}/check-ins.csv", headers=door.organiser)
    assert exported.mimetype == "text/csv"
    raw = exported.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [row["name"] for row in rows] == ["'=HYPERLINK(1)", "Sari"]
    assert rows[0]["nip"] == participant(2)["nip"]


@pytest.mark.postgres
def test_two_organisers_scanning_one_ticket_at_once_check_it_in_exactly_once(tmp_path, monkeypatch):
    from tests.support.servers import postgres_database

    with postgres_database() as url:
        runtime = migrated_runtime("registration", tmp_path, url)
        try:
            door = Door(runtime)
            session_id = door.session(capacity=20)
            codes = [door.ticket_of(door.register(session_id, i)) for i in range(10)]
            key = domain.ticket_key(runtime.settings)
            both_looked = threading.Barrier(2)
            decide = rules.check_in_refusal

            def decide_when_both_have_looked(*args, **kwargs):
                # both scanners have read "no check-in yet" before either inserts: only the key can stop one
                refusal = decide(*args, **kwargs)
                both_looked.wait(10)
                return refusal

            monkeypatch.setattr(rules, "check_in_refusal", decide_when_both_have_looked)
            for code in codes:
                outcomes: list[str] = []

                def scan(code=code, outcomes=outcomes):
                    try:
                        with runtime.unit_of_work() as uow:
                            domain.check_in(uow, session_id, code, ORGANISER, key)
                            uow.commit()
                        outcomes.append("checked in")
                    except domain.CheckInRefused as refusal:
                        outcomes.append(refusal.refusal.value)

                scanners = [threading.Thread(target=scan) for _ in range(2)]
                for scanner in scanners:
                    scanner.start()
                for scanner in scanners:
                    scanner.join(30)
                both_looked.reset()
                assert sorted(outcomes) == ["already-checked-in", "checked in"], outcomes
            with runtime.engine.connect() as connection:
                assert connection.scalar(select(func.count()).select_from(CheckIn)) == 10
            assert len(door.events("participant.checked_in")) == 10
        finally:
            runtime.engine.dispose()
