"""Who may register: NIP, Indonesian mobile number and e-mail rules (services/registration rules and schema)."""

from __future__ import annotations

import pytest

from services.registration.rules import nip_problem, normalise_email, normalise_mobile_number
from services.registration.schemas import ParticipantSchema
from shared.events import RegistrationDataV1

#: born 15 March 1985, appointed January 2010, female, sequence 001
VALID_NIP = "198503152010012001"

#: The first code point of other scripts' digits 0-9, which ``\d`` (and ``int()``) also accept.
OTHER_DIGITS = {"arabic-indic": 0x0660, "fullwidth": 0xFF10, "devanagari": 0x0966, "extended-arabic-indic": 0x06F0}


def in_other_digits(nip: str, zero: int) -> str:
    return nip.translate({ord("0") + d: zero + d for d in range(10)})


@pytest.mark.parametrize("nip", [VALID_NIP, "198503152010011001", "199202292015021999"])
def test_a_valid_nip_is_accepted(nip):
    assert nip_problem(nip) is None


@pytest.mark.parametrize(
    ("nip", "reason"),
    [
        ("19850315201001200", "18 digits"),  # 17 digits
        ("1985031520100120011", "18 digits"),  # 19 digits
        ("19850315201001200A", "18 digits"),
        ("", "18 digits"),
        ("198502302010012001", "birth date"),  # 30 February
        ("199002292015022001", "birth date"),  # 29 February of a common year
        ("198503152010132001", "appointment"),  # month 13
        ("198503152010002001", "appointment"),  # month 00
        ("198503152010013001", "digit 15"),  # sex digit 3
        ("198503152010012000", "sequence"),  # sequence 000
    ],
)
def test_an_impossible_nip_is_refused_with_the_reason(nip, reason):
    problem = nip_problem(nip)
    assert problem is not None and reason in problem


@pytest.mark.parametrize("zero", OTHER_DIGITS.values(), ids=OTHER_DIGITS.keys())
def test_a_nip_in_other_digits_than_0_to_9_is_refused(zero):
    assert nip_problem(in_other_digits(VALID_NIP, zero)) == "NIP must be exactly 18 digits 0-9."


@pytest.mark.parametrize("nip", [VALID_NIP + "\n", " " + VALID_NIP, VALID_NIP[:9] + "\u0661" + VALID_NIP[10:]])
def test_a_nip_with_anything_but_its_18_digits_is_refused(nip):
    assert "18 digits 0-9" in nip_problem(nip)


@pytest.mark.parametrize(
    "raw",
    ["081234567890", "0812 3456 7890", "0812-3456-7890", "+6281234567890", "+62 812-3456-7890", "6281234567890"],
)
def test_indonesian_mobile_numbers_are_normalised_to_e164(raw):
    assert normalise_mobile_number(raw) == "+6281234567890"


@pytest.mark.parametrize("landline", ["021 5551234", "+62 21 5551234"])
def test_a_landline_is_refused_because_it_cannot_receive_messages(landline):
    with pytest.raises(ValueError, match="mobile"):
        normalise_mobile_number(landline)


@pytest.mark.parametrize("foreign", ["+60 12-345 6789", "+1 202 555 0123"])
def test_a_foreign_number_is_refused(foreign):
    with pytest.raises(ValueError, match="Indonesian"):
        normalise_mobile_number(foreign)


@pytest.mark.parametrize("garbage", ["hello", "0812"])
def test_something_that_is_not_a_phone_number_is_refused(garbage):
    with pytest.raises(ValueError):
        normalise_mobile_number(garbage)


def test_an_email_domain_is_normalised_to_lower_case():
    assert normalise_email("sari@KaltaraProv.go.id") == "sari@kaltaraprov.go.id"


@pytest.mark.parametrize("bad", ["sari", "sari@localhost", "sari@@kaltaraprov.go.id"])
def test_an_invalid_email_is_refused(bad):
    with pytest.raises(ValueError):
        normalise_email(bad)


def participant(**overrides) -> dict:
    fields = {
        "name": "Sari Wulandari",
        "nip": VALID_NIP,
        "email": "sari@kaltaraprov.go.id",
        "phone": "0812 3456 7890",
        "opd": "Dinas Kesehatan",
    }
    return {**fields, **overrides}


def test_the_schema_loads_a_valid_participant_with_normalised_contact_details():
    loaded = ParticipantSchema().load(participant(phone="0812-3456-7890", email="sari@KALTARAPROV.go.id"))
    assert loaded["phone"] == "+6281234567890"
    assert loaded["email"] == "sari@kaltaraprov.go.id"
    assert loaded["job_title"] is None  # the job title was called `position` before issue 6
    assert loaded["language"] == "id"
    assert "position" not in loaded


def test_an_old_client_sending_its_job_title_as_position_still_has_it_stored_as_the_job_title():
    assert ParticipantSchema().load(participant(position="Analis Kebijakan"))["job_title"] == "Analis Kebijakan"


def test_a_job_title_wins_over_an_old_position_and_a_non_text_position_is_ignored():
    both = ParticipantSchema().load(participant(job_title="Kepala Seksi", position="Analis"))
    assert both["job_title"] == "Kepala Seksi"
    assert ParticipantSchema().load(participant(position=3))["job_title"] is None
    assert ParticipantSchema().load(participant(position=None))["job_title"] is None


def test_an_old_position_is_held_to_the_job_title_rules():
    errors = ParticipantSchema().validate(participant(position="Analis\nBcc: x@example.go.id"))
    assert set(errors) == {"position"}


def test_the_language_is_id_or_en():
    assert ParticipantSchema().load(participant(language="en"))["language"] == "en"
    assert set(ParticipantSchema().validate(participant(language="fr"))) == {"language"}


def test_the_schema_reports_every_bad_field_at_once():
    errors = ParticipantSchema().validate(participant(nip="198502302010012001", email="sari", phone="021 5551234"))
    assert set(errors) == {"nip", "email", "phone"}
    assert "birth date" in errors["nip"][0]
    assert "mobile" in errors["phone"][0]


@pytest.mark.parametrize("zero", OTHER_DIGITS.values(), ids=OTHER_DIGITS.keys())
def test_the_schema_refuses_a_nip_in_other_digits_naming_the_field(zero):
    errors = ParticipantSchema().validate(participant(nip=in_other_digits(VALID_NIP, zero)))
    assert errors == {"nip": ["NIP must be exactly 18 digits 0-9."]}


@pytest.mark.parametrize(
    "nip",
    [in_other_digits(VALID_NIP, zero) for zero in OTHER_DIGITS.values()] + [VALID_NIP + "\n"],
    ids=[*OTHER_DIGITS, "trailing-newline"],
)
def test_the_event_catalogue_refuses_a_nip_that_is_not_18_digits_0_to_9(registration_data, nip):
    assert set(RegistrationDataV1().validate(RegistrationDataV1().dump(registration_data(nip=nip)))) == {"nip"}


def test_the_event_catalogue_accepts_a_nip_of_18_digits_0_to_9(registration_data):
    assert RegistrationDataV1().validate(RegistrationDataV1().dump(registration_data(nip=VALID_NIP))) == {}


def test_the_schema_names_every_missing_field():
    assert set(ParticipantSchema().validate({})) == {"name", "nip", "email", "phone", "opd"}
