"""What people do on the pages, in a real browser on a 360-px phone (see conftest.py for the set-up)."""

from __future__ import annotations

import re

import pytest
import requests

from tests.support.suite import ORGANISER, participant

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

#: Pages must fit the phone's width: nothing may make the page scroll sideways.
NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= window.innerWidth"


def fill_registration(page, person: dict) -> None:
    page.get_by_label("Nama lengkap").fill(person["name"])
    page.get_by_label("NIP").fill(person["nip"])
    page.get_by_label("E-mail").fill(person["email"])
    page.get_by_label("Nomor ponsel").fill(person["phone"])
    page.get_by_label("Perangkat daerah (OPD)").fill(person["opd"])
    page.get_by_label("Jabatan").fill("Analis Kebijakan")


def open_session_form(page, site: str, title: str) -> None:
    page.goto(f"{site}/")
    page.get_by_role("link", name=title, exact=True).click()
    page.wait_for_url(re.compile(r"/registration/sessions/"))


def test_a_civil_servant_registers_on_a_phone_and_sees_the_confirmation(suite, site, phone, screenshot):
    suite.create_session(capacity=5, title="Sosialisasi Labinov di ponsel")
    phone.goto(f"{site}/")
    assert phone.locator("html").get_attribute("lang") == "id"
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    screenshot(phone, "portal-360")
    open_session_form(phone, site, "Sosialisasi Labinov di ponsel")
    fill_registration(phone, participant(101))
    screenshot(phone, "form-360")
    phone.get_by_role("button", name="Daftar").click()
    phone.wait_for_url(re.compile(r"/registration/manage/"))
    assert phone.locator("#registration-status").inner_text() == "terkonfirmasi"
    assert "Anda terdaftar" in phone.locator("main").inner_text()
    assert "/registration/manage/" in phone.locator("#manage-link").inner_text()
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    screenshot(phone, "confirmation-360")


def test_a_malformed_nip_is_explained_beside_the_field_and_nothing_typed_is_lost(suite, site, phone, screenshot):
    suite.create_session(capacity=5, title="Workshop diagnosis")
    open_session_form(phone, site, "Workshop diagnosis")
    person = participant(102, nip="19850315201001100")  # 17 digits
    fill_registration(phone, person)
    phone.get_by_role("button", name="Daftar").click()
    nip = phone.get_by_label("NIP")
    assert nip.get_attribute("aria-invalid") == "true"
    assert phone.locator("#e-nip").inner_text() == "NIP harus tepat 18 angka 0-9."
    assert nip.input_value() == person["nip"]
    for label, value in (
        ("Nama lengkap", person["name"]),
        ("E-mail", person["email"]),
        ("Jabatan", "Analis Kebijakan"),
    ):
        assert phone.get_by_label(label).input_value() == value
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    screenshot(phone, "form-error-360")


def test_english_chosen_once_sticks_on_every_page_and_service(suite, site, phone):
    phone.goto(f"{site}/")
    phone.get_by_role("link", name="EN").click()
    assert phone.locator("h1").inner_text() == "Innovation lab sessions"
    phone.goto(f"{site}/evaluation/")
    assert phone.locator("html").get_attribute("lang") == "en"
    assert phone.locator("h1").inner_text() == "Innovation evaluation"
    phone.goto(f"{site}/registration/login")
    assert phone.get_by_role("button", name="Sign in").is_visible()
    phone.get_by_role("link", name="ID").click()
    assert phone.get_by_role("button", name="Masuk").is_visible()


def test_an_organiser_signs_in_creates_and_publishes_a_session(suite, site, phone, screenshot):
    phone.goto(f"{site}/registration/admin/sessions")
    phone.wait_for_url(re.compile(r"/registration/login\?next="))
    phone.get_by_label("E-mail").fill(ORGANISER["email"])
    phone.get_by_label("Kata sandi").fill(ORGANISER["password"])
    phone.get_by_role("button", name="Masuk").click()
    phone.wait_for_url(re.compile(r"/registration/admin/sessions$"))
    assert phone.get_by_role("link", name="Kelola sesi").is_visible()
    phone.get_by_role("link", name="Sesi baru").click()
    phone.get_by_label("Judul").fill("Coaching clinic tahap design")
    phone.get_by_label("Tempat", exact=True).fill("Ruang Rapat Bappeda Kaltara")
    phone.get_by_label("Mulai", exact=True).fill("2027-02-10T09:00")
    phone.get_by_label("Selesai", exact=True).fill("2027-02-10T12:00")
    phone.get_by_label("Kapasitas (kursi)").fill("25")
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    screenshot(phone, "new-session-360")
    phone.get_by_role("button", name="Simpan sebagai draf").click()
    phone.wait_for_url(re.compile(r"/registration/admin/sessions/[0-9a-f-]{36}$"))
    assert phone.locator("#session-state").inner_text() == "draf"
    phone.get_by_role("button", name="Terbitkan").click()
    assert phone.locator("#session-state").inner_text() == "terbit"
    phone.goto(f"{site}/")
    assert phone.get_by_role("link", name="Coaching clinic tahap design", exact=True).is_visible()
    phone.goto(f"{site}/evaluation/")  # the same sign-in opens the other services' navigation too
    assert phone.get_by_role("button", name="Keluar").is_visible()
    phone.get_by_role("button", name="Keluar").click()
    phone.goto(f"{site}/registration/admin/sessions")
    phone.wait_for_url(re.compile(r"/registration/login"))


def test_a_participant_cancels_on_the_manage_page_and_the_next_in_line_gets_the_seat(suite, site, phone):
    session_id = suite.create_session(capacity=1, title="Display expo inovasi")
    open_session_form(phone, site, "Display expo inovasi")
    fill_registration(phone, participant(103))
    phone.get_by_role("button", name="Daftar").click()
    phone.wait_for_url(re.compile(r"/registration/manage/"))
    first_page = phone.url
    waiting = suite.register(session_id, participant(104)).json()
    assert waiting["status"] == "waitlisted"
    phone.goto(first_page)
    phone.get_by_role("button", name="Batalkan pendaftaran saya").click()
    assert phone.locator("#registration-status").inner_text() == "dibatalkan"
    assert "Pendaftaran Anda dibatalkan" in phone.locator("main").inner_text()
    promoted = requests.get(
        suite.url("registration", f"api/v1/registrations/{waiting['id']}"),
        headers=suite.organiser_headers(),
        timeout=10,
    )
    assert promoted.json()["status"] == "confirmed"


def test_a_missing_page_in_a_browser_is_a_page_with_a_way_back(site, phone):
    response = phone.goto(f"{site}/registration/no-such-page")
    assert response.status == 404
    assert phone.locator("h1").inner_text() == "Halaman tidak ditemukan"
    phone.get_by_role("link", name="Kembali ke daftar sesi").click()
    phone.wait_for_url(re.compile(r"/registration/$"))
    assert phone.goto(f"{site}/evaluation").url.endswith("/evaluation/")
