"""Bad input to the registration endpoint: a clear 4xx naming the field, and nothing written.

Runs against the real PostgreSQL; "nothing written" is checked in the database (no registration, no
outbox row), not inferred from the status code.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from services.registration.app import create_app
from services.registration.tables import LabSession, Registration
from shared.auth import Principal, TokenIssuer, load_private_key_pem
from tests.support.runtimes import create_session_directly, migrated_runtime
from tests.support.suite import participant


@pytest.fixture
def client_and_session(tmp_path, postgres_url):
    runtime = migrated_runtime("registration", tmp_path, postgres_url)
    session = create_session_directly(runtime, capacity=10)
    yield runtime, create_app(runtime).test_client(), session.id
    runtime.engine.dispose()


def _written(runtime) -> tuple[int, int]:
    with runtime.unit_of_work() as uow:
        registrations = uow.session.scalar(select(func.count()).select_from(Registration))
        events = uow.session.scalar(select(func.count()).where(runtime.outbox.c.event_type.like("registration.%")))
    return registrations, events


VALID = participant(1)
#: The first code point of other scripts' digits, which ``\d`` also matches.
OTHER_DIGITS = {"arabic-indic": 0x0660, "fullwidth": 0xFF10, "devanagari": 0x0966}


def in_other_digits(nip: str, zero: int) -> str:
    return nip.translate({ord("0") + d: zero + d for d in range(10)})


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({k: v for k, v in VALID.items() if k != "email"}, "email", "Missing data"),
        ({**VALID, "nip": "19850315201001100"}, "nip", "18 digits"),
        ({**VALID, "nip": "198513152010011001"}, "nip", "birth date"),
        ({**VALID, "nip": "198503152010013001"}, "nip", "digit 15"),
        ({**VALID, "email": "sari@"}, "email", ""),
        ({**VALID, "phone": "+1 650 253 0000"}, "phone", "Indonesian"),
        ({**VALID, "name": 42}, "name", "Not a valid string"),
        ({**VALID, "opd": ["Dinas"]}, "opd", "Not a valid string"),
    ],
    ids=[
        "missing-email",
        "short-nip",
        "nip-birth-date",
        "nip-sex-digit",
        "bad-email",
        "foreign-phone",
        "name-not-string",
        "opd-not-string",
    ],
)
def test_invalid_participant_gets_422_naming_the_field_and_nothing_is_written(client_and_session, body, field, rule):
    runtime, client, session_id = client_and_session
    response = client.post(f"/registration/api/v1/sessions/{session_id}/registrations", json=body)

    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == 422 and problem["title"] and problem["type"]
    assert field in problem["errors"] and rule in " ".join(problem["errors"][field])
    assert _written(runtime) == (0, 0)


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        ("{" + '"name": "' + "x" * 70_000 + '"}', "application/json", 413),
        ("{not json", "application/json", 400),
        ('["a", "list"]', "application/json", 422),
    ],
    ids=["huge-body", "malformed-json", "not-an-object"],
)
def test_unreadable_bodies_get_a_problem_and_nothing_is_written(client_and_session, data, content_type, status):
    runtime, client, session_id = client_and_session
    response = client.post(
        f"/registration/api/v1/sessions/{session_id}/registrations", data=data, content_type=content_type
    )
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["detail"]
    assert _written(runtime) == (0, 0)


@pytest.mark.parametrize("zero", OTHER_DIGITS.values(), ids=OTHER_DIGITS.keys())
def test_a_nip_in_other_digits_than_0_to_9_gets_422_naming_nip_and_nothing_is_written(client_and_session, zero):
    runtime, client, session_id = client_and_session
    body = {**VALID, "nip": in_other_digits(VALID["nip"], zero)}
    response = client.post(f"/registration/api/v1/sessions/{session_id}/registrations", json=body)

    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["errors"] == {"nip": ["NIP must be exactly 18 digits 0-9."]}
    assert _written(runtime) == (0, 0)


def test_one_nip_written_in_other_digits_cannot_register_again_for_the_session(client_and_session):
    runtime, client, session_id = client_and_session
    url = f"/registration/api/v1/sessions/{session_id}/registrations"
    assert client.post(url, json=VALID).status_code == 201

    again = [
        client.post(url, json={**VALID, "nip": in_other_digits(VALID["nip"], zero)}).status_code
        for zero in OTHER_DIGITS.values()
    ]

    assert again == [422] * len(OTHER_DIGITS)
    assert _written(runtime) == (1, 1)


def test_registering_for_an_unknown_session_is_404_and_nothing_is_written(client_and_session):
    runtime, client, _ = client_and_session
    response = client.post("/registration/api/v1/sessions/no-such-session/registrations", json=VALID)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert _written(runtime) == (0, 0)


def test_the_same_nip_twice_for_one_session_is_409_and_writes_one_registration(client_and_session):
    runtime, client, session_id = client_and_session
    url = f"/registration/api/v1/sessions/{session_id}/registrations"
    assert client.post(url, json=VALID).status_code == 201
    again = client.post(url, json={**VALID, "email": "other@kaltaraprov.go.id"})
    assert again.status_code == 409
    assert "nip" in again.get_json()["errors"]
    assert _written(runtime) == (1, 1)


def test_identifiers_with_a_nul_character_are_not_found_not_a_server_error(client_and_session):
    runtime, client, _ = client_and_session
    assert client.get("/registration/api/v1/sessions/a%00b").status_code == 404
    assert client.post("/registration/api/v1/sessions/a%00b/registrations", json=VALID).status_code == 404
    assert client.get("/registration/api/v1/sessions?limit=5%00").status_code == 422
    assert _written(runtime) == (0, 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"starts_at": "9999-12-31T23:00:00-05:00"}, "starts_at"),
        ({"ends_at": "0001-01-01T00:30:00+05:00"}, "ends_at"),
        ({"title": "Sosialisasi\nBcc: semua@example.go.id"}, "title"),
        ({"capacity": "12"}, "capacity"),
    ],
    ids=["year-9999", "year-1", "newline-in-title", "capacity-as-text"],
)
def test_an_unfit_session_gets_422_naming_the_field_and_nothing_is_written(client_and_session, changes, field):
    runtime, client, _ = client_and_session
    token = TokenIssuer(load_private_key_pem(runtime.settings), 3600).issue(
        Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser")
    )
    body = {
        "title": "Coaching Clinic",
        "starts_at": "2027-03-02T09:00:00+08:00",
        "ends_at": "2027-03-02T12:00:00+08:00",
        "location": "Tarakan",
        "capacity": 12,
        **changes,
    }
    response = client.post("/registration/api/v1/sessions", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    with runtime.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(LabSession)) == 1  # the fixture's only


def _organiser_headers(runtime) -> dict[str, str]:
    token = TokenIssuer(load_private_key_pem(runtime.settings), 3600).issue(
        Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser")
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"year": 2027, "opds": ["Bappeda"]}, "name"),
        ({"name": "Labinov", "year": "2027", "opds": ["Bappeda"]}, "year"),
        ({"name": "Labinov", "year": 2027, "opds": []}, "opds"),
        ({"name": "Labinov", "year": 2027, "opds": ["Bappeda\nBcc: x@example.go.id"]}, "opds"),
        ({"name": "Labinov", "year": 2027, "opds": ["Bappeda"], "opd_quota": 0}, "opd_quota"),
    ],
    ids=["no-name", "year-as-text", "no-agencies", "agency-with-newline", "zero-quota"],
)
def test_an_unfit_programme_gets_422_naming_the_field_and_nothing_is_written(client_and_session, body, field):
    from services.registration.tables import Programme

    runtime, client, _ = client_and_session
    response = client.post("/registration/api/v1/programmes", json=body, headers=_organiser_headers(runtime))
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    with runtime.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Programme)) == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"stage": "dream"}, "stage"),
        ({"state": "cancelled"}, "state"),
        ({"online_url": "javascript:alert(1)"}, "online_url"),
        ({"waitlist": "sometimes"}, "waitlist"),
        ({"programme_id": "no-such-programme"}, "programme_id"),
        (
            {
                "registration_opens_at": "2027-02-20T09:00:00+08:00",
                "registration_closes_at": "2027-02-10T09:00:00+08:00",
            },
            "registration_closes_at",
        ),
        ({"registration_opens_at": "2027-02-20T09:00:00"}, "registration_opens_at"),
    ],
    ids=["unknown-stage", "created-cancelled", "script-url", "waitlist-not-bool", "no-programme", "window", "naive"],
)
def test_an_unfit_new_session_field_gets_422_naming_it_and_nothing_is_written(client_and_session, changes, field):
    runtime, client, _ = client_and_session
    body = {
        "title": "Coaching Clinic",
        "starts_at": "2027-03-02T09:00:00+08:00",
        "ends_at": "2027-03-02T12:00:00+08:00",
        "location": "Tarakan",
        "capacity": 12,
        **changes,
    }
    response = client.post("/registration/api/v1/sessions", json=body, headers=_organiser_headers(runtime))
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"]
    with runtime.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(LabSession)) == 1  # the fixture's only


@pytest.mark.parametrize(
    ("body", "field"),
    [({**VALID, "language": "fr"}, "language"), ({**VALID, "job_title": "x" * 201}, "job_title")],
    ids=["language", "job-title-too-long"],
)
def test_an_unfit_language_or_job_title_gets_422_and_nothing_is_written(client_and_session, body, field):
    runtime, client, session_id = client_and_session
    response = client.post(f"/registration/api/v1/sessions/{session_id}/registrations", json=body)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]
    assert _written(runtime) == (0, 0)


def test_a_change_that_breaks_a_rule_gets_422_and_changes_nothing(client_and_session):
    runtime, client, session_id = client_and_session
    url = f"/registration/api/v1/sessions/{session_id}"
    headers = _organiser_headers(runtime)
    for change, field in [({"ends_at": "2027-03-01T08:00:00+08:00"}, "ends_at"), ({"capacity": -1}, "capacity")]:
        response = client.patch(url, json=change, headers=headers)
        assert response.status_code == 422 and field in response.get_json()["errors"], response.get_json()
    with runtime.engine.connect() as connection:
        assert connection.scalar(select(LabSession.capacity)) == 10
        assert connection.scalar(select(func.count()).where(runtime.outbox.c.event_type == "session.changed")) == 0
