"""The organisers' announcement pages (services/notification/pages.py): write, preview for one recipient,
choose the channels, send, and follow the progress — organisers only."""

from __future__ import annotations

import re

import pytest

from services.notification import announcements
from services.notification.handlers import HANDLERS
from shared.events import make_event, parse_event
from shared.pages import AUTH_COOKIE

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
NEW = "/notification/announcements/new"


@pytest.fixture
def notification_app(app_for, registration_data):
    app = app_for("notification")
    runtime = app.extensions["labinov"]
    for i in range(1, 3):  # two registrants of one session in the projection, as their events told it
        data = registration_data(
            registration_id=f"r-{i}",
            session_id="s-1",
            name=f"Peserta {i}",
            email=f"peserta{i}@kaltaraprov.go.id",
            nip=f"19850315201001200{i}",
        )
        event = parse_event(make_event("registration.confirmed", data, source="/registration", correlation_id=f"req-{i}"))
        with runtime.unit_of_work() as uow:
            HANDLERS["registration.confirmed"](uow, event)
            uow.commit()
    return app


def client_as(app, mint_token, role: str):
    client = app.test_client()
    client.set_cookie(AUTH_COOKIE, mint_token(app.extensions["labinov"].settings, role))
    return client


def form(client, **fields) -> dict:
    page = client.get(NEW, headers=BROWSER).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return {
        "csrf_token": token,
        "subject": "Pengingat {session_title}",
        "body": "Yth. {name}, sampai jumpa.",
        "audience_kind": "session_id",
        "audience_value": "s-1",
        "statuses": ["confirmed"],
        **fields,
    }


def created(app) -> list:
    with app.extensions["labinov"].reading() as uow:
        return announcements.list_recent(uow)


def test_the_form_offers_every_channel_with_e_mail_chosen_first(notification_app, mint_token):
    page = client_as(notification_app, mint_token, "organiser").get(NEW, headers=BROWSER).get_data(as_text=True)
    boxes = dict(re.findall(r'<input type="checkbox" name="channels" value="(\w+)" ?(checked)?', page))
    assert boxes == {"email": "checked", "sms": "", "whatsapp": ""}


def test_a_preview_shows_one_recipients_message_and_sends_nothing(notification_app, mint_token):
    client = client_as(notification_app, mint_token, "organiser")
    page = client.post(NEW, data=form(client, action="preview", channels=["email"]), headers=BROWSER)
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Yth. Peserta 1, sampai jumpa." in text
    assert created(notification_app) == []


def test_an_announcement_by_e_mail_and_sms_is_sent_with_both_channels_and_its_page_says_so(
    notification_app, mint_token
):
    client = client_as(notification_app, mint_token, "organiser")
    answer = client.post(NEW, data=form(client, action="send", channels=["email", "sms"]), headers=BROWSER)
    assert answer.status_code == 303
    [announcement] = created(notification_app)
    assert answer.headers["Location"].endswith(f"/notification/announcements/{announcement.id}")
    assert announcement.channels == '["email", "sms"]'
    detail = client.get(answer.headers["Location"], headers=BROWSER).get_data(as_text=True)
    assert "email, sms" in detail


def test_no_channel_chosen_is_refused_beside_the_form_and_nothing_is_sent(notification_app, mint_token):
    client = client_as(notification_app, mint_token, "organiser")
    page = client.post(NEW, data=form(client, action="send"), headers=BROWSER).get_data(as_text=True)
    assert 'role="alert"' in page and "channels" in page
    assert 'value="Pengingat {session_title}"' in page, "what was typed is kept"
    assert created(notification_app) == []


@pytest.mark.parametrize("role", ["participant", "evaluator"])
def test_only_organisers_may_write_an_announcement(notification_app, mint_token, role):
    client = client_as(notification_app, mint_token, role)
    assert client.get(NEW, headers=BROWSER).status_code == 403
    assert client.post(NEW, data={"action": "send"}, headers=BROWSER).status_code in (400, 403)
    assert created(notification_app) == []
