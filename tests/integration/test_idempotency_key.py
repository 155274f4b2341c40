"""``Idempotency-Key`` on creating POSTs, against the real PostgreSQL: a repeated request creates nothing."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from services.registration.app import create_app
from services.registration.tables import LabSession, Registration
from shared.tokens import Principal, TokenIssuer, load_private_key_pem
from tests.support.runtimes import create_session_directly, migrated_runtime
from tests.support.suite import participant


@pytest.fixture
def setup(tmp_path, postgres_url):
    runtime = migrated_runtime("registration", tmp_path, postgres_url)
    lab_session = create_session_directly(runtime, capacity=10)
    app = create_app(runtime)
    yield runtime, app, f"/registration/api/v1/sessions/{lab_session.id}/registrations"
    runtime.engine.dispose()


def _registrations(runtime) -> int:
    with runtime.engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(Registration))


def test_a_repeated_key_replays_the_first_answer_and_creates_nothing(setup):
    runtime, app, url = setup
    client = app.test_client()
    headers = {"Idempotency-Key": "tap-1"}

    first = client.post(url, json=participant(1), headers=headers)
    again = client.post(url, json=participant(1), headers=headers)

    assert first.status_code == 201
    assert again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _registrations(runtime) == 1


def test_a_refusal_is_replayed_too(setup):
    runtime, app, url = setup
    client = app.test_client()
    assert client.post(url, json=participant(1)).status_code == 201

    first = client.post(url, json=participant(1), headers={"Idempotency-Key": "k"})
    again = client.post(url, json=participant(1), headers={"Idempotency-Key": "k"})

    assert first.status_code == again.status_code == 409
    assert again.headers["Idempotent-Replayed"] == "true"


def _organiser_headers(runtime, key: str) -> dict[str, str]:
    token = TokenIssuer(load_private_key_pem(runtime.settings), 3600).issue(
        Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser")
    )
    return {"Idempotency-Key": key, "Authorization": f"Bearer {token}"}


SESSION = {
    "title": "Workshop Deliver",
    "starts_at": "2027-05-01T09:00:00+08:00",
    "ends_at": "2027-05-01T12:00:00+08:00",
    "location": "Tarakan",
    "capacity": 25,
}


def test_a_caller_reusing_a_key_for_a_different_request_is_refused(setup):
    runtime, app, _ = setup
    client = app.test_client()
    headers = _organiser_headers(runtime, "k")
    assert client.post("/registration/api/v1/sessions", json=SESSION, headers=headers).status_code == 201

    other = client.post("/registration/api/v1/sessions", json={**SESSION, "capacity": 30}, headers=headers)

    assert other.status_code == 422
    assert other.mimetype == "application/problem+json"
    assert "different request" in other.get_json()["detail"]


def client_at(app, address: str):
    """A test client whose requests come from ``address`` (as the gateway reports it in X-Forwarded-For)."""
    client = app.test_client()
    client.environ_base["HTTP_X_FORWARDED_FOR"] = address
    return client


def test_two_participants_who_pick_the_same_key_each_get_their_own_answer(setup):
    runtime, app, url = setup

    first = client_at(app, "198.51.100.1").post(url, json=participant(1), headers={"Idempotency-Key": "1"})
    second = client_at(app, "198.51.100.2").post(url, json=participant(2), headers={"Idempotency-Key": "1"})

    assert first.status_code == second.status_code == 201
    assert first.get_json()["nip"] != second.get_json()["nip"]
    assert _registrations(runtime) == 2


def test_a_participant_reusing_a_key_for_a_different_registration_is_refused_like_an_organiser(setup):
    runtime, app, url = setup
    client = client_at(app, "198.51.100.7")
    assert client.post(url, json=participant(1), headers={"Idempotency-Key": "k"}).status_code == 201

    other = client.post(url, json=participant(2), headers={"Idempotency-Key": "k"})

    assert other.status_code == 422
    assert other.mimetype == "application/problem+json"
    assert "different request" in other.get_json()["detail"]
    assert _registrations(runtime) == 1


def test_an_anonymous_answer_is_never_replayed_to_another_client(setup):
    runtime, app, url = setup
    first = client_at(app, "198.51.100.1").post(url, json=participant(1), headers={"Idempotency-Key": "same"})

    stranger = client_at(app, "203.0.113.9").post(url, json=participant(1), headers={"Idempotency-Key": "same"})

    assert first.status_code == 201
    assert "Idempotent-Replayed" not in stranger.headers
    assert stranger.status_code == 409  # the stranger's own request ran: that NIP is already registered
    assert _registrations(runtime) == 1


def test_a_very_long_path_with_a_key_is_answered_not_a_server_error(setup):
    _, app, _ = setup
    url = "/registration/api/v1/sessions/" + "x" * 2000 + "/registrations"
    response = app.test_client().post(url, json=participant(1), headers={"Idempotency-Key": "long"})
    assert response.status_code == 404


def test_a_key_that_is_not_visible_ascii_is_a_400(setup):
    _, app, url = setup
    response = app.test_client().post(url, json=participant(1), headers={"Idempotency-Key": "a b"})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["detail"]


def test_concurrent_requests_with_one_key_create_one_session(setup):
    """Sessions have no natural uniqueness: only the key stands between a double tap and two sessions."""
    runtime, app, _ = setup
    headers = _organiser_headers(runtime, "rush")
    answers: list[int] = []
    start = threading.Barrier(8)

    def tap() -> None:
        client = app.test_client()
        start.wait()
        response = client.post("/registration/api/v1/sessions", json=SESSION, headers=headers)
        answers.append(response.status_code)

    threads = [threading.Thread(target=tap) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with runtime.engine.connect() as connection:
        lab_sessions = connection.scalar(select(func.count()).select_from(LabSession))
    assert lab_sessions == 2  # the fixture's session and exactly one more
    assert answers.count(201) >= 1
    assert set(answers) <= {201, 409}  # 409 only while the first is still in progress


def test_the_openapi_document_offers_the_header_on_creating_posts(setup):
    _, app, _ = setup
    spec = app.test_client().get("/registration/api/v1/openapi.json").get_json()
    operation = spec["paths"]["/registration/api/v1/sessions/{session_id}/registrations"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in operation["parameters"]]
    assert "session_id" in [
        p["name"]
        for p in operation["parameters"]
        + spec["paths"]["/registration/api/v1/sessions/{session_id}/registrations"].get("parameters", [])
    ]
