"""The pages for people (shared/pages.py, services/*/pages.py): who may open them, sign-in, CSRF, forms, errors."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.gateway import create_gateway
from services.registration import domain
from services.registration.app import create_app
from services.registration.bootstrap import bootstrap
from shared.config import SERVICES, load_settings
from shared.pages import AUTH_COOKIE
from shared.tokens import Principal, TokenIssuer
from tests.support.suite import ORGANISER, participant

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def page_views(app) -> dict:
    return {endpoint: view for endpoint, view in app.view_functions.items() if "_pages." in endpoint}


def organiser_pages(app) -> list[tuple[str, str]]:
    """``(method, url)`` of every page only organisers may open, path parameters filled with a made-up id."""
    calls = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if "_pages." not in rule.endpoint or getattr(view, "labinov_roles", None) != ("organiser",):
            continue
        url = re.sub(r"<(?:[^:<>]+:)?[^<>]+>", str(uuid.uuid4()), rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            calls.append((method, url))
    return calls


def csrf_of(client, path: str = "/registration/login") -> str:
    page = client.get(path, headers=BROWSER).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


@pytest.fixture
def organiser_account(registration_app):
    runtime = registration_app.extensions["labinov"]
    with runtime.unit_of_work() as uow:
        domain.create_account(uow, "organiser", ORGANISER["email"], ORGANISER["password"], name="Panitia Kaltara")
        uow.commit()
    return ORGANISER


def sign_in(client, account: dict, next_page: str = "") -> object:
    token = csrf_of(client)
    form = {**account, "csrf_token": token, "next": next_page}
    return client.post("/registration/login", data=form, headers=BROWSER)


def make_session(app, capacity: int = 10, **extra) -> str:
    runtime = app.extensions["labinov"]
    starts = datetime.now(UTC) + timedelta(days=7)
    fields = {
        "title": "Sosialisasi Laboratorium Inovasi",
        "starts_at": starts,
        "ends_at": starts + timedelta(hours=3),
        "location": "Aula Bappeda Kaltara",
        "capacity": capacity,
        **extra,
    }
    with runtime.unit_of_work() as uow:
        lab_session = domain.create_session(uow, fields, Principal("organiser-1", "o@x.id", "organiser"))
        uow.commit()
        return lab_session.id


def form_of(i: int, **overrides) -> dict:
    data = participant(i)
    return {**data, "job_title": "Analis Kebijakan", **overrides}


def inline_errors(page: str) -> dict[str, str]:
    return dict(re.findall(r'<span class="error-text" id="e-([a-z_]+)">([^<]*)</span>', page))


# --- who may open what ---------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_every_page_states_who_may_open_it(app_for, service):
    views = page_views(app_for(service))
    assert views, "no page view found: the endpoint naming convention changed"
    assert [endpoint for endpoint, view in views.items() if not getattr(view, "labinov_roles", None)] == []


def test_an_anonymous_visitor_is_sent_to_sign_in_from_every_organiser_page(registration_app):
    calls = organiser_pages(registration_app)
    assert len(calls) >= 4, calls
    client = registration_app.test_client()
    for method, url in calls:
        response = client.open(url, method=method, headers=BROWSER)
        if method == "POST":  # a form without its CSRF token is refused before anything else
            assert response.status_code == 400, url
            continue
        assert response.status_code == 303, url
        assert response.headers["Location"].startswith("/registration/login?next="), url


@pytest.mark.parametrize("role", ["participant", "evaluator"])
def test_a_participant_or_evaluator_cannot_open_organiser_pages(registration_app, mint_token, role):
    client = registration_app.test_client()
    client.set_cookie(AUTH_COOKIE, mint_token(registration_app.extensions["labinov"].settings, role))
    for method, url in organiser_pages(registration_app):
        if method != "GET":
            continue
        response = client.get(url, headers=BROWSER)
        assert response.status_code == 403, url
        assert "text/html" in response.content_type


def test_a_forged_sign_in_cookie_counts_as_not_signed_in(registration_app):
    stranger_pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    stranger_key = TokenIssuer(stranger_pem.decode(), 3600)
    client = registration_app.test_client()
    client.set_cookie(AUTH_COOKIE, stranger_key.issue(Principal("x", "x@x.id", "organiser")))
    response = client.get("/registration/admin/sessions", headers=BROWSER)
    assert response.status_code == 303 and "/registration/login" in response.headers["Location"]


# --- signing in and out --------------------------------------------------------------------------------


def test_an_organiser_signs_in_and_gets_a_secure_cookie_holding_the_api_token(registration_app, organiser_account):
    client = registration_app.test_client()
    response = sign_in(client, organiser_account)
    assert response.status_code == 303
    assert response.headers["Location"] == "/registration/admin/sessions"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{AUTH_COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/;" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    principal = registration_app.extensions["labinov_verifier"].verify(token)  # the API's own check
    assert principal.role == "organiser" and principal.email == ORGANISER["email"]
    assert client.get("/registration/admin/sessions", headers=BROWSER).status_code == 200


def test_the_cookie_is_secure_when_the_public_address_is_https(runtime_for, data_env):
    settings = load_settings(
        "registration", env={**data_env, "LABINOV_PUBLIC_URL": "https://labinov.kaltaraprov.go.id"}
    )
    runtime_for("registration")  # migrates the same data folder
    app = create_app(bootstrap(settings))
    with app.extensions["labinov"].unit_of_work() as uow:
        domain.create_account(uow, "organiser", ORGANISER["email"], ORGANISER["password"])
        uow.commit()
    client = app.test_client()
    response = sign_in(client, ORGANISER)
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{AUTH_COOKIE}="))
    assert "Secure" in cookie
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_sign_in_goes_back_to_the_page_asked_for_but_never_to_another_site(registration_app, organiser_account):
    client = registration_app.test_client()
    assert sign_in(client, organiser_account, "/registration/admin/sessions/new").headers["Location"] == (
        "/registration/admin/sessions/new"
    )
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        assert sign_in(client, organiser_account, evil).headers["Location"] == "/registration/admin/sessions"


def test_a_wrong_password_on_the_page_is_refused_and_the_page_is_throttled_like_the_api(
    registration_app, organiser_account
):
    client = registration_app.test_client()
    statuses = [sign_in(client, {**organiser_account, "password": "salah-sekali"}).status_code for _ in range(6)]
    assert statuses[:5] == [401] * 5
    throttled = sign_in(client, organiser_account)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert "Terlalu banyak percobaan masuk" in throttled.get_data(as_text=True)


def test_one_sign_in_is_known_to_the_pages_of_every_service(app_for, organiser_account, registration_app):
    client = registration_app.test_client()
    token = sign_in(client, organiser_account).headers.getlist("Set-Cookie")
    value = next(c for c in token if c.startswith(AUTH_COOKIE)).split(";")[0].split("=", 1)[1]
    for service, path in (("evaluation", "/evaluation/"), ("notification", "/notification/mailbox")):
        other = app_for(service).test_client()
        other.set_cookie(AUTH_COOKIE, value)
        page = other.get(path, headers=BROWSER).get_data(as_text=True)
        assert "Kelola sesi" in page, service  # the organiser's navigation
        assert "Panitia Kaltara" in page and f'action="/{service}/logout"' in page


def test_signing_out_is_a_post_with_csrf_that_clears_the_cookie(registration_app, organiser_account):
    client = registration_app.test_client()
    sign_in(client, organiser_account)
    assert client.post("/registration/logout", headers=BROWSER).status_code == 400  # no CSRF token
    token = csrf_of(client, "/registration/admin/sessions")
    response = client.post("/registration/logout", data={"csrf_token": token}, headers=BROWSER)
    assert response.status_code == 303
    assert any(c.startswith(f"{AUTH_COOKIE}=;") for c in response.headers.getlist("Set-Cookie"))
    assert client.get("/registration/admin/sessions", headers=BROWSER).status_code == 303


def test_a_form_without_its_csrf_token_gets_a_400_page_while_the_json_api_needs_none(registration_app):
    session_id = make_session(registration_app)
    client = registration_app.test_client()
    refused = client.post(f"/registration/sessions/{session_id}", data=form_of(1), headers=BROWSER)
    assert refused.status_code == 400
    assert "text/html" in refused.content_type and "Formulir kedaluwarsa" in refused.get_data(as_text=True)
    api = client.post(f"/registration/api/v1/sessions/{session_id}/registrations", json=participant(2))
    assert api.status_code == 201


# --- the participant's pages ---------------------------------------------------------------------------


def test_the_portal_says_when_a_full_session_keeps_a_waiting_list(registration_app):
    make_session(registration_app, capacity=1)
    closed_list = make_session(registration_app, capacity=1, waitlist=False)
    client = registration_app.test_client()
    runtime = registration_app.extensions["labinov"]
    for session_id in (closed_list,):
        with runtime.unit_of_work() as uow:
            domain.register_participant(uow, session_id, {**participant(9), "language": "id"})
            uow.commit()
    page = client.get("/registration/", headers=BROWSER).get_data(as_text=True)
    assert "1 dari 1 kursi tersisa" in page
    assert "penuh — daftar tunggu ditutup" in page
    english = client.get("/registration/?lang=en", headers=BROWSER).get_data(as_text=True)
    assert "full — waiting list closed" in english


def test_registering_through_the_form_leads_to_the_participants_own_page(registration_app):
    session_id = make_session(registration_app, capacity=1)
    client = registration_app.test_client()
    token = csrf_of(client, f"/registration/sessions/{session_id}")
    first = client.post(
        f"/registration/sessions/{session_id}", data={**form_of(1), "csrf_token": token}, headers=BROWSER
    )
    assert first.status_code == 303 and first.headers["Location"].startswith("/registration/manage/")
    page = client.get(first.headers["Location"], headers=BROWSER).get_data(as_text=True)
    assert "terkonfirmasi" in page and "Peserta 1" in page
    second = client.post(
        f"/registration/sessions/{session_id}", data={**form_of(2), "csrf_token": token}, headers=BROWSER
    )
    page = client.get(second.headers["Location"], headers=BROWSER).get_data(as_text=True)
    assert "Urutan 1 di daftar tunggu" in page


def test_a_malformed_nip_is_shown_beside_its_field_and_everything_typed_is_kept(registration_app):
    session_id = make_session(registration_app)
    client = registration_app.test_client()
    token = csrf_of(client, f"/registration/sessions/{session_id}")
    typed = form_of(3, nip="1985031520100110", phone="bukan nomor")
    response = client.post(f"/registration/sessions/{session_id}", data={**typed, "csrf_token": token}, headers=BROWSER)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert inline_errors(page) == {"nip": "NIP harus tepat 18 angka 0-9.", "phone": "Bukan nomor telepon."}
    for name in ("name", "email", "opd", "job_title", "nip"):
        assert f'value="{typed[name]}"' in page, name


def test_the_form_refuses_in_english_after_the_visitor_chose_english(registration_app):
    session_id = make_session(registration_app)
    client = registration_app.test_client()
    token = csrf_of(client, f"/registration/sessions/{session_id}?lang=en")
    response = client.post(
        f"/registration/sessions/{session_id}", data={**form_of(4, nip="x"), "csrf_token": token}, headers=BROWSER
    )
    assert inline_errors(response.get_data(as_text=True))["nip"] == "NIP must be exactly 18 digits 0-9."


def test_a_registration_made_on_an_english_page_is_stored_in_english(registration_app):
    session_id = make_session(registration_app)
    client = registration_app.test_client()
    token = csrf_of(client, f"/registration/sessions/{session_id}?lang=en")
    response = client.post(
        f"/registration/sessions/{session_id}", data={**form_of(5), "csrf_token": token}, headers=BROWSER
    )
    registration_id = response.headers["Location"].split("/manage/")[1].split("?")[0]
    with registration_app.extensions["labinov"].reading() as uow:
        assert domain.get_registration(uow, registration_id).language == "en"


def test_the_manage_page_opens_only_with_its_own_link_and_cancels_with_csrf(registration_app):
    session_id = make_session(registration_app)
    client = registration_app.test_client()
    token = csrf_of(client, f"/registration/sessions/{session_id}")
    links = [
        client.post(
            f"/registration/sessions/{session_id}", data={**form_of(i), "csrf_token": token}, headers=BROWSER
        ).headers["Location"]
        for i in (6, 7)
    ]
    own_id = links[0].split("/manage/")[1].split("?")[0]
    other_token = links[1].split("token=")[1]
    assert client.get(f"/registration/manage/{own_id}?token={other_token}", headers=BROWSER).status_code == 403
    assert client.get(f"/registration/manage/{own_id}", headers=BROWSER).status_code == 403
    own_token = links[0].split("token=")[1]
    cancelled = client.post(
        f"/registration/manage/{own_id}/cancel", data={"token": own_token, "csrf_token": token}, headers=BROWSER
    )
    assert cancelled.status_code == 303
    page = client.get(cancelled.headers["Location"], headers=BROWSER).get_data(as_text=True)
    assert "dibatalkan" in page and "Batalkan pendaftaran saya" not in page


# --- the organiser's pages -----------------------------------------------------------------------------


def test_an_organiser_creates_a_draft_on_the_page_and_publishes_it(registration_app, organiser_account):
    client = registration_app.test_client()
    sign_in(client, organiser_account)
    token = csrf_of(client, "/registration/admin/sessions/new")
    form = {
        "csrf_token": token,
        "title": "Coaching clinic tahap design",
        "location": "Ruang rapat Bappeda",
        "starts_at": (datetime.now(UTC) + timedelta(days=14)).strftime("%Y-%m-%dT09:00"),
        "ends_at": (datetime.now(UTC) + timedelta(days=14)).strftime("%Y-%m-%dT12:00"),
        "capacity": "30",
        "waitlist": "on",
        "action": "draft",
    }
    created = client.post("/registration/admin/sessions/new", data=form, headers=BROWSER)
    assert created.status_code == 303
    session_id = created.headers["Location"].rsplit("/", 1)[1]
    with registration_app.extensions["labinov"].reading() as uow:
        lab_session = domain.get_session(uow, session_id)
        assert lab_session.state == "draft"
        assert lab_session.starts_at.astimezone(registration_app.extensions["labinov"].settings.timezone).hour == 9
    client.post(f"/registration/admin/sessions/{session_id}/publish", data={"csrf_token": token}, headers=BROWSER)
    with registration_app.extensions["labinov"].reading() as uow:
        assert domain.get_session(uow, session_id).state == "published"
    assert "Coaching clinic tahap design" in client.get("/registration/", headers=BROWSER).get_data(as_text=True)


def test_the_new_session_form_shows_the_apis_refusals_beside_the_fields(registration_app, organiser_account):
    client = registration_app.test_client()
    sign_in(client, organiser_account)
    token = csrf_of(client, "/registration/admin/sessions/new")
    form = {"csrf_token": token, "title": "Sesi", "location": "Aula", "capacity": "0", "action": "publish"}
    response = client.post("/registration/admin/sessions/new", data=form, headers=BROWSER)
    assert response.status_code == 422
    errors = inline_errors(response.get_data(as_text=True))
    assert errors["starts_at"] == "Wajib diisi." and "capacity" in errors
    assert 'value="Sesi"' in response.get_data(as_text=True)


def test_a_draft_session_is_not_public(registration_app):
    session_id = make_session(registration_app, state="draft")
    client = registration_app.test_client()
    assert client.get(f"/registration/sessions/{session_id}", headers=BROWSER).status_code == 404
    assert "Sosialisasi Laboratorium Inovasi" not in client.get("/registration/", headers=BROWSER).get_data(
        as_text=True
    )


def test_an_organiser_sees_a_sessions_registrations(registration_app, organiser_account):
    session_id = make_session(registration_app)
    runtime = registration_app.extensions["labinov"]
    with runtime.unit_of_work() as uow:
        domain.register_participant(uow, session_id, {**participant(8), "language": "id"})
        uow.commit()
    client = registration_app.test_client()
    sign_in(client, organiser_account)
    page = client.get(f"/registration/admin/sessions/{session_id}", headers=BROWSER).get_data(as_text=True)
    assert "Peserta 8" in page and "terkonfirmasi: 1" in page


# --- errors and addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_a_browser_gets_an_html_page_with_a_way_back_for_a_missing_page(app_for, service):
    client = app_for(service).test_client()
    page = client.get(f"/{service}/no-such-page", headers=BROWSER)
    assert page.status_code == 404 and "text/html" in page.content_type
    assert 'href="/registration/"' in page.get_data(as_text=True)
    assert 'lang="id"' in page.get_data(as_text=True)
    api_client = client.get(f"/{service}/no-such-page", headers={"Accept": "application/json"})
    assert api_client.status_code == 404 and api_client.mimetype == "application/problem+json"
    api_path = client.get(f"/{service}/api/v1/no-such-thing", headers=BROWSER)
    assert api_path.mimetype == "application/problem+json"


def test_a_wrong_method_from_a_browser_gets_a_405_page_with_allow(registration_app):
    response = registration_app.test_client().delete("/registration/", headers=BROWSER)
    assert response.status_code == 405 and "text/html" in response.content_type
    assert "GET" in response.headers["Allow"]


@pytest.mark.parametrize("service", ["registration", "evaluation"])
def test_a_service_without_its_trailing_slash_redirects_to_its_pages(app_for, service):
    response = app_for(service).test_client().get(f"/{service}")
    assert response.status_code in (301, 308) and response.headers["Location"].endswith(f"/{service}/")
    through_gateway = create_gateway().test_client().get(f"/{service}")
    assert through_gateway.status_code == 308 and through_gateway.headers["Location"].endswith(f"/{service}/")


def test_the_gateway_still_answers_404_for_a_name_that_is_no_service():
    assert create_gateway().test_client().get("/nothing").status_code == 404


@pytest.mark.parametrize("service", SERVICES)
def test_the_api_docs_page_fits_a_phone_and_links_back_to_the_suite(app_for, service):
    page = app_for(service).test_client().get(f"/{service}/api/v1/docs").get_data(as_text=True)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert 'href="/registration/"' in page


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_serves_the_one_style_sheet(app_for, service):
    response = app_for(service).test_client().get(f"/{service}/static/labinov.css")
    assert response.status_code == 200 and "text/css" in response.content_type


def test_every_page_shows_the_same_navigation_for_the_same_visitor(app_for):
    def nav(service: str, path: str) -> str:
        page = app_for(service).test_client().get(path, headers=BROWSER).get_data(as_text=True)
        return re.search(r'<ul class="nav">(.*?)</ul>', page, re.DOTALL).group(1).replace('aria-current="page"', "")

    navs = {
        nav("registration", "/registration/"),
        nav("evaluation", "/evaluation/"),
        nav("notification", "/notification/unsubscribe/not-a-token"),  # the mailbox is for organisers now
    }
    assert len({re.sub(r"\s+", "", n) for n in navs}) == 1
