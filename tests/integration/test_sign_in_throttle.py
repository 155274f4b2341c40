"""Guessing passwords at the token endpoint is bounded per e-mail address, on the real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from services.registration import domain
from services.registration.app import create_app
from services.registration.tables import LoginAttempts
from tests.support.runtimes import migrated_runtime

PANITIA = {"email": "panitia@kaltaraprov.go.id", "password": "rahasia-panitia-2017"}
URL = "/registration/api/v1/auth/token"


@pytest.fixture
def setup(tmp_path, postgres_url):
    runtime = migrated_runtime("registration", tmp_path, postgres_url)
    with runtime.unit_of_work() as uow:
        domain.create_account(uow, "organiser", PANITIA["email"], PANITIA["password"])
    yield runtime, create_app(runtime).test_client()
    runtime.engine.dispose()


def _guess(client, email: str = PANITIA["email"], password: str = "salah-salah-salah"):
    return client.post(URL, json={"email": email, "password": password})


def test_after_the_allowed_attempts_even_the_right_password_waits(setup):
    _, client = setup
    for _ in range(domain.SIGN_IN_ATTEMPTS):
        assert _guess(client).status_code == 401

    locked = _guess(client, password=PANITIA["password"])

    assert locked.status_code == 429
    assert locked.mimetype == "application/problem+json"
    assert 0 < int(locked.headers["Retry-After"]) <= domain.SIGN_IN_WINDOW.total_seconds()


def test_an_unknown_address_is_throttled_the_same_way(setup):
    _, client = setup
    answers = [_guess(client, email="nobody@kaltaraprov.go.id").status_code for _ in range(6)]
    assert answers == [401] * 5 + [429]


def test_a_successful_sign_in_clears_the_count_and_a_new_window_starts_fresh(setup):
    runtime, client = setup
    for _ in range(domain.SIGN_IN_ATTEMPTS - 1):
        _guess(client)
    assert client.post(URL, json=PANITIA).status_code == 200
    for _ in range(domain.SIGN_IN_ATTEMPTS):
        assert _guess(client).status_code == 401
    assert _guess(client).status_code == 429

    with runtime.engine.begin() as connection:  # the window ends
        connection.execute(
            update(LoginAttempts.__table__).values(
                window_started_at=datetime.now(UTC) - domain.SIGN_IN_WINDOW - timedelta(seconds=1)
            )
        )
    assert client.post(URL, json=PANITIA).status_code == 200


def test_a_burst_of_parallel_guesses_gets_no_more_password_checks_than_allowed(setup):
    runtime, client = setup
    answers: list[int] = []
    start = threading.Barrier(12)

    def guess() -> None:
        own_client = create_app(runtime).test_client()
        start.wait()
        answers.append(_guess(own_client).status_code)

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers.count(401) == domain.SIGN_IN_ATTEMPTS
    assert answers.count(429) == 12 - domain.SIGN_IN_ATTEMPTS
