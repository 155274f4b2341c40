"""Who may call what (shared/auth.py): every API view declares it, and every protected view enforces it."""

from __future__ import annotations

import re
import threading
import time
import uuid
from importlib import import_module

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask

from services.registration import domain
from shared.config import SERVICES, load_settings
from shared.tokens import ISSUER, AuthError, TokenVerifier, load_private_key_pem


def api_views(app: Flask) -> dict:
    return {endpoint: view for endpoint, view in app.view_functions.items() if "_api." in endpoint}


def protected_calls(app: Flask, kind: str = "token") -> list[tuple[str, str, str, tuple[str, ...]]]:
    """``(endpoint, method, url, roles)`` of every API route that needs a token (``kind="token"``) or another
    system's shared secret (``kind="shared secret"``), path params filled."""
    calls = []
    for rule in app.url_map.iter_rules():
        roles = getattr(app.view_functions[rule.endpoint], "labinov_roles", ("anyone",))
        if "_api." not in rule.endpoint or roles == ("anyone",):
            continue
        if (roles == ("shared secret",)) != (kind == "shared secret"):
            continue
        url = re.sub(r"<(?:[^:<>]+:)?[^<>]+>", str(uuid.uuid4()), rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            calls.append((rule.endpoint, method, url, roles))
    return calls


def declared_roles(app: Flask) -> tuple[str, ...]:
    """Every role some route of ``app`` lets in, then roles no route names (a participant, a stranger)."""
    roles = {role for *_, allowed in protected_calls(app) for role in allowed}
    return (*sorted(roles), "participant", "stranger")


def call(client, method: str, url: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.open(url, method=method, json={}, headers=headers)


@pytest.mark.parametrize("service", SERVICES)
def test_every_api_view_declares_who_may_call_it(app_for, service):
    views = api_views(app_for(service))
    assert views, "no API view found: the endpoint naming convention changed"
    assert [endpoint for endpoint, view in views.items() if not getattr(view, "labinov_roles", None)] == []


@pytest.mark.parametrize("service", SERVICES)
def test_a_protected_endpoint_without_a_token_answers_401_with_a_challenge(app_for, service):
    app = app_for(service)
    calls = protected_calls(app)
    assert calls, f"{service} has no protected endpoint to check"
    for endpoint, method, url, _roles in calls:
        response = call(app.test_client(), method, url)
        assert response.status_code == 401, endpoint
        assert response.mimetype == "application/problem+json", endpoint
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), endpoint


def test_an_endpoint_for_another_system_refuses_every_caller_without_its_shared_secret(app_for, data_env, mint_token):
    """The gateway's status callback and the mail provider's bounce report: no secret, a wrong one, another
    endpoint's secret, a token instead of it, or none configured at all — 401, and the view never runs."""
    from services.notification.app import create_app
    from services.notification.bootstrap import bootstrap

    app = app_for("notification")
    calls = protected_calls(app, kind="shared secret")
    assert sorted(endpoint for endpoint, *_ in calls) == [
        "notification_api.gateway_status",
        "notification_api.mail_bounce",
    ]
    secrets = {"X-Gateway-Secret": "s3cret-gw", "X-Bounce-Secret": "s3cret-bounce"}
    env = {
        "LABINOV_SMS_GATEWAY_SECRET": secrets["X-Gateway-Secret"],
        "LABINOV_MAIL_BOUNCE_SECRET": secrets["X-Bounce-Secret"],
    }
    configured = create_app(bootstrap(load_settings("notification", {**data_env, **env})))
    settings = configured.extensions["labinov"].settings
    for endpoint, method, url, _roles in calls:
        header = configured.view_functions[endpoint].labinov_secret_header
        secret = secrets[header]
        others = [{other: value} for other, value in secrets.items() if other != header]
        for headers in (
            {},
            {header: "wrong"},
            {header: secret[:-1]},
            *others,
            {header: next(v for h, v in secrets.items() if h != header)},
            {"Authorization": f"Bearer {mint_token(settings, 'organiser')}"},
        ):
            response = configured.test_client().open(url, method=method, json={}, headers=headers)
            assert response.status_code == 401 and response.mimetype == "application/problem+json", (endpoint, headers)
        unconfigured = app.test_client().open(url, method=method, json={}, headers={header: ""})
        assert unconfigured.status_code == 401, endpoint
        passed = configured.test_client().open(url, method=method, json={}, headers={header: secret})
        assert passed.status_code == 422, "the right secret reaches the view, which checks the body"


@pytest.mark.parametrize("service", SERVICES)
def test_a_protected_endpoint_refuses_a_role_it_does_not_allow_with_403(app_for, mint_token, service):
    app = app_for(service)
    settings = app.extensions["labinov"].settings
    for endpoint, method, url, roles in protected_calls(app):
        outsider = next(role for role in declared_roles(app) if role not in roles)
        response = call(app.test_client(), method, url, mint_token(settings, outsider))
        assert response.status_code == 403, (endpoint, outsider)
        assert response.mimetype == "application/problem+json", endpoint


@pytest.mark.parametrize("service", SERVICES)
def test_a_protected_endpoint_refuses_an_expired_token_with_401(app_for, mint_token, service):
    app = app_for(service)
    settings = app.extensions["labinov"].settings
    for endpoint, method, url, roles in protected_calls(app):
        response = call(app.test_client(), method, url, mint_token(settings, roles[0], lifetime=-60))
        assert response.status_code == 401, endpoint
        assert "expired" in response.get_json()["detail"], endpoint


@pytest.mark.parametrize("service", SERVICES)
def test_a_protected_endpoint_refuses_a_token_signed_by_another_key_with_401(
    app_for, mint_token, foreign_key_pem, service
):
    app = app_for(service)
    settings = app.extensions["labinov"].settings
    for endpoint, method, url, roles in protected_calls(app):
        response = call(app.test_client(), method, url, mint_token(settings, roles[0], key_pem=foreign_key_pem))
        assert response.status_code == 401, endpoint


@pytest.mark.parametrize("service", SERVICES)
def test_a_protected_endpoint_lets_an_allowed_role_through(app_for, mint_token, service):
    app = app_for(service)
    settings = app.extensions["labinov"].settings
    for endpoint, method, url, roles in protected_calls(app):
        response = call(app.test_client(), method, url, mint_token(settings, roles[0]))
        assert response.status_code not in (401, 403), (endpoint, response.get_json())


# --- participants' tokens: their own registration only --------------------------------------------------


@pytest.fixture
def two_registrations(registration_app):
    """Two registrations for a one-seat session (one confirmed, one waiting), each with its participant token."""
    from datetime import UTC, datetime, timedelta

    from services.registration import domain as registration_domain
    from shared.tokens import Principal
    from tests.support.suite import participant

    runtime = registration_app.extensions["labinov"]
    issuer = registration_app.extensions["labinov_issuer"]
    start = datetime.now(UTC) + timedelta(days=10)
    with runtime.unit_of_work() as uow:
        lab_session = registration_domain.create_session(
            uow,
            {
                "title": "Klinik",
                "starts_at": start,
                "ends_at": start + timedelta(hours=2),
                "location": "Tarakan",
                "capacity": 1,
            },
            Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser"),
        )
        made = [registration_domain.register_participant(uow, lab_session.id, participant(i)) for i in (1, 2)]
        uow.commit()
    return [(r.id, registration_domain.participant_token(issuer, r, lab_session.ends_at)) for r in made]


PARTICIPANT_ROUTES = [
    ("GET", "/registration/api/v1/registrations/{id}"),
    ("POST", "/registration/api/v1/registrations/{id}/cancel"),
]


@pytest.mark.parametrize(("method", "route"), PARTICIPANT_ROUTES)
def test_a_participant_token_opens_its_own_registration(registration_client, two_registrations, method, route):
    registration_id, token = two_registrations[1]
    response = call(registration_client, method, route.format(id=registration_id), token)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["id"] == registration_id


@pytest.mark.parametrize(("method", "route"), PARTICIPANT_ROUTES)
def test_a_participant_token_of_another_registration_is_refused_with_403(
    registration_client, two_registrations, method, route
):
    (mine, token), (other, _) = two_registrations
    for target in (other, str(uuid.uuid4())):  # existing or not: the same answer, nothing revealed
        response = call(registration_client, method, route.format(id=target), token)
        assert response.status_code == 403, (method, target)
        assert response.mimetype == "application/problem+json"


def test_a_cancelled_registration_s_token_reads_that_it_is_cancelled_and_opens_nothing_else(
    registration_client, two_registrations
):
    registration_id, token = two_registrations[0]
    assert call(registration_client, "POST", f"/registration/api/v1/registrations/{registration_id}/cancel", token)
    read = call(registration_client, "GET", f"/registration/api/v1/registrations/{registration_id}", token)
    assert read.status_code == 200 and read.get_json()["status"] == "cancelled"
    assert "nip" not in read.get_json() and "email" not in read.get_json()
    again = call(registration_client, "POST", f"/registration/api/v1/registrations/{registration_id}/cancel", token)
    assert again.status_code == 403


def test_a_participant_token_opens_no_organiser_route(registration_app, two_registrations):
    _registration_id, token = two_registrations[0]
    for endpoint, method, url, roles in protected_calls(registration_app):
        if "participant" not in roles:
            response = call(registration_app.test_client(), method, url, token)
            assert response.status_code == 403, endpoint


def test_a_participant_token_lives_longer_than_an_organiser_s_and_every_service_accepts_it(app_for, two_registrations):
    registration_id, token = two_registrations[0]
    for service in SERVICES:
        principal = app_for(service).extensions["labinov_verifier"].verify(token)
        assert (principal.role, principal.account_id) == ("participant", registration_id)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] > 7 * 24 * 3600


# --- the token endpoint -----------------------------------------------------------------------------------

TOKEN_URL = "/registration/api/v1/auth/token"
PASSWORD = "kaltara-2017-lab"


@pytest.fixture
def organiser(registration_app):
    with registration_app.extensions["labinov"].unit_of_work() as uow:
        account = domain.create_account(uow, "organiser", "Panitia@KaltaraProv.go.id", PASSWORD, name="Panitia")
        uow.commit()  # the caller commits (UnitOfWork's rule), as the `labinov user create` command does
        return account


def test_the_right_password_gets_a_token_that_verifies(registration_app, registration_client, organiser):
    response = registration_client.post(TOKEN_URL, json={"email": "panitia@kaltaraprov.go.id", "password": PASSWORD})

    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    principal = TokenVerifier.from_settings(registration_app.extensions["labinov"].settings).verify(
        body["access_token"]
    )
    assert (principal.account_id, principal.role) == (organiser.id, "organiser")


def test_the_token_opens_what_the_role_may_call(registration_client, organiser):
    token = registration_client.post(TOKEN_URL, json={"email": organiser.email, "password": PASSWORD}).get_json()
    response = registration_client.get(
        f"/registration/api/v1/registrations/{uuid.uuid4()}",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert response.status_code == 404


def test_a_wrong_password_and_an_unknown_email_get_the_same_401(registration_client, organiser):
    wrong_password = registration_client.post(TOKEN_URL, json={"email": organiser.email, "password": "not-it-at-all"})
    unknown_email = registration_client.post(
        TOKEN_URL, json={"email": "nobody@kaltaraprov.go.id", "password": PASSWORD}
    )

    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.mimetype == unknown_email.mimetype == "application/problem+json"
    assert wrong_password.get_json() == unknown_email.get_json()
    assert "access_token" not in wrong_password.get_json()


# Processes starting at once (make run) must all read the one complete key, never a half-written file.
def test_processes_starting_together_all_read_the_same_complete_signing_key(tmp_path):
    for round_number in range(20):
        settings = load_settings("registration", env={"LABINOV_DATA_DIR": str(tmp_path / str(round_number))})
        start, keys = threading.Barrier(8), []

        def read_key(settings=settings, start=start, keys=keys):
            start.wait()
            keys.append(load_private_key_pem(settings))

        threads = [threading.Thread(target=read_key) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(keys)) == 1 and keys[0].startswith("-----BEGIN PRIVATE KEY-----"), [k[:16] for k in keys]


@pytest.mark.parametrize("service", ["notification", "evaluation"])
def test_a_verifying_service_without_a_public_key_says_so_with_503_and_makes_no_key(
    runtime_for, mint_token, foreign_key_pem, service
):
    runtime = runtime_for(service)  # no registration service has run in this data folder
    app = import_module(f"services.{service}.app").create_app(runtime)
    for endpoint, method, url, roles in protected_calls(app):
        response = call(app.test_client(), method, url, mint_token(runtime.settings, roles[0], key_pem=foreign_key_pem))
        assert response.status_code == 503, endpoint
        assert "LABINOV_JWKS_URL" in response.get_json()["detail"]
    assert not list(runtime.settings.keys_dir.glob("*.pem"))


# --- a token's lifetime is bounded by the verifier, not only by the issuer ----------------------------------


def signed_claims(settings, **claims) -> str:
    """A token signed with the suite's real key, carrying exactly ``claims`` (plus issuer and audience)."""
    key = serialization.load_pem_private_key(load_private_key_pem(settings).encode(), password=None)
    return jwt.encode({"iss": ISSUER, "aud": "labinov", "sub": "account-1", **claims}, key, algorithm="EdDSA")


@pytest.fixture
def verifier(registration_app) -> TokenVerifier:
    return registration_app.extensions["labinov_verifier"]


def test_a_validly_signed_token_living_ten_years_is_refused(verifier, registration_app):
    settings = registration_app.extensions["labinov"].settings
    now = int(time.time())
    token = signed_claims(settings, role="organiser", iat=now, exp=now + 10 * 365 * 24 * 3600)
    with pytest.raises(AuthError) as refused:
        verifier.verify(token)
    assert refused.value.status == 401 and "longer than" in refused.value.detail


def test_a_token_without_an_issue_time_is_refused(verifier, registration_app):
    settings = registration_app.extensions["labinov"].settings
    token = signed_claims(settings, role="organiser", exp=int(time.time()) + 600)
    with pytest.raises(AuthError, match="iat"):
        verifier.verify(token)


def test_a_token_issued_long_ago_that_still_runs_for_years_is_refused(verifier, registration_app):
    settings = registration_app.extensions["labinov"].settings
    now = int(time.time())
    token = signed_claims(settings, role="organiser", iat=now - 100, exp=now + 3 * 3600)
    with pytest.raises(AuthError):
        verifier.verify(token)


def test_a_token_within_the_configured_lifetime_is_accepted(verifier, registration_app, mint_token):
    settings = registration_app.extensions["labinov"].settings
    assert verifier.verify(mint_token(settings, "organiser", lifetime=settings.token_lifetime_seconds)).role == (
        "organiser"
    )


def test_a_role_may_be_given_a_longer_lifetime_than_the_default(registration_app, mint_token):
    settings = registration_app.extensions["labinov"].settings
    week = 7 * 24 * 3600
    verifier = TokenVerifier.from_settings(settings, max_lifetime_by_role={"participant": week})

    assert verifier.verify(mint_token(settings, "participant", lifetime=week)).role == "participant"
    with pytest.raises(AuthError):
        verifier.verify(mint_token(settings, "organiser", lifetime=week))


def test_a_protected_endpoint_answers_an_over_long_token_with_401_and_a_challenge(app_for, mint_token):
    app = app_for("evaluation")
    settings = app.extensions["labinov"].settings
    verifier = app.extensions["labinov_verifier"]
    for endpoint, method, url, roles in protected_calls(app):
        # 30 days is over-long for an organiser or evaluator; a participant's link may live longer than that
        over_long = max(30 * 24 * 3600, verifier.max_lifetime_of(roles[0]) + 24 * 3600)
        response = call(app.test_client(), method, url, mint_token(settings, roles[0], lifetime=over_long))
        assert response.status_code == 401, endpoint
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), endpoint


def test_auth_and_domain_refusals_share_one_problem_shape_and_one_challenge(registration_client, organiser):
    from shared.errors import DomainError
    from shared.problems import Problem

    assert issubclass(AuthError, Problem) and issubclass(DomainError, Problem)
    no_token = registration_client.get(f"/registration/api/v1/registrations/{uuid.uuid4()}")  # an AuthError
    wrong_password = registration_client.post(TOKEN_URL, json={"email": organiser.email, "password": "not-it-at-all"})
    for response in (no_token, wrong_password):  # the second is a DomainError
        assert response.status_code == 401
        assert response.headers.getlist("WWW-Authenticate") == ['Bearer realm="labinov"']
        assert set(response.get_json()) >= {"type", "title", "status", "detail"}
