"""Guessing passwords at the token endpoint is bounded per account and client, and per client, without
letting a stranger lock the owner out — on the real PostgreSQL and on the embedded SQLite default."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from services.registration import rules
from services.registration.app import create_app
from services.registration.tables import LoginAttempts
from tests.support.runtimes import create_account_directly, migrated_runtime

PANITIA = {"email": "panitia@kaltaraprov.go.id", "password": "rahasia-panitia-2017"}
URL = "/registration/api/v1/auth/token"
#: The owner's own client, and a stranger's, as the gateway reports them (documentation addresses).
OWNER = "203.0.113.10"
STRANGER = "198.51.100.66"


@pytest.fixture
def setup(tmp_path, database_url):
    runtime = migrated_runtime("registration", tmp_path, database_url)
    create_account_directly(runtime, PANITIA["email"], PANITIA["password"])
    yield runtime, create_app(runtime).test_client()
    runtime.engine.dispose()


def _guess(client, email: str = PANITIA["email"], password: str = "salah-salah-salah", client_address: str = OWNER):
    return client.post(URL, json={"email": email, "password": password}, environ_base={"REMOTE_ADDR": client_address})


def _sign_in(client, client_address: str = OWNER):
    return _guess(client, password=PANITIA["password"], client_address=client_address)


def _assert_throttled(answer) -> None:
    assert answer.status_code == 429
    assert answer.mimetype == "application/problem+json"
    assert 0 < int(answer.headers["Retry-After"]) <= rules.SIGN_IN_WINDOW.total_seconds()


def test_after_the_allowed_attempts_even_the_right_password_waits(setup):
    _, client = setup
    for _ in range(rules.SIGN_IN_ATTEMPTS):
        assert _guess(client).status_code == 401

    locked = _sign_in(client)

    _assert_throttled(locked)


def test_an_unknown_address_is_throttled_the_same_way(setup):
    _, client = setup
    answers = [_guess(client, email="nobody@kaltaraprov.go.id").status_code for _ in range(6)]
    assert answers == [401] * 5 + [429]


def test_a_successful_sign_in_clears_the_count_and_a_new_window_starts_fresh(setup):
    runtime, client = setup
    for _ in range(rules.SIGN_IN_ATTEMPTS - 1):
        _guess(client)
    assert _sign_in(client).status_code == 200
    for _ in range(rules.SIGN_IN_ATTEMPTS):
        assert _guess(client).status_code == 401
    assert _guess(client).status_code == 429

    with runtime.engine.begin() as connection:  # the window ends
        connection.execute(
            update(LoginAttempts.__table__).values(
                window_started_at=datetime.now(UTC) - rules.SIGN_IN_WINDOW - timedelta(seconds=1)
            )
        )
    assert _sign_in(client).status_code == 200


def test_a_burst_of_parallel_guesses_gets_no_more_password_checks_than_allowed(setup):
    runtime, client = setup
    answers: list[int] = []
    start = threading.Barrier(12, timeout=60)
    # each guesser its own app, built here: building Flask apps in parallel threads trips a CPython 3.11 race in
    # ast.parse (werkzeug compiles its routes with it), and the race under test is the guesses, not the builds
    clients = [create_app(runtime).test_client() for _ in range(12)]

    def guess(own_client) -> None:
        start.wait()
        answers.append(_guess(own_client).status_code)

    threads = [threading.Thread(target=guess, args=(own_client,)) for own_client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers.count(401) == rules.SIGN_IN_ATTEMPTS
    assert answers.count(429) == 12 - rules.SIGN_IN_ATTEMPTS


def test_a_stranger_guessing_at_the_organisers_address_does_not_lock_the_organiser_out(setup):
    _, client = setup
    answers = [_guess(client, client_address=STRANGER).status_code for _ in range(rules.SIGN_IN_ATTEMPTS + 1)]
    assert answers == [401] * rules.SIGN_IN_ATTEMPTS + [429]  # the stranger waits...

    assert _sign_in(client, client_address=OWNER).status_code == 200  # ...the organiser does not
    _assert_throttled(_sign_in(client, client_address=STRANGER))  # not even the right password, from there


def test_one_client_guessing_across_many_addresses_is_throttled_known_or_unknown_alike(setup):
    _, client = setup
    addresses = [f"tamu{i}@kaltaraprov.go.id" for i in range(39)]
    addresses.insert(30, PANITIA["email"])  # a real account among the guesses gets the same answers

    answers = [_guess(client, email=address, client_address=STRANGER) for address in addresses]

    assert [a.status_code for a in answers] == [401] * rules.SIGN_IN_ATTEMPTS_PER_CLIENT + [429] * (
        len(addresses) - rules.SIGN_IN_ATTEMPTS_PER_CLIENT
    )
    for answer in answers[rules.SIGN_IN_ATTEMPTS_PER_CLIENT :]:
        _assert_throttled(answer)
    assert _sign_in(client, client_address=OWNER).status_code == 200  # other clients are not affected


def test_many_correct_sign_ins_from_one_client_are_never_throttled(setup):
    """An office behind one address, signing in all day, is not a guesser: a correct password takes its
    attempt back off the client's count."""
    _, client = setup
    answers = [_sign_in(client).status_code for _ in range(rules.SIGN_IN_ATTEMPTS_PER_CLIENT + 5)]
    assert answers == [200] * (rules.SIGN_IN_ATTEMPTS_PER_CLIENT + 5)


def test_signing_in_to_ones_own_account_does_not_wipe_the_guesses_made_at_others(setup):
    _, client = setup
    budget = rules.SIGN_IN_ATTEMPTS_PER_CLIENT
    for i in range(budget - 1):
        assert _guess(client, email=f"tamu{i}@kaltaraprov.go.id").status_code == 401
    assert _sign_in(client).status_code == 200

    assert _guess(client, email="tamu-last@kaltaraprov.go.id").status_code == 401  # the last of the budget
    _assert_throttled(_guess(client, email="tamu-over@kaltaraprov.go.id"))
