"""HTTP conventions every service shares (shared/http.py), seen through the registration service."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

PROBLEM = "application/problem+json"
SESSIONS = "/registration/api/v1/sessions"
PARTICIPANT = {
    "name": "Sari Wulandari",
    "nip": "198503152010012001",
    "email": "sari@kaltaraprov.go.id",
    "phone": "0812 3456 7890",
    "opd": "Dinas Kesehatan",
}


def registrations_of(session_id: str) -> str:
    return f"{SESSIONS}/{session_id}/registrations"


def test_a_given_request_id_is_echoed(registration_client):
    response = registration_client.get("/registration/health/live", headers={"X-Request-ID": "req-2017-kaltara"})
    assert response.headers["X-Request-ID"] == "req-2017-kaltara"


def test_a_request_without_an_id_gets_a_fresh_one(registration_client):
    first = registration_client.get("/registration/health/live").headers.get("X-Request-ID")
    second = registration_client.get("/registration/health/live").headers.get("X-Request-ID")
    assert first and second and first != second


def test_a_request_id_that_could_forge_log_lines_is_replaced(registration_client):
    response = registration_client.get("/registration/health/live", headers={"X-Request-ID": "a b\tinjected"})
    assert response.headers["X-Request-ID"] not in ("", "a b\tinjected")


def test_liveness_answers_200(registration_client):
    response = registration_client.get("/registration/health/live")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


def test_an_unknown_path_is_a_404_problem(registration_client):
    response = registration_client.get("/registration/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == PROBLEM
    assert response.get_json()["status"] == 404
    assert response.headers.get("X-Request-ID")


def test_a_70_kb_body_is_a_413_problem(registration_client):
    body = json.dumps({"name": "x" * 70 * 1024})
    response = registration_client.post(registrations_of("any"), data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.mimetype == PROBLEM
    assert response.get_json()["status"] == 413


def test_malformed_json_is_a_400_problem(registration_client):
    response = registration_client.post(registrations_of("any"), data='{"name": ', content_type="application/json")
    assert response.status_code == 400
    assert response.mimetype == PROBLEM
    assert "JSON" in response.get_json()["detail"]


def test_a_method_the_route_does_not_serve_is_a_405_problem_naming_the_allowed_ones(registration_client):
    response = registration_client.delete(SESSIONS)
    assert response.status_code == 405
    assert response.mimetype == PROBLEM
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_invalid_fields_are_a_422_problem_listing_each_field(registration_client):
    response = registration_client.post(registrations_of("any"), json={"name": "Sari", "nip": "123"})
    assert response.status_code == 422
    assert response.mimetype == PROBLEM
    assert {"nip", "email", "phone", "opd"} <= set(response.get_json()["errors"])


@pytest.fixture
def session_id(registration_client, registration_app, mint_token) -> str:
    token = mint_token(registration_app.extensions["labinov"].settings, "organiser")
    response = registration_client.post(
        SESSIONS,
        json={
            "title": "Coaching clinic inovasi",
            "starts_at": "2026-12-07T09:00:00+08:00",
            "ends_at": "2026-12-07T12:00:00+08:00",
            "location": "Tanjung Selor",
            "capacity": 30,
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_the_request_id_travels_into_the_events_the_request_causes(registration_client, registration_app, session_id):
    response = registration_client.post(
        registrations_of(session_id), json=PARTICIPANT, headers={"X-Request-ID": "req-trace-1"}
    )
    assert response.status_code == 201, response.get_json()

    runtime = registration_app.extensions["labinov"]
    with runtime.engine.connect() as connection:
        row = connection.execute(
            select(runtime.outbox.c.payload).where(runtime.outbox.c.event_type == "registration.confirmed")
        ).scalar_one()
    assert json.loads(row)["correlationid"] == "req-trace-1"


def test_registering_for_a_session_that_does_not_exist_is_a_404_problem(registration_client):
    response = registration_client.post(registrations_of("no-such-session"), json=PARTICIPANT)
    assert response.status_code == 404
    assert response.mimetype == PROBLEM


# --- JSON a parser cannot survive is a 4xx on every endpoint, not a 500 ------------------------------------

TOKEN = "/registration/api/v1/auth/token"


def deeply_nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    "url",
    [TOKEN, SESSIONS, registrations_of("any")],
    ids=["token", "session", "registration"],
)
def test_json_nested_a_thousand_levels_deep_is_a_400_problem(registration_client, url):
    body = json.dumps({"name": "x"})[:-1] + ', "capacity": ' + deeply_nested(1000) + "}"
    assert len(body) < 64 * 1024
    response = registration_client.post(url, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.mimetype == PROBLEM
    assert "nests deeper" in response.get_json()["detail"]


def test_json_nested_a_little_deeper_than_allowed_is_a_400_problem(registration_client):
    response = registration_client.post(
        registrations_of("any"), data=f'{{"name": {deeply_nested(40)}}}', content_type="application/json"
    )
    assert response.status_code == 400
    assert "nests deeper than 32 levels" in response.get_json()["detail"]


@pytest.mark.parametrize("url", [TOKEN, SESSIONS, registrations_of("any")], ids=["token", "session", "registration"])
def test_a_five_thousand_digit_number_is_a_400_problem_naming_it(registration_client, url):
    body = '{"capacity": ' + "9" * 5000 + "}"
    response = registration_client.post(url, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.mimetype == PROBLEM
    assert "more than 100 digits" in response.get_json()["detail"]


def test_a_five_thousand_digit_capacity_from_an_organiser_is_a_400_problem(
    registration_client, registration_app, mint_token
):
    token = mint_token(registration_app.extensions["labinov"].settings, "organiser")
    body = '{"title": "Workshop", "capacity": ' + "1" * 5000 + "}"
    response = registration_client.post(
        SESSIONS, data=body, content_type="application/json", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 400
    assert response.mimetype == PROBLEM


def test_ordinary_nesting_and_numbers_still_reach_the_fields(registration_client):
    response = registration_client.post(registrations_of("any"), json={"name": [[["Sari"]]], "nip": 123})
    assert response.status_code == 422
    assert {"name", "nip"} <= set(response.get_json()["errors"])


# --- the caller's address behind the gateway ------------------------------------------------------------------


def test_the_address_the_gateway_appended_is_the_client_address(registration_app):
    from shared.http import client_address

    seen = {}

    @registration_app.get("/registration/test-only/address")
    def address():
        seen["address"] = client_address()
        return "ok"

    registration_app.test_client().get(
        "/registration/test-only/address", headers={"X-Forwarded-For": "203.0.113.66, 198.51.100.23"}
    )
    assert seen["address"] == "198.51.100.23"  # the one gateway's entry, not what the caller wrote before it


def test_without_trusted_gateways_the_socket_address_is_the_client_address(runtime_for, data_env, monkeypatch):
    from importlib import import_module

    from shared.config import load_settings
    from shared.http import client_address

    runtime = runtime_for("evaluation")
    runtime.settings = load_settings("evaluation", env={**data_env, "LABINOV_TRUSTED_PROXY_HOPS": "0"})
    app = import_module("services.evaluation.app").create_app(runtime)
    seen = {}

    @app.get("/evaluation/test-only/address")
    def address():
        seen["address"] = client_address()
        return "ok"

    app.test_client().get("/evaluation/test-only/address", headers={"X-Forwarded-For": "203.0.113.66"})
    assert seen["address"] == "127.0.0.1"


def test_a_nested_schema_s_errors_are_listed_under_dotted_field_names():
    from shared.http import _flatten_errors

    nested = {
        "json": {
            "audience": {"audience": ["Give exactly one of session_id, programme_id, opd or emails."]},
            "members": {0: {"name": ["Missing data for required field."]}},
            "answers": {"_schema": ["Unknown question."], "size": ["Not one of the choices."]},
            "nip": ["NIP must be exactly 18 digits 0-9."],
        }
    }
    assert _flatten_errors(nested) == {
        "audience": ["Give exactly one of session_id, programme_id, opd or emails."],
        "members.name": ["Missing data for required field."],
        "answers": ["Unknown question."],
        "answers.size": ["Not one of the choices."],
        "nip": ["NIP must be exactly 18 digits 0-9."],
    }
