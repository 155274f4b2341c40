"""The benchmark's own tools measure what they claim: valid unique participants, honest validity, sane rankings.

A benchmark whose requests fail validation, or whose pre-filled NIPs collide with wrk's, would measure
422s and 409s instead of registrations; these tests hold the three spellings of the participant numbering
(Lua, SQL, Python) to each other and to the suite's own ``ParticipantSchema``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import create_engine, inspect, select, text

from services.registration.rules import nip_problem
from services.registration.schemas import ParticipantSchema
from services.registration.tables import Registration
from tests.bench import profiling
from tests.bench.participants import BLOCK_SIZE, body_of, nip_of, prefill_registrations
from tests.bench.wrk import WrkSettings, parse_result, run_wrk, wrk_problem
from tests.support.runtimes import create_session_directly, migrated_runtime

SAMPLE_NUMBERS = [0, 1, 998, 999, 1997, 1998, 123_456, BLOCK_SIZE - 1, BLOCK_SIZE, 7 * BLOCK_SIZE + 4321]


@pytest.mark.parametrize("n", SAMPLE_NUMBERS)
def test_every_participant_number_is_a_registration_the_api_accepts(n):
    assert ParticipantSchema().validate(body_of(n)) == {}


def test_no_two_participant_numbers_share_a_nip_or_an_email():
    numbers = range(3 * BLOCK_SIZE, 3 * BLOCK_SIZE + 30_000)
    nips = {nip_of(n) for n in numbers}
    assert len(nips) == len(numbers)
    assert all(nip_problem(nip) is None for nip in list(nips)[::997])
    assert len({body_of(n)["email"] for n in numbers}) == len(numbers)


class _RecordingServer(ThreadingHTTPServer):
    """Answers every POST 201 and keeps the JSON bodies it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Recorder)


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.bodies.append(body)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args) -> None:
        pass


@pytest.mark.skipif(wrk_problem() is not None, reason=wrk_problem() or "")
def test_the_wrk_script_sends_unique_participants_of_its_block_as_the_python_mapping_spells_them():
    server = _RecordingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_wrk(f"http://127.0.0.1:{server.server_port}/r", WrkSettings(connections=4), block=3, seconds=1)
    finally:
        server.shutdown()
    numbers = [int(body["name"].removeprefix("Peserta Bench ")) for body in server.bodies]
    assert result.valid and result.statuses == {201: result.requests} and result.requests > 0
    assert len(set(numbers)) == len(numbers)
    assert all(3 * BLOCK_SIZE <= n < 4 * BLOCK_SIZE for n in numbers)
    assert all(body == body_of(n) for body, n in zip(server.bodies, numbers, strict=True))


@pytest.mark.postgres
def test_the_sql_prefill_stores_the_participants_the_python_mapping_spells_confirmed_up_to_capacity(
    tmp_path, postgres_url
):
    runtime = migrated_runtime("registration", tmp_path, postgres_url)
    session = create_session_directly(runtime, capacity=1_000)
    prefill_registrations(runtime.engine, session.id, first=1_990, count=1_500)
    with runtime.unit_of_work() as uow:
        stored = uow.session.execute(select(Registration).order_by(Registration.created_at)).scalars().all()
        rows = [(r.nip, r.email, r.phone, r.status) for r in stored]
    expected = [
        (nip_of(n), body_of(n)["email"], "+62" + body_of(n)["phone"][1:], "confirmed" if n < 2_990 else "waitlisted")
        for n in range(1_990, 3_490)
    ]
    assert rows == expected
    session_columns = {column["name"] for column in inspect(runtime.engine).get_columns("lab_sessions")}
    if "confirmed_count" in session_columns:  # the seat counters on the session row, where the schema has them
        with runtime.engine.connect() as connection:
            counters = connection.execute(
                text("SELECT confirmed_count, waitlisted_count FROM lab_sessions WHERE id = :id"), {"id": session.id}
            ).one()
        assert tuple(counters) == (1_000, 500)


def test_a_run_with_any_non_2xx_answer_or_socket_error_is_invalid():
    def result(statuses: dict[str, int], timeouts: int = 0):
        errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": timeouts}
        latency = dict.fromkeys(("min", "mean", "stdev", "max", "p50", "p75", "p90", "p99"), 1000)
        data = {"requests": 10, "duration_us": 1_000_000, "bytes": 1, "generated": 10, "errors": errors}
        return parse_result("wrk", json.dumps({**data, "statuses": statuses, "latency_us": latency}))

    assert result({"201": 10}).valid
    assert result({"201": 9, "409": 1}).problems == ["1 x HTTP 409"]
    assert not result({"201": 10}, timeouts=2).valid
    assert result({"201": 10}).latency_ms["p50"] == 1.0


def test_a_profile_charges_each_request_sample_to_the_innermost_frame_of_the_suites_code():
    collapsed = "\n".join(
        [
            "process 1:x;thread (0x1);Flask.wsgi_app (flask/app.py:1);view (services/a.py:3);lock (services/a.py:9);"
            "Connection.wait (psycopg/connection.py:479) 6",
            "process 1:x;thread (0x1);Flask.wsgi_app (flask/app.py:1);view (services/a.py:3);commit (shared/db.py:2) 2",
            "process 1:x;thread (0x2);_worker (concurrent/futures/thread.py:69) 12",
        ]
    )
    requests = profiling.rank_frames(collapsed, focus="Flask.wsgi_app")
    everything = profiling.rank_frames(collapsed)

    assert requests.samples == 8 and everything.samples == 20
    assert requests.innermost_suite_frame == [("lock (services/a.py:9)", 6), ("commit (shared/db.py:2)", 2)]
    assert everything.own[0] == ("_worker (concurrent/futures/thread.py:69)", 12)
    assert ("view (services/a.py:3)", 8) not in requests.total  # on every request's stack: it tells nothing


@pytest.mark.postgres
def test_the_ceiling_app_validates_like_the_suite_and_commits_one_row_per_registration(postgres_url):
    from tests.bench.ceiling_app import CREATE_TABLE, create_app

    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text(CREATE_TABLE))
    client = create_app(postgres_url).test_client()

    accepted = client.post("/registrations", json=body_of(42))
    refused = client.post("/registrations", json={**body_of(43), "nip": "198503152010011000"})

    assert accepted.status_code == 201 and accepted.json["nip"] == nip_of(42)
    assert refused.status_code == 422 and "nip" in refused.json["errors"]
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT phone FROM ceiling_registrations")) == "+62812" + f"{42:08d}"
    engine.dispose()
