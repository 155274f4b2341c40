"""Languages of the pages (shared/i18n.py): one Indonesian catalogue, complete and compiled; the choice sticks."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from marshmallow import ValidationError

from services.registration.schemas import ParticipantSchema
from shared.config import SERVICES
from shared.i18n import LANGUAGE_COOKIE, TRANSLATIONS_DIR

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = TRANSLATIONS_DIR / "id" / "LC_MESSAGES" / "messages.po"
COMPILED = CATALOGUE.with_suffix(".mo")
KEYWORDS = {"_": None, "gettext": None, "_l": None, "lazy_gettext": None, "N_": None, "ngettext": (1, 2)}
BROWSER = {"Accept": "text/html"}


def page_strings() -> set[str]:
    """Every string the code and templates mark for translation, found as ``make translations`` finds them."""
    method_map = [
        ("shared/**.py", "python"),
        ("services/**.py", "python"),
        ("shared/templates/**.html", "jinja2"),
        ("services/*/templates/**.html", "jinja2"),
    ]
    found = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, keywords=KEYWORDS, options_map={}
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_page_string_has_an_indonesian_translation():
    catalogue = read_po(CATALOGUE.open("rb"), locale="id")
    translated = {m.id: m.string for m in catalogue if m.id and not m.fuzzy}
    strings = page_strings()
    assert len(strings) > 100, "the extraction found almost nothing: the keywords or paths changed"
    missing = sorted(s for s in strings if not translated.get(s))
    assert missing == [], "run `make translations` and translate these in messages.po"


def test_the_catalogue_compiles_and_the_committed_mo_is_up_to_date():
    catalogue = read_po(CATALOGUE.open("rb"), locale="id")
    assert list(catalogue.check()) == [], "a translation breaks its placeholders"
    compiled = read_mo(io.BytesIO(COMPILED.read_bytes()))
    expected = {m.id: m.string for m in catalogue if m.id and m.string and not m.fuzzy}
    assert {m.id: m.string for m in compiled if m.id} == expected, "run `make translations` (pybabel compile)"


def test_the_pages_are_in_bahasa_indonesia_by_default(registration_client):
    page = registration_client.get("/registration/", headers=BROWSER).get_data(as_text=True)
    assert '<html lang="id">' in page
    assert "Jadwal sesi laboratorium inovasi" in page and "Masuk" in page


@pytest.mark.parametrize("service", SERVICES)
def test_choosing_english_sticks_on_every_service(app_for, service):
    first = app_for("registration").test_client()
    chosen = first.get("/registration/?lang=en", headers=BROWSER)
    cookie = next(c for c in chosen.headers.getlist("Set-Cookie") if c.startswith(f"{LANGUAGE_COOKIE}="))
    assert "Path=/;" in cookie and "SameSite=Lax" in cookie
    client = app_for(service).test_client()
    client.set_cookie(LANGUAGE_COOKIE, "en")
    page = client.get(f"/{service}/no-such-page", headers=BROWSER).get_data(as_text=True)
    assert '<html lang="en">' in page and "Page not found" in page and "Sign in" in page


def test_the_language_switch_keeps_the_pages_other_parameters(registration_client):
    page = registration_client.get("/registration/admin/sessions?state=draft", headers=BROWSER)
    login = registration_client.get(page.headers["Location"], headers=BROWSER).get_data(as_text=True)
    assert "/registration/login?next=%2Fregistration%2Fadmin%2Fsessions%3Fstate%3Ddraft&amp;lang=en" in login


def test_an_unknown_language_falls_back_to_bahasa_indonesia(registration_client):
    page = registration_client.get("/registration/?lang=fr", headers=BROWSER)
    assert '<html lang="id">' in page.get_data(as_text=True)
    assert not any(c.startswith(LANGUAGE_COOKIE) for c in page.headers.getlist("Set-Cookie"))


BAD_PARTICIPANTS = [
    {"nip": "1985"},
    {"nip": "198513152010011001"},
    {"nip": "198503151995011001"},
    {"nip": "198503152010013001"},
    {"nip": "198503152010011000"},
    {"phone": "12"},
    {"phone": "021 345 6789"},
    {"email": "rina"},
    {"email": "rina@kaltaraprov"},
    {"name": "R"},
    {"opd": ""},
]


@pytest.mark.parametrize("bad", BAD_PARTICIPANTS, ids=lambda bad: "-".join(f"{k}={v}" for k, v in bad.items()))
def test_every_refusal_of_the_registration_form_is_said_in_bahasa_indonesia(registration_app, bad):
    from services.registration.pages import translate_refusal

    body = {
        "name": "Rina Marlina",
        "nip": "198503152010011001",
        "email": "rina@kaltaraprov.go.id",
        "phone": "0812 3456 7890",
        "opd": "Diskominfo",
        **bad,
    }
    with pytest.raises(ValidationError) as refused:
        ParticipantSchema().load({k: v for k, v in body.items() if v})
    with registration_app.test_request_context("/registration/"):
        for messages in refused.value.messages.values():
            for message in messages:
                assert translate_refusal(message) != message, f"no Indonesian for {message!r}"


def test_times_are_shown_in_the_programmes_time_zone_with_its_name(registration_app):
    from shared.i18n import local_time

    with registration_app.test_request_context("/registration/?lang=en"):
        registration_app.preprocess_request()
        assert local_time(datetime(2026, 12, 7, 1, 0, tzinfo=UTC)) == "Mon, 7 Dec 2026 · 09.00 WITA"
    with registration_app.test_request_context("/registration/"):
        registration_app.preprocess_request()
        assert local_time(datetime(2026, 12, 7, 1, 0, tzinfo=UTC)) == "Sen, 7 Des 2026 · 09.00 WITA"


def test_pages_show_times_in_the_configured_zone_not_a_fixed_one(data_env, app_for):
    data_env["LABINOV_TIMEZONE"] = "Asia/Jakarta"
    page = app_for("registration").test_client().get("/registration/").get_data(as_text=True)
    assert "Asia/Jakarta" in page and "Asia/Makassar" not in page
