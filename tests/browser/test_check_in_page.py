"""The ticket and the door in a real browser on a 360-px phone: the manage page shows the QR code, and an
organiser checks the participant in by typing the code (see conftest.py for the set-up)."""

from __future__ import annotations

import re

import pytest
import requests

from tests.support.suite import ORGANISER, participant

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= window.innerWidth"


def test_the_manage_page_shows_the_ticket_and_an_organiser_checks_it_in_by_typing_the_code(
    suite, site, phone, screenshot
):
    session_id = suite.create_session(capacity=5, title="Sosialisasi dengan tiket")
    registered = suite.register(session_id, participant(201)).json()
    assert registered["status"] == "confirmed"
    manage_url = site + registered["manage_url"][registered["manage_url"].index("/registration/") :]

    phone.goto(manage_url)
    qr = phone.locator("#ticket svg.qr")
    assert qr.is_visible() and qr.bounding_box()["width"] >= 150
    code = phone.locator("#ticket-code").inner_text()
    assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}", code)
    assert phone.locator("#calendar-link").is_visible()
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    screenshot(phone, "ticket-360")

    read = requests.get(
        suite.url("registration", f"api/v1/registrations/{registered['id']}"),
        headers={"Authorization": f"Bearer {registered['manage_token']}"},
        timeout=10,
    ).json()
    assert read["ticket_code"] == code

    door = phone.context.new_page()
    door.goto(f"{site}/registration/admin/sessions/{session_id}/check-in")
    door.wait_for_url(re.compile(r"/registration/login\?next="))
    door.get_by_label("E-mail").fill(ORGANISER["email"])
    door.get_by_label("Kata sandi").fill(ORGANISER["password"])
    door.get_by_role("button", name="Masuk").click()
    door.wait_for_url(re.compile(r"/check-in$"))
    door.get_by_label("Kode tiket").fill(code.lower().replace("-", " "))
    door.get_by_role("button", name="Catat kehadiran").click()
    assert door.locator("#check-in-outcome").inner_text().startswith("Hadir: Peserta 201")
    assert "1 dari 1" in door.locator("#attendance-count").inner_text()
    assert door.evaluate(NO_SIDEWAYS_SCROLL)
    screenshot(door, "check-in-360")
    door.get_by_label("Kode tiket").fill(code)
    door.get_by_role("button", name="Catat kehadiran").click()
    assert door.locator("#check-in-outcome").inner_text().startswith("Tiket ini sudah dicatat hadir.")

    phone.reload()
    assert phone.locator("#checked-in").is_visible()
