"""The development gateway (services/gateway.py) and the web processes' logs, as real gunicorn processes.

What a client sends through the one address: a body too large for the services is a 413 problem+json (not a
502), the service sees the caller's address (not the gateway's, nor one the caller made up), and whatever
the path holds, every line the web process logs stays one JSON object.
"""

from __future__ import annotations

import json
import socket
import sys

import pytest
import requests

from tests.support.suite import Suite
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

REGISTRATIONS = "/registration/api/v1/sessions/any/registrations"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    suite = Suite(tmp_path_factory.mktemp("gateway"))
    suite.labinov("migrate", "registration")
    suite.start_web("registration")
    suite._spawn("gateway", [sys.executable, "-m", "services.cli", "gateway"], "registration")
    try:
        wait_until(
            lambda: requests.get(gateway_url(suite, "/registration/health/live"), timeout=2).ok,
            timeout=60,
            what="the gateway to reach registration",
        )
        yield suite
    finally:
        suite.stop()


def gateway_url(suite: Suite, path: str) -> str:
    return f"http://127.0.0.1:{suite.port}{path}"


def web_log_lines(suite: Suite) -> list[str]:
    return (suite.logs / "registration-web.log").read_text(errors="replace").splitlines()


def access_lines(suite: Suite) -> list[dict]:
    lines = [json.loads(line) for line in web_log_lines(suite) if '"gunicorn.access"' in line]
    return [line for line in lines if line.get("logger") == "gunicorn.access"]


def test_a_10_mb_body_through_the_gateway_is_a_413_problem(suite):
    response = requests.post(
        gateway_url(suite, REGISTRATIONS),
        data=b"{" + b" " * (10 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 413
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_chunked_body_too_large_through_the_gateway_is_a_413_problem(suite):
    def chunks():
        for _ in range(40):
            yield b" " * 4096

    response = requests.post(
        gateway_url(suite, REGISTRATIONS), data=chunks(), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"


def test_a_small_chunked_body_through_the_gateway_reaches_the_service(suite):
    response = requests.post(
        gateway_url(suite, REGISTRATIONS),
        data=iter([b'{"name": ', b'"Sari"}']),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 422, response.text  # the service read the body: fields are missing


def test_the_service_sees_the_callers_address_not_one_the_caller_names(suite):
    marker = "req-forwarded-for-1"
    requests.get(
        gateway_url(suite, "/registration/health/live"),
        headers={"X-Forwarded-For": "203.0.113.66", "X-Request-ID": marker},
        timeout=5,
    )
    line = wait_until(
        lambda: next((line for line in access_lines(suite) if line.get("correlation_id") == marker), None),
        what="the access log line of the request",
    )
    assert line["client"] == "127.0.0.1"


def test_a_line_break_in_the_path_does_not_forge_a_log_line(suite):
    forged = '{"level": "CRITICAL", "message": "forged"}'
    path = "/registration/x%0d%0a" + forged.replace(" ", "%20").replace('"', "%22") + "%0a"
    with socket.create_connection(("127.0.0.1", suite.service_port("registration")), timeout=5) as connection:
        connection.sendall(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: req-forged-1\r\nConnection: close\r\n\r\n".encode()
        )
        assert connection.recv(100).startswith(b"HTTP/1.1 404")
    line = wait_until(
        lambda: next((line for line in access_lines(suite) if line.get("correlation_id") == "req-forged-1"), None),
        what="the access log line of the request",
    )
    assert "forged" in line["request"] and "\n" in line["request"]  # the path, kept as data
    for text in web_log_lines(suite):
        assert isinstance(json.loads(text), dict), text
        assert json.loads(text).get("message") != "forged"
