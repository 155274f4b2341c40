"""The registration events carry what the participant's mail needs: the manage link (with the very token the
registrant was answered with) and, for a seat, the ticket code — for a confirmation, a place on the waiting
list, a promotion, a move, a registration from the page and from an import; a cancellation carries neither.

Through the real app (its own ``create_app``) on SQLite; the events are read back from the outbox as the relay
would publish them, and the links in them are opened on the registration pages.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from services.registration import domain, rules
from services.registration.worker import import_loop
from shared.events import parse_event
from shared.tokens import _PRIVATE_KEY_FILE as SIGNING_KEY_FILE
from tests.support.registration_api import API, RegistrationApi, bearer
from tests.support.suite import participant

BROWSER = {"Accept": "text/html"}
HEADER = "nama;nip;email;ponsel;opd;jabatan\n"


@pytest.fixture
def office(runtime_for):
    return RegistrationApi(runtime_for("registration"))


def links_of(office: RegistrationApi) -> domain.ParticipantLinks:
    return office.client.application.extensions["labinov_participant_links"]


def event_data(office: RegistrationApi, event_type: str) -> list[dict]:
    """The ``data`` of each ``event_type`` event in the outbox, validated by the catalogue, oldest first."""
    return [parse_event(envelope).data for envelope in office.events(event_type)]


def of(events: list[dict], registration_id: str) -> dict:
    [data] = [data for data in events if data["registration_id"] == registration_id]
    return data


def token_in(url: str) -> str:
    [token] = parse_qs(urlsplit(url).query)["token"]
    return token


def open_link(office: RegistrationApi, url: str):
    """Open a link from a mail on the registration pages: the public address's path and query."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == office.runtime.settings.public_url
    return office.client.get(f"{parts.path}?{parts.query}", headers=BROWSER)


def shows_ticket(page_html: str, code: str) -> bool:
    return f'id="ticket-code">{code}<' in page_html and 'class="qr"' in page_html


def assert_ticket_is_the_registration_s(office: RegistrationApi, code: str, registration_id: str) -> None:
    typed = rules.read_ticket_code(code)
    assert typed is not None and rules.ticket_belongs_to(links_of(office).ticket_key, typed, registration_id)


def cancel_as_participant(office: RegistrationApi, answer: dict):
    return office.client.post(f"{API}/registrations/{answer['id']}/cancel", headers=bearer(answer["manage_token"]))


def test_a_confirmation_carries_the_link_and_token_the_registrant_was_answered_with_and_a_true_ticket(office):
    session_id = office.new_session(5, "Sosialisasi Laboratorium Inovasi")["id"]

    answer = office.post_registration(session_id, 1).get_json()

    data = of(event_data(office, "registration.confirmed"), answer["id"])
    assert data["manage_url"] == answer["manage_url"]
    assert token_in(data["manage_url"]) == answer["manage_token"]
    public_url = office.runtime.settings.public_url
    assert data["manage_url"] == f"{public_url}/registration/manage/{answer['id']}?token={answer['manage_token']}"
    assert_ticket_is_the_registration_s(office, data["ticket_code"], answer["id"])
    page = open_link(office, data["manage_url"])
    assert page.status_code == 200
    assert shows_ticket(page.get_data(as_text=True), data["ticket_code"])
    reading = office.client.get(f"{API}/registrations/{answer['id']}", headers=bearer(token_in(data["manage_url"])))
    assert reading.status_code == 200 and reading.get_json()["ticket_code"] == data["ticket_code"]


def test_the_201_answer_keeps_its_fields(office):
    session_id = office.new_session(5, "Sosialisasi")["id"]

    answer = office.post_registration(session_id, 1).get_json()

    assert {"id", "session_id", "status", "manage_token", "manage_url"} <= set(answer)
    assert answer["status"] == "confirmed" and answer["manage_url"].endswith(answer["manage_token"])


def test_a_place_on_the_waiting_list_carries_the_link_and_no_ticket(office):
    session_id = office.new_session(1, "Klinik Inovasi")["id"]
    office.post_registration(session_id, 1)

    answer = office.post_registration(session_id, 2).get_json()

    data = of(event_data(office, "registration.waitlisted"), answer["id"])
    assert data["waitlist_position"] == 1
    assert data["manage_url"] == answer["manage_url"] and data["ticket_code"] is None
    page = open_link(office, data["manage_url"])
    assert page.status_code == 200 and 'id="ticket-code"' not in page.get_data(as_text=True)


def test_a_cancellation_carries_neither_and_the_promoted_registrant_gets_a_link_and_a_ticket(office):
    session_id = office.new_session(1, "Klinik Inovasi")["id"]
    seated = office.post_registration(session_id, 1).get_json()
    waiting = office.post_registration(session_id, 2).get_json()

    assert cancel_as_participant(office, seated).status_code == 200

    cancelled = of(event_data(office, "registration.cancelled"), seated["id"])
    assert cancelled["manage_url"] is None and cancelled["ticket_code"] is None
    promoted = of(event_data(office, "registration.promoted"), waiting["id"])
    assert promoted["status"] == "confirmed"
    assert_ticket_is_the_registration_s(office, promoted["ticket_code"], waiting["id"])
    page = open_link(office, promoted["manage_url"])
    assert page.status_code == 200 and shows_ticket(page.get_data(as_text=True), promoted["ticket_code"])
    # the cancelled registration's link reads only that it is cancelled, and shows no ticket
    refused = office.client.get(f"{API}/registrations/{seated['id']}", headers=bearer(seated["manage_token"]))
    assert refused.get_json()["status"] == "cancelled" and "ticket_code" not in refused.get_json()


def test_more_seats_promote_with_links_and_tickets(office):
    session_id = office.new_session(1, "Klinik Inovasi")["id"]
    office.post_registration(session_id, 1)
    waiting = [office.post_registration(session_id, i).get_json() for i in (2, 3)]

    changed = office.client.patch(f"{API}/sessions/{session_id}", json={"capacity": 3}, headers=office.organiser)

    assert changed.status_code == 200, changed.get_json()
    promoted = event_data(office, "registration.promoted")
    for answer in waiting:
        data = of(promoted, answer["id"])
        assert_ticket_is_the_registration_s(office, data["ticket_code"], answer["id"])
        assert open_link(office, data["manage_url"]).status_code == 200


def test_a_moved_registration_s_new_event_carries_a_link_and_its_ticket(office):
    first = office.new_session(5, "Sosialisasi")["id"]
    second = office.new_session(5, "Klinik Inovasi")["id"]
    answer = office.post_registration(first, 1).get_json()

    moved = office.client.post(
        f"{API}/registrations/{answer['id']}/move", json={"session_id": second}, headers=office.organiser
    )

    assert moved.status_code == 200, moved.get_json()
    data = event_data(office, "registration.confirmed")[-1]
    assert data["registration_id"] == answer["id"] and data["session_id"] == second
    assert_ticket_is_the_registration_s(office, data["ticket_code"], answer["id"])
    page = open_link(office, data["manage_url"])
    assert page.status_code == 200 and "Klinik Inovasi" in page.get_data(as_text=True)


def test_registering_on_the_page_redirects_with_the_token_its_event_carries(office):
    session_id = office.new_session(5, "Sosialisasi")["id"]
    form_page = office.client.get(f"/registration/sessions/{session_id}", headers=BROWSER).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form_page).group(1)

    response = office.client.post(
        f"/registration/sessions/{session_id}",
        data={**participant(1), "job_title": "Analis Kebijakan", "csrf_token": csrf},
        headers=BROWSER,
    )

    assert response.status_code == 303
    [data] = event_data(office, "registration.confirmed")
    assert response.headers["Location"].endswith(
        urlsplit(data["manage_url"]).path + "?token=" + token_in(data["manage_url"])
    )


def row(i: int) -> str:
    person = participant(i)
    return ";".join([person["name"], person["nip"], person["email"], person["phone"], person["opd"], "Analis"]) + "\n"


def upload(office: RegistrationApi, session_id: str, rows: range) -> dict:
    sheet = HEADER + "".join(row(i) for i in rows)
    response = office.client.post(
        f"{API}/sessions/{session_id}/imports",
        data=sheet.encode(),
        headers={**office.organiser, "Content-Type": "text/csv"},
    )
    assert response.status_code in (201, 202), response.get_json()
    return response.get_json()


def test_a_small_import_s_registrations_carry_links_and_tickets(office):
    session_id = office.new_session(10, "Sosialisasi")["id"]

    upload(office, session_id, range(1, 4))

    events = event_data(office, "registration.confirmed")
    assert len(events) == 3
    for data in events:
        assert_ticket_is_the_registration_s(office, data["ticket_code"], data["registration_id"])
        assert open_link(office, data["manage_url"]).status_code == 200


class _OneTurn:
    """A stop signal that lets the worker's import loop take exactly one turn."""

    def __init__(self) -> None:
        self._asked = 0

    def is_set(self) -> bool:
        self._asked += 1
        return self._asked > 1

    def wait(self, _timeout: float | None = None) -> bool:
        return True


def test_the_worker_s_import_loop_registers_with_the_service_s_links(office):
    session_id = office.new_session(100, "Sosialisasi")["id"]
    job = upload(office, session_id, range(1, domain.INLINE_IMPORT_LINES + 2))  # too large for the request
    assert event_data(office, "registration.confirmed") == [] and job["done"] == 0

    import_loop(office.runtime, _OneTurn())  # type: ignore[arg-type]

    events = event_data(office, "registration.confirmed")
    assert len(events) == domain.IMPORT_BATCH
    for data in events:
        assert_ticket_is_the_registration_s(office, data["ticket_code"], data["registration_id"])
        assert open_link(office, data["manage_url"]).status_code == 200


def test_without_links_an_operation_publishes_its_events_without_them(office):
    """Tools and tests that need no mail call the operations without links: version 1's optional fields."""
    session_id = office.new_session(5, "Sosialisasi")["id"]
    with office.runtime.unit_of_work() as uow:
        registration = domain.register_participant(uow, session_id, participant(1))
        uow.commit()

    data = of(event_data(office, "registration.confirmed"), registration.id)
    assert data["manage_url"] is None and data["ticket_code"] is None
    assert registration.manage_token is None and registration.manage_url is None


def test_the_service_s_links_are_made_once_and_sign_with_the_app_s_issuer(office):
    app = office.client.application
    links = links_of(office)
    assert app.extensions["labinov_issuer"] is links.issuer
    assert links.public_url == office.runtime.settings.public_url
    assert links.ticket_key == domain.ticket_key(office.runtime.settings)
    with pytest.raises(AttributeError):
        links.public_url = "https://elsewhere.example"  # type: ignore[misc]


def test_a_worker_without_the_service_s_signing_key_never_makes_one_of_its_own(office, caplog):
    """A link signed with a key the web process does not know would be refused: no link rather than a dead one."""
    session_id = office.new_session(100, "Sosialisasi")["id"]
    upload(office, session_id, range(1, domain.INLINE_IMPORT_LINES + 2))
    key_file = office.runtime.settings.keys_dir / SIGNING_KEY_FILE
    key_file.unlink()  # as in a worker container that was given no LABINOV_JWT_PRIVATE_KEY

    import_loop(office.runtime, _OneTurn())  # type: ignore[arg-type]

    assert not key_file.exists()
    events = event_data(office, "registration.confirmed")
    assert len(events) == domain.IMPORT_BATCH
    assert all(data["manage_url"] is None and data["ticket_code"] is None for data in events)
    assert "no signing key" in caplog.text
