"""Public writes are rate-limited in a Redis every web process shares (``shared/ratelimit.py``).

The registration app is the real one, built by its own ``create_app``: the app factory installs the limiter and
``api.py`` marks the two public writes. The counters live in the machine's real Redis (or the embedded
broker's); each test sends from client addresses of its own, so tests and concurrent runs never see each
other's counts.
"""

from __future__ import annotations

import importlib
import os
import uuid

import pytest
import redis
from flask import Flask
from sqlalchemy import func, select

from shared.config import embedded_broker_socket, load_settings
from shared.messaging.broker import start_embedded_broker
from shared.migrations import upgrade
from shared.tokens import load_private_key_pem
from tests.support.runtimes import create_session_directly
from tests.support.suite import participant

REDIS_URL = os.environ.get("LABINOV_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def registration_apps(tmp_path):
    """``make(n=1, **env)``: ``n`` registration apps over one database and one Redis prefix — like ``n`` web
    processes of one suite — and the runtime."""
    prefix = f"labinov-test-{uuid.uuid4().hex}"
    runtimes = []

    def make(count: int = 1, **env: str):
        settings = load_settings(
            "registration",
            {"LABINOV_DATA_DIR": str(tmp_path / "var"), "LABINOV_RATE_LIMIT_STORAGE_URL": REDIS_URL, **env},
        )
        bootstrap = importlib.import_module("services.registration.bootstrap").bootstrap
        create_app = importlib.import_module("services.registration.app").create_app
        runtime = bootstrap(settings)
        upgrade(runtime)
        load_private_key_pem(settings)
        runtimes.append(runtime)
        apps = []
        for _ in range(count):
            apps.append(create_app(bootstrap(settings)))  # the app factory installs the limiter, api.py marks views
        return runtime, apps

    yield make
    for runtime in runtimes:
        runtime.engine.dispose()
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)


@pytest.fixture
def me() -> str:
    """A client address no other test (or run) sends from."""
    return _new_address()


def _new_address() -> str:
    number = uuid.uuid4().int
    return f"10.{number % 250}.{(number >> 8) % 250}.{(number >> 16) % 250 + 1}"


def _register(app: Flask, session_id: str, i: int, address: str):
    return app.test_client().post(
        f"/registration/api/v1/sessions/{session_id}/registrations",
        json=participant(i),
        headers={"X-Forwarded-For": address},
    )


def _stored_registrations(runtime) -> int:
    table = runtime.metadata.tables["registrations"]
    with runtime.reading() as uow:
        return uow.session.scalar(select(func.count()).select_from(table))


def test_a_burst_from_one_address_gets_429_with_retry_after_while_another_address_still_registers(
    registration_apps, me
):
    runtime, (app,) = registration_apps(LABINOV_PUBLIC_RATE_LIMIT="5/minute")
    session_id = create_session_directly(runtime, capacity=50).id

    answers = [_register(app, session_id, i, me) for i in range(8)]

    assert [a.status_code for a in answers] == [201] * 5 + [429] * 3
    refused = answers[-1]
    assert refused.mimetype == "application/problem+json"
    assert refused.get_json()["type"].endswith("/rate-limited")
    assert "5 per 1 minute" in refused.get_json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    assert _register(app, session_id, 100, _new_address()).status_code == 201
    assert _stored_registrations(runtime) == 6, "a refused registration wrote nothing"


def test_two_web_processes_count_one_clients_writes_together(registration_apps, me):
    runtime, (first, second) = registration_apps(count=2, LABINOV_PUBLIC_RATE_LIMIT="6/minute")
    session_id = create_session_directly(runtime, capacity=50).id

    codes = [_register(app, session_id, i, me).status_code for i, app in enumerate([first, second] * 4)]

    assert codes == [201] * 6 + [429] * 2, "each process counted alone"


def test_the_limit_per_session_leaves_the_clients_other_sessions_open_up_to_its_limit_in_all(registration_apps, me):
    runtime, (app,) = registration_apps(
        LABINOV_PUBLIC_RATE_LIMIT="3/minute", LABINOV_PUBLIC_RATE_LIMIT_PER_CLIENT="5/minute"
    )
    first, second, third = (create_session_directly(runtime, capacity=50, title=f"S{n}").id for n in range(3))

    codes = [_register(app, first, i, me).status_code for i in range(4)]
    codes += [_register(app, second, 10 + i, me).status_code for i in range(2)]
    codes += [_register(app, third, 20, me).status_code]

    assert codes == [201, 201, 201, 429, 201, 201, 429]
    answer = _register(app, third, 21, me).get_json()["detail"]
    assert answer.startswith("Too many registrations and cancellations from your address")


def test_a_participant_cancelling_counts_against_the_clients_limit_in_all(registration_apps, me):
    runtime, (app,) = registration_apps(LABINOV_PUBLIC_RATE_LIMIT_PER_CLIENT="2/minute")
    session_id = create_session_directly(runtime, capacity=50).id
    created = _register(app, session_id, 1, me).get_json()
    client = app.test_client()

    def cancel():
        return client.post(
            f"/registration/api/v1/registrations/{created['id']}/cancel",
            headers={"Authorization": f"Bearer {created['manage_token']}", "X-Forwarded-For": me},
        )

    assert cancel().status_code == 200
    assert cancel().status_code == 429  # the second write of this address this minute: refused before the view


def test_reading_a_limited_view_is_never_counted(registration_apps, me):
    runtime, (app,) = registration_apps(LABINOV_PUBLIC_RATE_LIMIT="2/minute")
    session_id = create_session_directly(runtime, capacity=50).id
    created = _register(app, session_id, 1, me).get_json()
    for _ in range(5):
        response = app.test_client().get(
            f"/registration/api/v1/registrations/{created['id']}",
            headers={"Authorization": f"Bearer {created['manage_token']}", "X-Forwarded-For": me},
        )
        assert response.status_code == 200
    assert _register(app, session_id, 2, me).status_code == 201


def test_off_turns_the_limits_off_as_benchmarks_and_load_tests_need(registration_apps, me):
    runtime, (app,) = registration_apps(LABINOV_PUBLIC_RATE_LIMIT="off")
    session_id = create_session_directly(runtime, capacity=500).id

    assert {_register(app, session_id, i, me).status_code for i in range(40)} == {201}


def test_registrations_go_on_when_redis_is_unreachable_counted_per_process_meanwhile(registration_apps, capfd, me):
    """Fail soft: a registration rush must not stop because Redis blinked; a flood is still bounded."""
    runtime, (app,) = registration_apps(
        LABINOV_PUBLIC_RATE_LIMIT="4/minute", LABINOV_RATE_LIMIT_STORAGE_URL="redis://127.0.0.1:1/0"
    )
    session_id = create_session_directly(runtime, capacity=50).id

    codes = [_register(app, session_id, i, me).status_code for i in range(6)]

    assert codes == [201] * 4 + [429] * 2
    warnings = [line for line in capfd.readouterr().err.splitlines() if "Rate limit storage unreachable" in line]
    assert len(warnings) == 1 and '"level": "WARNING"' in warnings[0], "one warning, on the JSON log"


def test_an_embedded_run_counts_in_the_embedded_brokers_redis(tmp_path, registration_apps, me):
    socket = embedded_broker_socket(tmp_path / "var")
    broker = start_embedded_broker(socket)
    try:
        runtime, (app,) = registration_apps(LABINOV_RATE_LIMIT_STORAGE_URL="", LABINOV_PUBLIC_RATE_LIMIT="3/minute")
        assert runtime.settings.rate_limit_storage_url == f"redis+unix://{socket}"
        session_id = create_session_directly(runtime, capacity=50).id

        codes = [_register(app, session_id, i, me).status_code for i in range(4)]

        assert codes == [201, 201, 201, 429]
        assert any(b"public-writes" in key for key in redis.Redis(unix_socket_path=str(socket)).keys("LIMITS:*"))
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(15)


def test_the_default_limit_lets_a_whole_office_register_for_one_session(registration_apps, me):
    """120 a minute for one session from one address: a large agency's staff behind one NAT get in."""
    runtime, (app,) = registration_apps()
    session_id = create_session_directly(runtime, capacity=500).id

    codes = [_register(app, session_id, i, me).status_code for i in range(121)]

    assert codes == [201] * 120 + [429]
