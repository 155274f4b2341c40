"""End to end through the real processes (gunicorn web processes and workers, RabbitMQ, PostgreSQL, a real SMTP
server): what a participant finds in the confirmation mail — text and HTML, the ticket's QR code inline, the
session's calendar entry attached, and a manage link that opens their own page — in Indonesian and English;
and the promotion mail of someone who waited, with their own link and ticket."""

from __future__ import annotations

import re
from email.message import EmailMessage

import icalendar
import pytest
import requests

from tests.support.suite import participant
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

TITLE = "Klinik Inovasi Pelayanan Publik"
BROWSER = {"Accept": "text/html"}
#: A ticket code standing alone (not a piece of the link's token, whose letters are [\w.-]).
TICKET_CODE = re.compile(r"(?<![\w.-])[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}(?![\w.-])")


def mail_to(smtp_server, address: str, subject_starts: str) -> EmailMessage:
    found = wait_until(
        lambda: [m for m in smtp_server.to(address) if str(m["Subject"]).startswith(subject_starts)],
        timeout=90,
        what=f"the mail '{subject_starts}…' to {address}",
    )
    assert len(found) == 1, [m["Subject"] for m in found]
    return found[0]


def check_seat_mail(suite, mail: EmailMessage, registration_id: str, language: str) -> str:
    """The parts of a confirmed seat's mail, as a mail program reads them; returns the manage link."""
    assert mail.get_content_type() == "multipart/mixed"
    assert mail["Content-Language"] == language
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    # the manage link: a URL of its own in the text, a button in the HTML, both the same link
    [link] = {word for word in text.split() if "/registration/manage/" in word}
    assert link.startswith(suite.url("registration", f"manage/{registration_id}?token="))
    assert f'<a href="{link}" style="display:inline-block;' in html
    # the ticket: its code in the text, its QR code an inline PNG the HTML shows by its Content-ID
    reader_s_language = re.split(r"\r?\n---\r?\n", text)[0]  # (SMTP's lines end in CRLF)
    [code] = TICKET_CODE.findall(reader_s_language)
    [qr] = [part for part in mail.walk() if part.get_content_type() == "image/png"]
    assert qr.get_content().startswith(b"\x89PNG\r\n\x1a\n")
    assert f'src="cid:{qr["Content-ID"][1:-1]}"' in html and f"{code}</code>" in html
    # the calendar entry: an attachment that names the session, with the link in its description
    [ics] = [part for part in mail.iter_attachments() if part.get_content_type() == "text/calendar"]
    [entry] = icalendar.Calendar.from_ical(ics.get_content()).walk("VEVENT")
    assert str(entry["SUMMARY"]) == TITLE and str(entry["DESCRIPTION"]) == link
    # the link opens the participant's own page, which shows the same ticket
    page = requests.get(link, headers=BROWSER, timeout=10)
    assert page.status_code == 200, page.text[:500]
    assert f'id="ticket-code">{code}<' in page.text
    # and its token is the participant's: the API reads their registration with it, ticket and all
    token = link.split("token=", 1)[1]
    own = requests.get(
        suite.url("registration", f"api/v1/registrations/{registration_id}"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert own.status_code == 200 and own.json()["ticket_code"] == code
    return link


def test_the_confirmation_mail_carries_the_ticket_qr_the_calendar_entry_and_a_working_manage_link(
    rabbitmq, postgres_urls, smtp_server, suite_factory
):
    amqp_url, _vhost = rabbitmq
    suite = suite_factory(broker_url=amqp_url, database_urls=postgres_urls, smtp_url=smtp_server.url)
    # the links in mail start with the public address; here it is the registration web process itself
    suite.env["LABINOV_PUBLIC_URL"] = f"http://127.0.0.1:{suite.service_port('registration')}"
    suite.start(workers=("registration", "notification"))
    session_id = suite.create_session(capacity=2, title=TITLE)

    sari = participant(1, name="Sari Wulandari", email="sari@kaltaraprov.go.id", language="id")
    john = participant(2, name="John Walker", email="john@example.org", language="en")
    answers = {}
    for person in (sari, john):
        response = suite.register(session_id, person)
        assert response.status_code == 201, response.text
        answers[person["email"]] = response.json()

    indonesian = mail_to(smtp_server, "sari@kaltaraprov.go.id", "Pendaftaran dikonfirmasi")
    link = check_seat_mail(suite, indonesian, answers["sari@kaltaraprov.go.id"]["id"], "id")
    assert link == answers["sari@kaltaraprov.go.id"]["manage_url"]  # the same link the registrant was answered with
    assert "Kode tiket (tunjukkan di pintu masuk):" in indonesian.get_body(preferencelist=("plain",)).get_content()

    english = mail_to(smtp_server, "john@example.org", "Registration confirmed")
    link = check_seat_mail(suite, english, answers["john@example.org"]["id"], "en")
    assert link == answers["john@example.org"]["manage_url"]
    assert "Yth." not in english.get_body(preferencelist=("plain",)).get_content()

    # someone waits, is told their place with their link, and gets a seat, a link and a ticket when John cancels
    dewi = participant(3, name="Dewi Lestari", email="dewi@kaltaraprov.go.id", language="id")
    waiting = suite.register(session_id, dewi)
    assert waiting.status_code == 201 and waiting.json()["status"] == "waitlisted"
    waitlisted = mail_to(smtp_server, "dewi@kaltaraprov.go.id", "Daftar tunggu")
    waiting_text = waitlisted.get_body(preferencelist=("plain",)).get_content()
    assert "pada urutan ke-1" in waiting_text and waiting.json()["manage_url"] in waiting_text.split()
    assert not [part for part in waitlisted.walk() if part.get_content_type() == "image/png"]

    john_answer = answers["john@example.org"]
    cancelled = requests.post(
        suite.url("registration", f"api/v1/registrations/{john_answer['id']}/cancel"),
        headers={"Authorization": f"Bearer {john_answer['manage_token']}"},
        timeout=10,
    )
    assert cancelled.status_code == 200, cancelled.text
    promoted = mail_to(smtp_server, "dewi@kaltaraprov.go.id", "Kursi untuk Anda")
    check_seat_mail(suite, promoted, waiting.json()["id"], "id")
    goodbye = mail_to(smtp_server, "john@example.org", "Registration cancelled")
    assert "token=" not in goodbye.get_body(preferencelist=("plain",)).get_content()
