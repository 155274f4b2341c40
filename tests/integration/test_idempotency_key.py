"""``Idempotency-Key`` on creating POSTs, against the real PostgreSQL: a repeated request creates nothing."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from services.registration.app import create_app
from services.registration.tables import LabSession, Registration
from shared.auth import Principal, TokenIssuer, load_private_key_pem
from tests.support.runtimes import create_session_directly, migrated_runtime
from tests.support.suite import participant


@pytest.fixture
def setup(tmp_path, postgres_url):
    runtime = migrated_runtime("registration", tmp_path, postgres_url)
    session = create_session_directly(runtime, capacity=10)
    app = create_app(runtime)
    yield runtime, app, f"/registration/api/v1/sessions/{session.id}/registrations"
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


def test_the_same_key_with_a_different_body_is_refused(setup):
    runtime, app, url = setup
    client = app.test_client()
    assert client.post(url, json=participant(1), headers={"Idempotency-Key": "k"}).status_code == 201

    other = client.post(url, json=participant(2), headers={"Idempotency-Key": "k"})

    assert other.status_code == 422
    assert other.mimetype == "application/problem+json"
    assert "different request" in other.get_json()["detail"]
    assert _registrations(runtime) == 1


def test_a_key_that_is_not_visible_ascii_is_a_400(setup):
    _, app, url = setup
    response = app.test_client().post(url, json=participant(1), headers={"Idempotency-Key": "a b"})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.get_json()["detail"]


def test_concurrent_requests_with_one_key_create_one_session(setup):
    """Sessions have no natural uniqueness: only the key stands between a double tap and two sessions."""
    runtime, app, _ = setup
    token = TokenIssuer(load_private_key_pem(runtime.settings), 3600).issue(
        Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser")
    )
    body = {
        "title": "Workshop Deliver",
        "starts_at": "2027-05-01T09:00:00+08:00",
        "ends_at": "2027-05-01T12:00:00+08:00",
        "location": "Tarakan",
        "capacity": 25,
    }
    answers: list[int] = []
    start = threading.Barrier(8)

    def tap() -> None:
        client = app.test_client()
        start.wait()
        response = client.post(
            "/registration/api/v1/sessions",
            json=body,
            headers={"Idempotency-Key": "rush", "Authorization": f"Bearer {token}"},
        )
        answers.append(response.status_code)

    threads = [threading.Thread(target=tap) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with runtime.engine.connect() as connection:
        sessions = connection.scalar(select(func.count()).select_from(LabSession))
    assert sessions == 2  # the fixture's session and exactly one more
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
