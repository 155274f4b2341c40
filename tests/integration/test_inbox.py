"""The in-app inbox on PostgreSQL and SQLite: a participant reads, with their own token, what was told to their
registration — its events, its session's changes and the announcements it heard — newest first and paged; a
stranger who registered with the same address sees none of it; a cancelled registration's token and an
organiser's are refused; marking read; the page behind the manage link."""

from __future__ import annotations

import pytest

from services.notification import announcements
from services.notification.handlers import HANDLERS
from shared.auth import Principal, TokenIssuer, load_private_key_pem
from shared.config import load_settings
from shared.events import make_event, parse_event
from shared.migrations import upgrade

API = "/notification/api/v1"
EMAIL = "sari@kaltaraprov.go.id"


@pytest.fixture
def runtime(tmp_path, database_url):
    from services.notification.bootstrap import bootstrap

    env = {"LABINOV_DATA_DIR": str(tmp_path)}
    if database_url:
        env["LABINOV_NOTIFICATION_DATABASE_URL"] = database_url
    made = bootstrap(load_settings("notification", env))
    upgrade(made)
    return made


@pytest.fixture
def client(runtime):
    from services.notification.app import create_app

    load_private_key_pem(runtime.settings)
    return create_app(runtime).test_client()


def token_for(runtime, subject: str, role: str = "participant") -> dict:
    issuer = TokenIssuer(load_private_key_pem(runtime.settings), 3600)
    return {"Authorization": f"Bearer {issuer.issue(Principal(subject, EMAIL, role, 'Sari'))}"}


def handle(runtime, event_type: str, data: dict):
    event = parse_event(make_event(event_type, data, source="/registration", correlation_id="req-1"))
    with runtime.unit_of_work() as uow:
        HANDLERS[event_type](uow, event)
        uow.commit()
    return event


def registration(registration_id: str, status: str = "confirmed", session: str = "s-1", **more) -> dict:
    return {
        "registration_id": registration_id,
        "session_id": session,
        "programme_id": "prog-1",
        "session_title": f"Klinik {session}",
        "session_starts_at": "2027-03-01T01:00:00+00:00",
        "session_location": "Aula",
        "status": status,
        "name": "Sari Wulandari",
        "nip": "198503152010012001",
        "email": EMAIL,
        "phone": "+6281234567890",
        "opd": "Dinas Kesehatan",
        **more,
    }


def inbox(client, headers, **query) -> list[dict]:
    response = client.get(f"{API}/inbox", query_string=query, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_participant_reads_what_was_told_to_their_registration_newest_first_and_paged(runtime, client):
    handle(runtime, "registration.waitlisted", registration("r-1", "waitlisted", waitlist_position=3))
    handle(runtime, "registration.promoted", registration("r-1"))
    data = {"subject": "Info {session_title}", "body": "Yth. {name}, bawa laptop.", "channels": ["email"]}
    with runtime.unit_of_work() as uow:
        announcements.create(uow, {**data, "audience": {"session_id": "s-1"}, "send_at": None}, "panitia", "req-a")
        uow.commit()
    announcements.expand_due(runtime)

    messages = inbox(client, token_for(runtime, "r-1"))
    assert [m["template"] for m in messages] == ["announcement", "registration_promoted", "registration_waitlisted"]
    assert messages[0]["subject"] == "Info Klinik s-1" and messages[0]["body"] == "Yth. Sari Wulandari, bawa laptop."
    assert all(m["read_at"] is None for m in messages)
    assert [m["id"] for m in inbox(client, token_for(runtime, "r-1"), limit=2, offset=1)] == [
        m["id"] for m in messages[1:]
    ]


def test_a_stranger_who_registered_with_the_same_address_sees_none_of_the_owner_s_messages(runtime, client):
    handle(runtime, "registration.confirmed", registration("r-owner", manage_url="https://x/manage/r-owner?token=t"))
    handle(runtime, "registration.confirmed", registration("r-stranger", session="s-2"))
    strangers = inbox(client, token_for(runtime, "r-stranger"))
    assert len(strangers) == 1 and "r-owner" not in strangers[0]["body"]
    assert inbox(client, token_for(runtime, "r-never-heard-of")) == []


def test_a_session_change_reaches_the_inbox_of_each_registrant_of_that_session(runtime, client):
    handle(runtime, "registration.confirmed", registration("r-1"))
    session = {
        "session_id": "s-1",
        "programme_id": "prog-1",
        "title": "Klinik s-1",
        "starts_at": "2027-03-01T01:00:00+00:00",
        "ends_at": "2027-03-01T03:00:00+00:00",
        "location": "Aula Baru",
        "capacity": 30,
        "state": "published",
        "changes": {"location": {"old": "Aula", "new": "Aula Baru"}},
    }
    event = parse_event(make_event("session.changed", session, source="/registration", correlation_id="req-2"))
    for _ in range(2):  # handled twice: one copy
        with runtime.unit_of_work() as uow:
            HANDLERS["session.changed"](uow, event)
            uow.commit()
    assert [m["template"] for m in inbox(client, token_for(runtime, "r-1"))] == [
        "session_changed",
        "registration_confirmed",
    ]


def test_a_cancelled_registration_s_token_and_an_organiser_s_are_refused_with_403(runtime, client):
    handle(runtime, "registration.confirmed", registration("r-1"))
    assert client.get(f"{API}/inbox", headers=token_for(runtime, "organiser-1", "organiser")).status_code == 403
    handle(runtime, "registration.cancelled", registration("r-1", "cancelled"))
    refused = client.get(f"{API}/inbox", headers=token_for(runtime, "r-1"))
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    assert (
        client.get(
            "/notification/inbox", query_string={"token": token_for(runtime, "r-1")["Authorization"][7:]}
        ).status_code
        == 403
    )


def test_a_participant_marks_their_own_message_read_and_not_another_s(runtime, client):
    handle(runtime, "registration.confirmed", registration("r-1"))
    handle(runtime, "registration.confirmed", registration("r-2", session="s-2"))
    [mine] = inbox(client, token_for(runtime, "r-1"))
    [theirs] = inbox(client, token_for(runtime, "r-2"))
    read = client.post(f"{API}/inbox/{mine['id']}/read", headers=token_for(runtime, "r-1"))
    assert read.status_code == 200 and read.get_json()["read_at"]
    assert client.post(f"{API}/inbox/{theirs['id']}/read", headers=token_for(runtime, "r-1")).status_code == 404
    assert inbox(client, token_for(runtime, "r-2"))[0]["read_at"] is None


def test_the_inbox_page_opens_with_the_participant_s_token_and_marks_read_with_a_form(runtime, client):
    handle(runtime, "registration.confirmed", registration("r-1"))
    token = token_for(runtime, "r-1")["Authorization"][7:]
    page = client.get("/notification/inbox", query_string={"token": token}, headers={"Accept": "text/html"})
    assert page.status_code == 200 and "Klinik s-1" in page.get_data(as_text=True)
    assert client.get("/notification/inbox", query_string={"token": "not-a-token"}).status_code == 403
    assert client.get("/notification/inbox").status_code == 403
    organiser = token_for(runtime, "organiser-1", "organiser")["Authorization"][7:]
    assert client.get("/notification/inbox", query_string={"token": organiser}).status_code == 403
