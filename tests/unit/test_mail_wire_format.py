"""The mail sender writes a mail with a policy that skips refolding headers that need none
(services.notification.mail.wire_form): the bytes on the wire must be exactly the standard policy's."""

from __future__ import annotations

import io
import re
from email import message_from_bytes, policy
from email.generator import BytesGenerator
from email.message import EmailMessage
from types import SimpleNamespace

import pytest

from services.notification.mail import wire_form
from services.notification.messages import Unsubscribe, compose

ICS = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nSUMMARY:Klinik Inovasi\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
LONG_LINK = "https://labinov.kaltaraprov.go.id/notification/unsubscribe/" + "a1B2c3D4e5" * 9


def _row(**changes) -> SimpleNamespace:
    row = {
        "id": "3f2b8c1e-6a4d-4e8b-9c7a-1d2e3f4a5b6c",
        "recipient": "peserta7@kaltaraprov.go.id",
        "subject": "Pendaftaran Anda dikonfirmasi: Sosialisasi Laboratorium Inovasi",
        "correlation_id": "req-7f3a",
        "body": "Yth. Peserta 7,\n\npendaftaran Anda dikonfirmasi.\n\n-- \nLabinov\n",
        "html_body": "<html><body><p>Yth. Peserta 7,</p><p>pendaftaran Anda dikonfirmasi.</p></body></html>",
        "ics": None,
        "ticket_code": None,
        "language": "id",
    }
    return SimpleNamespace(**{**row, **changes})


MAILS = {
    "a confirmation": (_row(), None),
    "with its calendar entry and ticket QR": (_row(ics=ICS, ticket_code="TKT-7F3A-0001"), None),
    "an announcement with a short opt-out link": (_row(subject="Pengingat"), Unsubscribe("https://l.id/u/x1")),
    "a name and subject outside ASCII": (_row(subject="Undangan — Pameran Inovasi Daerah ✓"), None),
    "a subject longer than a line": (_row(subject="Pengingat " + "Sosialisasi Laboratorium Inovasi " * 5), None),
    "a subject that looks like an encoded word": (_row(subject="=?utf-8?q?Bukan_kode?= sungguhan"), None),
    "no HTML part and no correlation id": (_row(html_body=None, correlation_id=None, language=None), None),
    "an address with a display name": (_row(recipient='"Peserta, Tujuh" <peserta7@kaltaraprov.go.id>'), None),
}
SENDER = "Labinov Kaltara <noreply@kaltaraprov.go.id>"


def _on_the_wire(message: EmailMessage) -> bytes:
    """As smtplib's ``send_message`` writes it (the message's policy, CRLF)."""
    out = io.BytesIO()
    BytesGenerator(out).flatten(message, linesep="\r\n")
    return out.getvalue()


@pytest.mark.parametrize("name", MAILS)
def test_the_wire_form_of_a_composed_mail_is_byte_for_byte_the_standard_one(name):
    row, unsubscribe = MAILS[name]
    message = compose(row, SENDER, unsubscribe)

    standard = _on_the_wire(message)  # first: it fixes the MIME boundaries, which the wire form then shares
    assert _on_the_wire(wire_form(message)) == standard


def test_a_long_opt_out_link_stays_one_unencoded_line_where_the_standard_policy_made_encoded_words_of_it():
    message = compose(_row(subject="Pengingat Klinik"), SENDER, Unsubscribe(LONG_LINK))

    standard, wire = _on_the_wire(message), _on_the_wire(wire_form(message))

    assert b"List-Unsubscribe: =?utf-8?q?" in standard  # what a mail program cannot use as a link
    assert f"\r\nList-Unsubscribe: <{LONG_LINK}>\r\n".encode() in wire
    header = (
        b"List-Unsubscribe: " + next(h for h in standard.split(b"\r\nList-Unsubscribe: ")[1:]).split(b"\r\nList-")[0]
    )
    assert wire.replace(f"List-Unsubscribe: <{LONG_LINK}>".encode(), header) == standard  # nothing else differs
    assert message_from_bytes(wire, policy=policy.default)["List-Unsubscribe"] == f"<{LONG_LINK}>"


def test_a_mail_written_before_its_boundaries_are_made_gets_short_ones_and_reads_back_the_same():
    message = compose(_row(ics=ICS, ticket_code="TKT-7F3A-0001"), SENDER)

    wire = _on_the_wire(wire_form(message))

    read = message_from_bytes(wire, policy=policy.default)
    boundaries = [part.get_boundary() for part in read.walk() if part.is_multipart()]
    assert len(boundaries) == 3 and len(set(boundaries)) == 3  # mixed > alternative > related
    assert all(re.fullmatch(r"=_[0-9a-f]{24}", boundary) for boundary in boundaries)
    assert max(len(line) for line in wire.split(b"\r\n")) <= 78
    text = read.get_body(("plain",)).get_content().replace("\r\n", "\n")  # read back from the wire's CRLF
    assert text == message.get_body(("plain",)).get_content()
    assert [part.get_content_type() for part in read.walk()] == [part.get_content_type() for part in message.walk()]


def test_headers_that_need_folding_or_encoding_still_get_it():
    message = compose(_row(subject="Undangan — Pameran ✓ " + "panjang " * 12), "noreply@kaltaraprov.go.id")

    wire = _on_the_wire(wire_form(message))

    subject = wire.split(b"\r\nSubject: ", 1)[1].split(b"\r\nDate:", 1)[0]
    assert b"=?utf-8?" in subject and b"\r\n " in subject  # encoded, and folded over lines
    assert max(len(line) for line in wire.split(b"\r\n")) <= 78


def test_a_message_of_another_policy_is_written_as_it_is():
    message = EmailMessage(policy=policy.compat32)
    message["Subject"] = "Uji"

    assert wire_form(message) is message
