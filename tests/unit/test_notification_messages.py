"""Every message kind, in both languages, as the recipient's mail program reads it: parsed back with the
``email`` package — parts, headers, the inline QR code, the calendar entry."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest
from icalendar import Calendar
from sqlalchemy import select

from services.notification import domain
from services.notification.handlers import HANDLERS
from services.notification.messages import compose, plain_text_of
from services.notification.tables import Delivery
from shared.events import make_event, parse_event

SESSION = "7d1c1a8e-0000-4000-8000-0000000000aa"


@pytest.fixture
def runtime(runtime_for):
    return runtime_for("notification")


def handle(runtime, event_type: str, data: dict, source: str = "/registration"):
    event = parse_event(make_event(event_type, data, source=source, correlation_id="req-mail"))
    with runtime.unit_of_work() as uow:
        HANDLERS[event_type](uow, event)
        uow.commit()
    with runtime.reading() as uow:
        return list(uow.session.scalars(select(Delivery).where(Delivery.caused_by == event.id)))


def as_received(delivery: Delivery):
    """The delivery as the recipient's mail program sees it: composed, sent as bytes, parsed back."""
    raw = compose(delivery, "Labinov <noreply@labinov.local>").as_bytes()
    return message_from_bytes(raw, policy=policy.default)


def confirmed(registration_data, **overrides) -> dict:
    fields = {
        "name": "Ni Luh Putu Ayu Sekarwangi Dé",
        "manage_url": "https://labinov.example/registration/r/7d1c?token=abc",
        "ticket_code": "ABCD-EFGH-JKLM-NPQR",
        "session_ends_at": datetime(2026, 12, 7, 4, 0, tzinfo=UTC),
    }
    return registration_data(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("language", "subject", "says"),
    [
        ("id", "Pendaftaran dikonfirmasi", "telah DIKONFIRMASI"),
        ("en", "Registration confirmed", "is CONFIRMED"),
    ],
)
def test_a_confirmation_has_text_and_html_the_ticket_qr_inline_and_the_calendar_entry(
    runtime, registration_data, language, subject, says
):
    [delivery] = handle(runtime, "registration.confirmed", confirmed(registration_data, language=language))

    mail = as_received(delivery)

    assert mail["Subject"].startswith(subject)
    assert mail["Message-ID"] == f"<{delivery.id}@labinov.local>"
    assert mail["Content-Language"] == language
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert says in text and "Ni Luh Putu Ayu Sekarwangi Dé" in text
    assert "https://labinov.example/registration/r/7d1c?token=abc" in text
    assert 'href="https://labinov.example/registration/r/7d1c?token=abc"' in html
    [qr] = [part for part in mail.walk() if part.get_content_type() == "image/png"]
    assert qr.get_content().startswith(b"\x89PNG")
    assert f'src="cid:{qr["Content-ID"][1:-1]}"' in html
    [ics] = [part for part in mail.iter_attachments() if part.get_content_type() == "text/calendar"]
    assert ics.get_filename() == "labinov.ics"
    [entry] = Calendar.from_ical(ics.get_content()).walk("VEVENT")
    assert str(entry["UID"]) == f"{SESSION}@labinov"
    assert entry.decoded("DTSTART") == datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    assert entry.decoded("DTEND") == datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    assert str(entry["LOCATION"]) == "Kantor Gubernur Kaltara, Tanjung Selor"


MANAGE = "https://labinov.example/registration/manage/7d1c?token=eyJ.abc-_&x"


def button_to(html: str, url: str) -> bool:
    """Whether the HTML has the manage link as a button: an ``<a>`` to ``url`` styled as one."""
    escaped = url.replace("&", "&amp;")
    return re.search(rf'<a href="{re.escape(escaped)}" style="display:inline-block;background:', html) is not None


@pytest.mark.parametrize(
    ("event_type", "language", "says", "ticket_says"),
    [
        ("registration.confirmed", "id", "telah DIKONFIRMASI", "Kode tiket (tunjukkan di pintu masuk): "),
        ("registration.confirmed", "en", "is CONFIRMED", "Ticket code (show it at the door): "),
        ("registration.promoted", "id", "naik dari daftar tunggu", "Kode tiket (tunjukkan di pintu masuk): "),
        ("registration.promoted", "en", "moved up from the waiting list", "Ticket code (show it at the door): "),
    ],
)
def test_a_seat_s_mail_shows_the_link_as_a_button_and_a_url_the_ticket_inline_and_attaches_the_calendar_entry(
    runtime, registration_data, event_type, language, says, ticket_says
):
    data = confirmed(registration_data, language=language, manage_url=MANAGE)
    [delivery] = handle(runtime, event_type, data)

    assert delivery.ticket_code == "ABCD-EFGH-JKLM-NPQR" and delivery.ics
    mail = as_received(delivery)
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert says in text and ticket_says + "ABCD-EFGH-JKLM-NPQR" in text
    assert MANAGE in text.split()  # the whole link, on a line of its own words, as a reader copies it
    assert button_to(html, MANAGE)
    assert "ABCD-EFGH-JKLM-NPQR</code>" in html
    [qr] = [part for part in mail.walk() if part.get_content_type() == "image/png"]
    assert qr.get_content().startswith(b"\x89PNG") and qr["Content-Disposition"].startswith("inline")
    assert f'src="cid:{qr["Content-ID"][1:-1]}"' in html
    [ics] = [part for part in mail.iter_attachments() if part.get_content_type() == "text/calendar"]
    [entry] = Calendar.from_ical(ics.get_content()).walk("VEVENT")
    assert str(entry["SUMMARY"]) == data["session_title"]
    assert str(entry["DESCRIPTION"]) == MANAGE


@pytest.mark.parametrize(("language", "says"), [("id", "pada urutan ke-2"), ("en", "at number 2")])
def test_a_waiting_list_mail_shows_the_place_and_the_link_and_no_ticket(runtime, registration_data, language, says):
    data = registration_data(status="waitlisted", waitlist_position=2, language=language, manage_url=MANAGE)
    [delivery] = handle(runtime, "registration.waitlisted", data)

    mail = as_received(delivery)
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert says in text and MANAGE in text.split()
    assert button_to(html, MANAGE)
    assert delivery.ticket_code is None and "cid:" not in html
    assert [part.get_content_type() for part in mail.iter_parts()] == ["text/plain", "text/html"]


def test_a_cancellation_mail_has_no_link_even_if_an_event_brought_one(runtime, registration_data):
    data = registration_data(status="cancelled", manage_url=MANAGE, ticket_code="ABCD-EFGH-JKLM-NPQR")
    [delivery] = handle(runtime, "registration.cancelled", data)

    assert "token=" not in delivery.body and "token=" not in delivery.html_body
    assert delivery.ticket_code is None and delivery.ics is None


def test_an_english_reader_gets_english_only_and_an_indonesian_one_a_short_english_summary(runtime, registration_data):
    [english] = handle(runtime, "registration.confirmed", registration_data(language="en"))
    [indonesian] = handle(
        runtime, "registration.confirmed", registration_data(language="id", registration_id="r-2", email="b@x.id")
    )

    assert "Yth." not in english.body and "Dear Sari Wulandari" in english.body
    assert indonesian.body.index("Yth.") < indonesian.body.index("Dear Sari Wulandari")


def test_a_confirmation_without_ticket_or_end_time_is_plain_text_and_html_only(runtime, registration_data):
    [delivery] = handle(runtime, "registration.confirmed", registration_data())

    mail = as_received(delivery)

    assert mail.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in mail.iter_parts()] == ["text/plain", "text/html"]


def test_names_are_escaped_in_the_html_part_and_encoded_in_the_headers(runtime, registration_data):
    data = registration_data(name="Dédé <script>alert(1)</script>", session_title="Klinik Inovasi — Désain")
    [delivery] = handle(runtime, "registration.confirmed", data)

    raw = compose(delivery, "Panitia Désa <noreply@labinov.local>").as_bytes()
    mail = message_from_bytes(raw, policy=policy.default)

    assert raw.isascii()  # every header and part is encoded, nothing 8-bit on the wire
    assert mail["Subject"].endswith("Klinik Inovasi — Désain")
    assert mail["From"].addresses[0].display_name == "Panitia Désa"
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert "<script>" not in html and "Dédé &lt;script&gt;" in html
    assert "Dédé <script>alert(1)</script>" in plain_text_of(mail)


@pytest.mark.parametrize(
    ("language", "says"), [("id", "DAFTAR TUNGGU pada urutan ke-4"), ("en", "WAITING LIST at number 4")]
)
def test_a_waitlisted_participant_is_told_the_place(runtime, registration_data, language, says):
    data = registration_data(status="waitlisted", waitlist_position=4, language=language)
    [delivery] = handle(runtime, "registration.waitlisted", data)

    assert says in as_received(delivery).get_body(preferencelist=("plain",)).get_content()


@pytest.mark.parametrize(
    ("event_type", "status", "language", "subject"),
    [
        ("registration.promoted", "confirmed", "id", "Kursi untuk Anda"),
        ("registration.promoted", "confirmed", "en", "A seat for you"),
        ("registration.cancelled", "cancelled", "id", "Pendaftaran dibatalkan"),
        ("registration.cancelled", "cancelled", "en", "Registration cancelled"),
    ],
)
def test_promotion_and_cancellation_mail_in_each_language(
    runtime, registration_data, event_type, status, language, subject
):
    [delivery] = handle(runtime, event_type, registration_data(status=status, language=language))
    mail = as_received(delivery)

    assert mail["Subject"].startswith(subject)
    assert mail.get_body(preferencelist=("html",)) is not None


def session_data(**overrides) -> dict:
    data = {
        "session_id": SESSION,
        "programme_id": None,
        "title": "Sosialisasi Laboratorium Inovasi Kaltara",
        "starts_at": "2026-12-08T01:00:00+00:00",
        "ends_at": "2026-12-08T04:00:00+00:00",
        "location": "Aula Bappeda",
        "capacity": 50,
    }
    return {**data, **overrides}


def register(runtime, registration_data, i: int, status: str = "confirmed", language: str = "id") -> None:
    event_type = {"confirmed": "registration.confirmed", "waitlisted": "registration.waitlisted"}.get(
        status, "registration.cancelled"
    )
    data = registration_data(
        registration_id=f"r-{i}",
        email=f"peserta{i}@kaltaraprov.go.id",
        name=f"Peserta {i}",
        status=status,
        language=language,
        waitlist_position=1 if status == "waitlisted" else None,
    )
    handle(runtime, event_type, data)


@pytest.mark.parametrize(
    ("language", "says"),
    [("id", "Mulai: 07-12-2026 09:00 WITA → 08-12-2026 09:00 WITA"), ("en", "Starts: 07-12-2026 09:00 WITA → 08-12")],
)
def test_a_changed_session_tells_every_registrant_still_in_it_what_changed(runtime, registration_data, language, says):
    register(runtime, registration_data, 1, language=language)
    register(runtime, registration_data, 2, "waitlisted", language=language)
    register(runtime, registration_data, 3, "cancelled", language=language)
    changes = {
        "starts_at": {"old": "2026-12-07T01:00:00+00:00", "new": "2026-12-08T01:00:00+00:00"},
        "location": {"old": "Kantor Gubernur", "new": "Aula Bappeda"},
    }

    told = handle(runtime, "session.changed", session_data(changes=changes))

    assert sorted(d.recipient for d in told) == ["peserta1@kaltaraprov.go.id", "peserta2@kaltaraprov.go.id"]
    text = as_received(told[0]).get_body(preferencelist=("plain",)).get_content()
    assert says in text
    assert "Kantor Gubernur → Aula Bappeda" in text


@pytest.mark.parametrize(("language", "subject"), [("id", "Sesi dibatalkan"), ("en", "Session cancelled")])
def test_a_cancelled_session_tells_its_registrants(runtime, registration_data, language, subject):
    register(runtime, registration_data, 1, language=language)

    [told] = handle(runtime, "session.cancelled", session_data(state="cancelled"))

    assert as_received(told)["Subject"].startswith(subject)


@pytest.mark.parametrize(("language", "says"), [("id", "telah DITERIMA"), ("en", "was RECEIVED")])
def test_a_team_lead_hears_their_proposal_was_received(runtime, language, says):
    data = {
        "proposal_id": "p-1",
        "registration_id": "r-1",
        "opd": "Dinas Kesehatan",
        "title": "Posyandu Digital",
        "category": "pelayanan publik",
        "team_name": "Sari Wulandari",
        "team_email": "Sari@Kaltaraprov.go.id",
        "language": language,
        "submitted_at": "2027-02-01T02:00:00+00:00",
    }
    [delivery] = handle(runtime, "proposal.submitted", data, source="/evaluation")

    assert delivery.recipient == "sari@kaltaraprov.go.id"
    assert says in as_received(delivery).get_body(preferencelist=("plain",)).get_content()


def test_an_evaluator_hears_of_an_assignment_in_the_language_the_projection_knows(runtime, registration_data):
    handle(runtime, "registration.confirmed", registration_data(email="budi@kaltaraprov.go.id", language="en"))
    data = {
        "assignment_id": "a-1",
        "round_id": "round-1",
        "round_name": "Evaluasi Desk",
        "proposal_id": "p-1",
        "proposal_title": "Posyandu Digital",
        "evaluator_id": "acc-1",
        "evaluator_email": "budi@kaltaraprov.go.id",
        "evaluator_name": "Budi Santoso",
        "assigned_at": "2027-02-02T02:00:00+00:00",
    }

    [delivery] = handle(runtime, "evaluation.assigned", data, source="/evaluation")

    mail = as_received(delivery)
    assert mail["Subject"] == "Evaluation assigned: Posyandu Digital"
    assert "/evaluation/assignments" in mail.get_body(preferencelist=("plain",)).get_content()


@pytest.mark.parametrize(("language", "subject"), [("id", "Hasil Evaluasi Desk"), ("en", "Results of Evaluasi Desk")])
def test_results_reach_the_team_in_its_language(runtime, language, subject):
    from tests.unit.test_participant_mails import result_data

    [delivery] = handle(runtime, "results.published", result_data(language=language), source="/evaluation")

    mail = as_received(delivery)
    assert mail["Subject"].startswith(subject)
    assert ("Peringkat: 2 dari 14" if language == "id" else "Rank: 2 of 14") in plain_text_of(mail)


@pytest.mark.parametrize(
    ("language", "decision", "subject", "says"),
    [
        ("id", "rejected", "Jawaban sanggahan", "Sanggahan Anda DITOLAK"),
        ("id", "upheld", "Jawaban sanggahan", "Sanggahan Anda DITERIMA"),
        ("en", "rejected", "Your objection was answered", "Your objection was REJECTED"),
        ("en", "upheld", "Your objection was answered", "Your objection was UPHELD"),
    ],
)
def test_the_team_hears_the_answer_to_its_objection_with_the_reason(runtime, language, decision, subject, says):
    from tests.unit.test_participant_mails import result_data

    team = {k: v for k, v in result_data(language=language).items() if k in ANSWERED_FIELDS}
    data = {
        **team,
        "objection_id": "7d1c1a8e-0000-4000-8000-0000000000o1",
        "decision": decision,
        "answer": "Nilai dihitung ulang sesuai rubrik.",
        "filed_at": "2027-04-08T01:30:00+00:00",
        "answered_at": "2027-04-09T03:00:00+00:00",
    }

    [delivery] = handle(runtime, "objection.answered", data, source="/evaluation")

    assert delivery.recipient == "sari@kaltaraprov.go.id" and delivery.template == "objection_answered"
    mail = as_received(delivery)
    assert mail["Subject"] == f"{subject}{' · Objection answered' if language == 'id' else ''}: Layanan KTP Keliling"
    text = mail.get_body(preferencelist=("plain",)).get_content()
    html = mail.get_body(preferencelist=("html",)).get_content()
    assert says in text and "Nilai dihitung ulang sesuai rubrik." in text and "Evaluasi Desk" in text
    assert "Nilai dihitung ulang sesuai rubrik." in html and says.split()[-1] in html
    assert "08-04-2027 09:30 WITA" in text, "the filing time in the programme's zone"


ANSWERED_FIELDS = (
    "round_id",
    "round_name",
    "programme_id",
    "proposal_id",
    "proposal_title",
    "registration_id",
    "team_name",
    "team_email",
    "language",
)


def test_a_check_in_marks_the_registration_in_the_projection(runtime, registration_data):
    register(runtime, registration_data, 1)
    handle(
        runtime,
        "participant.checked_in",
        {
            "registration_id": "r-1",
            "session_id": SESSION,
            "name": "Peserta 1",
            "nip": "198503152010012001",
            "email": "peserta1@kaltaraprov.go.id",
            "opd": "Dinas Kesehatan",
            "checked_in_at": "2026-12-07T01:05:00+00:00",
            "checked_in_by": "acc-1",
        },
    )
    with runtime.reading() as uow:
        [row] = domain.session_registrants(uow, SESSION)
    assert row.checked_in_at == datetime(2026, 12, 7, 1, 5, tzinfo=UTC)
    assert row.name == "Peserta 1" and row.status == "confirmed"


def test_an_old_registration_event_arriving_late_does_not_undo_a_cancellation(runtime, registration_data):
    confirmed_event = parse_event(
        make_event("registration.confirmed", registration_data(), source="/registration", correlation_id="req-1")
    )
    handle(runtime, "registration.cancelled", registration_data(status="cancelled"))
    with runtime.unit_of_work() as uow:  # the confirmation was made first but arrives last
        domain.remember_registration(uow, confirmed_event)
        uow.commit()

    with runtime.reading() as uow:
        assert domain.session_registrants(uow, SESSION) == []


def test_the_same_event_handled_twice_writes_one_delivery(runtime, registration_data):
    event = parse_event(make_event("registration.confirmed", registration_data(), source="/r", correlation_id="c"))
    for _ in range(2):
        with runtime.unit_of_work() as uow:
            HANDLERS[event.type](uow, event)
            uow.commit()
    with runtime.reading() as uow:
        assert len(list(uow.session.scalars(select(Delivery)))) == 1
