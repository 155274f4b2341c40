"""The session's extra questions on the registration form, in a real browser on a 360-px phone (see
conftest.py for the set-up): a required question left unanswered is explained beside it with everything
typed kept, and answered it registers, the answers stored with the registration."""

from __future__ import annotations

import re

import pytest
import requests

from tests.browser.test_pages_in_a_browser import NO_SIDEWAYS_SCROLL, fill_registration, open_session_form
from tests.support.suite import participant

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

QUESTIONS = [
    {"key": "kaos", "label": "Ukuran kaos", "kind": "choice", "required": True, "choices": ["S", "M", "L", "XL"]},
    {"key": "laptop", "label": "Membawa laptop?", "kind": "yes-no", "required": True},
    {"key": "harapan", "label": "Harapan Anda", "kind": "text", "required": False, "max_length": 1000},
]


def test_a_required_question_is_explained_inline_then_answered_through_the_form(suite, site, phone, screenshot):
    response = requests.post(
        suite.url("registration", "api/v1/sessions"),
        json={
            "title": "Coaching clinic dengan pertanyaan",
            "starts_at": "2027-03-02T09:00:00+08:00",
            "ends_at": "2027-03-02T12:00:00+08:00",
            "location": "Aula Bappeda Kaltara",
            "capacity": 5,
            "questions": QUESTIONS,
        },
        headers=suite.organiser_headers(),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    session_id = response.json()["id"]
    open_session_form(phone, site, "Coaching clinic dengan pertanyaan")
    person = participant(301)
    fill_registration(phone, person)
    phone.get_by_role("group", name="Membawa laptop?").get_by_label("Ya").check()
    phone.get_by_label("Harapan Anda").fill("Belajar merancang inovasi\nbersama tim OPD")
    phone.get_by_role("button", name="Daftar").click()

    shirt = phone.get_by_label("Ukuran kaos")
    assert shirt.get_attribute("aria-invalid") == "true"
    assert phone.locator("#e-answers-kaos").inner_text() == "Pertanyaan ini wajib dijawab."
    assert phone.get_by_label("Harapan Anda").input_value() == "Belajar merancang inovasi\nbersama tim OPD"
    assert phone.get_by_role("group", name="Membawa laptop?").get_by_label("Ya").is_checked()
    assert phone.get_by_label("NIP").input_value() == person["nip"]
    assert phone.get_by_label("Nama lengkap").input_value() == person["name"]
    assert phone.evaluate(NO_SIDEWAYS_SCROLL)
    screenshot(phone, "questions-error-360")

    shirt.select_option("M")
    phone.get_by_role("button", name="Daftar").click()
    phone.wait_for_url(re.compile(r"/registration/manage/"))
    assert phone.locator("#registration-status").inner_text() == "terkonfirmasi"
    listed = requests.get(
        suite.url("registration", f"api/v1/sessions/{session_id}/registrations"),
        headers=suite.organiser_headers(),
        timeout=10,
    ).json()
    assert [r["answers"] for r in listed] == [
        {"kaos": "M", "laptop": True, "harapan": "Belajar merancang inovasi\nbersama tim OPD"}
    ]
