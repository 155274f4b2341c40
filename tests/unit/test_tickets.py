"""Tickets, the door, spreadsheets and calendar entries: the pure rules, and the pages that show them."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar
import pytest

from services.registration import domain, rules
from services.registration.rules import CheckInRefusal
from shared.pages import AUTH_COOKIE
from shared.spreadsheets import spreadsheet_cell, spreadsheet_csv
from shared.tokens import Principal
from tests.support.suite import participant

KEY = rules.ticket_key(b"the service's secret key")
BROWSER = {"Accept": "text/html"}
WITA = ZoneInfo("Asia/Makassar")


# --- ticket codes ----------------------------------------------------------------------------------------


def test_a_ticket_code_is_sixteen_base32_letters_in_four_groups_that_read_back_to_its_registration():
    registration_id = str(uuid.uuid4())
    code = rules.ticket_code(KEY, registration_id)
    assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}", code)
    typed = rules.read_ticket_code(code)
    assert registration_id.startswith(typed.id_prefix)
    assert rules.ticket_belongs_to(KEY, typed, registration_id)


def test_a_code_typed_in_lower_case_with_spaces_or_look_alike_digits_is_the_same_code():
    registration_id = str(uuid.uuid4())
    code = rules.ticket_code(KEY, registration_id)
    sloppy = code.lower().replace("-", "  ").replace("o", "0").replace("i", "1").replace("b", "8")
    assert rules.read_ticket_code(sloppy).code == code


@pytest.mark.parametrize("typed", ["", "ABCD-EFGH", "ABCD-EFGH-JKLM-NPQR-STUV", "ABCD-EFGH-JKLM-NPQ9", "😀" * 16])
def test_what_cannot_be_a_code_is_read_as_none(typed):
    assert rules.read_ticket_code(typed) is None


def test_a_code_signed_with_another_key_or_for_another_registration_does_not_belong():
    registration_id = str(uuid.uuid4())
    forged = rules.read_ticket_code(rules.ticket_code(rules.ticket_key(b"another secret"), registration_id))
    assert not rules.ticket_belongs_to(KEY, forged, registration_id)
    other = str(uuid.uuid4())
    assert not rules.ticket_belongs_to(KEY, rules.read_ticket_code(rules.ticket_code(KEY, other)), registration_id)


def test_the_ticket_key_is_derived_and_never_the_secret_itself():
    assert rules.ticket_key(b"s") != b"s" and len(rules.ticket_key(b"s")) == 32


# --- who may be checked in --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ticket_session", "session_state", "status", "earlier", "refusal"),
    [
        ("s1", "published", "confirmed", False, None),
        ("s2", "published", "confirmed", False, CheckInRefusal.ANOTHER_SESSION),
        ("s1", "cancelled", "confirmed", False, CheckInRefusal.SESSION_CANCELLED),
        ("s1", "published", "cancelled", False, CheckInRefusal.CANCELLED),
        ("s1", "published", "waitlisted", False, CheckInRefusal.WAITLISTED),
        ("s1", "published", "confirmed", True, CheckInRefusal.ALREADY_CHECKED_IN),
        ("s2", "published", "cancelled", True, CheckInRefusal.ANOTHER_SESSION),  # the most useful reason first
    ],
)
def test_the_check_in_decision(ticket_session, session_state, status, earlier, refusal):
    assert rules.check_in_refusal("s1", session_state, ticket_session, status, earlier) is refusal


def test_another_session_s_ticket_is_a_422_and_every_other_refusal_a_409():
    statuses = {refusal: status for refusal, (status, _text) in rules.CHECK_IN_REFUSALS.items()}
    assert statuses.pop(CheckInRefusal.ANOTHER_SESSION) == 422
    assert set(statuses.values()) == {409} and set(statuses) | {CheckInRefusal.ANOTHER_SESSION} == set(CheckInRefusal)


# --- spreadsheets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["=1+1", "+62812", "-5", "@SUM(A1)", "\tx"])
def test_a_cell_a_spreadsheet_would_run_as_a_formula_starts_with_a_quote(cell):
    assert spreadsheet_cell(cell) == "'" + cell


def test_an_export_is_utf8_with_a_bom_and_a_header():
    document = spreadsheet_csv(("name", "opd"), [["Sari Wulandari", "=cmd"], [None, "Dinas Kesehatan"]])
    assert document.decode("utf-8") == "\ufeffname,opd\r\nSari Wulandari,'=cmd\r\n,Dinas Kesehatan\r\n"


def test_an_agency_s_semicolon_sheet_with_indonesian_headers_is_read_with_its_line_numbers():
    raw = (
        "\ufeffNama Lengkap;NIP;E-mail;Nomor Ponsel;Perangkat Daerah (OPD);Jabatan;Catatan\r\n"
        '"Sari\nWulandari";198503152010012001;sari@kaltaraprov.go.id;0812 3456 7890;Dinas Kesehatan;;x\r\n'
        ";;;;;;\r\n"
        "Budi;198701012010011002;budi@kaltaraprov.go.id;0813 1111 2222;Bappeda;Analis\r\n"
    ).encode()
    sheet = rules.read_import_sheet(raw)
    assert [row.line for row in sheet.rows] == [2, 5]
    assert sheet.rows[0].fields["name"] == "Sari\nWulandari" and "job_title" not in sheet.rows[0].fields
    assert sheet.rows[1].fields == {
        "name": "Budi",
        "nip": "198701012010011002",
        "email": "budi@kaltaraprov.go.id",
        "phone": "0813 1111 2222",
        "opd": "Bappeda",
        "job_title": "Analis",
    }
    assert sheet.ignored_columns == ["Catatan"]


def test_a_sheet_saved_by_excel_in_windows_1252_keeps_its_accents():
    sheet = rules.read_import_sheet("name,nip,email,phone,opd\nJosé,1,e,p,o\n".encode("cp1252"))
    assert sheet.rows[0].fields["name"] == "José"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "empty"),
        (b"name,email,phone,opd\nA,e,p,o\n", "missing: nip"),
        (b"PK\x03\x04\x00\x00binary", "not a CSV"),
    ],
)
def test_a_sheet_that_cannot_be_imported_as_a_whole_says_why(raw, says):
    with pytest.raises(rules.UnreadableSheet, match=says):
        rules.read_import_sheet(raw)


# --- calendar entries ----------------------------------------------------------------------------------------


def test_a_calendar_entry_parses_back_with_a_stable_uid_and_local_times():
    starts = datetime(2027, 3, 1, 1, 0, tzinfo=UTC)
    entry = rules.CalendarSession(
        "session-1",
        "Sosialisasi",
        starts,
        starts + timedelta(hours=3),
        "Aula Bappeda",
        "Bawa laptop.",
        "https://meet.example/lab",
        "https://labinov.example/registration/sessions/session-1",
    )
    first = icalendar.Calendar.from_ical(rules.calendar_entry(entry, WITA, datetime.now(UTC)))
    again = icalendar.Calendar.from_ical(rules.calendar_entry(entry, WITA, datetime.now(UTC) + timedelta(days=1)))
    [event] = first.walk("VEVENT")
    assert str(event["UID"]) == str(again.walk("VEVENT")[0]["UID"]) == "session-1@labinov"
    assert event.decoded("DTSTART") == starts and event.decoded("DTSTART").utcoffset() == timedelta(hours=8)
    assert event["DTSTART"].params["TZID"] == "Asia/Makassar"
    assert event.decoded("DTEND") == starts + timedelta(hours=3)
    assert str(event["LOCATION"]) == "Aula Bappeda" and str(event["SUMMARY"]) == "Sosialisasi"
    assert "https://meet.example/lab" in str(event["DESCRIPTION"]) and str(event["STATUS"]) == "CONFIRMED"
    assert first.walk("VTIMEZONE")


# --- the pages ------------------------------------------------------------------------------------------------


def make_session(app, capacity=5, **extra) -> str:
    starts = datetime.now(UTC) + timedelta(days=7)
    fields = {
        "title": "Sosialisasi Laboratorium Inovasi",
        "starts_at": starts,
        "ends_at": starts + timedelta(hours=3),
        "location": "Aula Bappeda Kaltara",
        "capacity": capacity,
        **extra,
    }
    with app.extensions["labinov"].unit_of_work() as uow:
        lab_session = domain.create_session(uow, fields, Principal("organiser-1", "o@x.id", "organiser"))
        uow.commit()
        return lab_session.id


def register(app, session_id, i):
    runtime = app.extensions["labinov"]
    with runtime.unit_of_work() as uow:
        registration = domain.register_participant(uow, session_id, participant(i))
        uow.commit()
    token = domain.participant_token(app.extensions["labinov_issuer"], registration, datetime.now(UTC) + timedelta(7))
    return registration, token


def test_the_manage_page_shows_the_ticket_s_qr_code_and_its_code_as_text(registration_app):
    session_id = make_session(registration_app)
    registration, token = register(registration_app, session_id, 1)
    page = registration_app.test_client().get(f"/registration/manage/{registration.id}?token={token}", headers=BROWSER)
    html = page.get_data(as_text=True)
    code = rules.ticket_code(domain.ticket_key(registration_app.extensions["labinov"].settings), registration.id)
    assert '<svg width="' in html and 'class="qr"' in html and "<title>Kode QR tiket</title>" in html
    assert f'id="ticket-code">{code}<' in html
    assert f"/registration/sessions/{session_id}.ics" in html
    printable = registration_app.test_client().get(
        f"/registration/manage/{registration.id}/ticket?token={token}", headers=BROWSER
    )
    assert printable.status_code == 200 and code in printable.get_data(as_text=True)


def test_a_waiting_registrant_s_page_shows_no_ticket(registration_app):
    session_id = make_session(registration_app, capacity=1)
    register(registration_app, session_id, 1)
    waiting, token = register(registration_app, session_id, 2)
    client = registration_app.test_client()
    html = client.get(f"/registration/manage/{waiting.id}?token={token}", headers=BROWSER).get_data(as_text=True)
    assert 'class="qr"' not in html and 'id="ticket-code"' not in html
    assert client.get(f"/registration/manage/{waiting.id}/ticket?token={token}", headers=BROWSER).status_code == 404


def test_the_printable_ticket_opens_only_with_its_own_link(registration_app):
    session_id = make_session(registration_app)
    mine, _token = register(registration_app, session_id, 1)
    _other, other_token = register(registration_app, session_id, 2)
    response = registration_app.test_client().get(
        f"/registration/manage/{mine.id}/ticket?token={other_token}", headers=BROWSER
    )
    assert response.status_code == 403


def test_a_published_session_s_calendar_entry_downloads_and_a_draft_s_is_404(registration_app):
    published = make_session(registration_app)
    draft = make_session(registration_app, state="draft")
    client = registration_app.test_client()
    response = client.get(f"/registration/sessions/{published}.ics")
    assert response.status_code == 200 and response.mimetype == "text/calendar"
    assert "attachment" in response.headers["Content-Disposition"]
    [event] = icalendar.Calendar.from_ical(response.get_data()).walk("VEVENT")
    assert str(event["UID"]) == f"{published}@labinov"
    assert client.get(f"/registration/sessions/{draft}.ics", headers=BROWSER).status_code == 404
    session_page = client.get(f"/registration/sessions/{published}", headers=BROWSER).get_data(as_text=True)
    assert f"/registration/sessions/{published}.ics" in session_page


def test_an_organiser_checks_a_participant_in_on_the_door_page_by_typing_the_code(registration_app, mint_token):
    session_id = make_session(registration_app)
    registration, _token = register(registration_app, session_id, 1)
    code = rules.ticket_code(domain.ticket_key(registration_app.extensions["labinov"].settings), registration.id)
    client = registration_app.test_client()
    client.set_cookie(AUTH_COOKIE, mint_token(registration_app.extensions["labinov"].settings, "organiser"))
    door = client.get(f"/registration/admin/sessions/{session_id}/check-in", headers=BROWSER).get_data(as_text=True)
    assert 'src="/registration/static/labinov-check-in.js"' in door and 'id="check-in-code"' in door
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', door).group(1)
    url = f"/registration/admin/sessions/{session_id}/check-in"
    first = client.post(url, data={"csrf_token": csrf, "code": code.lower()}, headers=BROWSER)
    assert first.status_code == 200
    assert "Hadir: Peserta 1" in first.get_data(as_text=True)
    second = client.post(url, data={"csrf_token": csrf, "code": code}, headers=BROWSER)
    assert second.status_code == 409 and "Tiket ini sudah dicatat hadir." in second.get_data(as_text=True)
    forged = client.post(url, data={"csrf_token": csrf, "code": "AAAA-BBBB-CCCC-DDDD"}, headers=BROWSER)
    assert forged.status_code == 422
    session_page = client.get(f"/registration/admin/sessions/{session_id}", headers=BROWSER).get_data(as_text=True)
    assert "1 dari 1 peserta terkonfirmasi sudah hadir" in session_page
    exported = client.get(f"/registration/admin/sessions/{session_id}/check-ins.csv")
    assert exported.mimetype == "text/csv" and "Peserta 1" in exported.get_data(as_text=True)


def test_the_check_in_script_is_served_and_only_enhances_the_form():
    from pathlib import Path

    script = (Path(__file__).resolve().parents[2] / "shared/static/labinov-check-in.js").read_text()
    assert "BarcodeDetector" in script and "form.submit()" in script
    assert "http" not in script.replace("https or localhost", "")  # no library from elsewhere
