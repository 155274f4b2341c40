"""The session's extra questions: the pure rules (definitions, changes, answers), the API and the pages.

The API and page tests run the registration app on SQLite (the unit fixtures); the same paths on the real
PostgreSQL, and the bulk import, are in ``tests/integration/test_session_questions.py``.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from marshmallow import ValidationError

from services.registration import api, rules
from services.registration.rules import check_answers, question_change_refusal
from services.registration.schemas import ParticipantSchema, SessionChangeSchema, SessionCreateSchema
from tests.support.suite import participant
from tests.unit.test_pages import BROWSER, csrf_of, organiser_account, sign_in  # noqa: F401 (a fixture)

SHIRT = {"key": "kaos", "label": "Ukuran kaos", "kind": "choice", "required": True, "choices": ["S", "M", "L"]}
LAPTOP = {"key": "laptop", "label": "Membawa laptop?", "kind": "yes-no", "required": False}
HOPES = {"key": "harapan", "label": "Harapan Anda", "kind": "text", "required": False, "max_length": 20}
QUESTIONS = [SHIRT, LAPTOP, HOPES]

# --- answers against the questions (rules.check_answers) -------------------------------------------------


def test_answers_that_fit_are_stored_as_given_with_text_trimmed():
    stored, problems = check_answers(QUESTIONS, {"kaos": "M", "laptop": False, "harapan": "  Belajar  "})
    assert problems == {}
    assert stored == {"kaos": "M", "laptop": False, "harapan": "Belajar"}


def test_a_required_question_left_unanswered_or_blank_is_refused_by_its_key():
    assert check_answers(QUESTIONS, {})[1] == {"answers.kaos": [rules.ANSWER_REQUIRED]}
    assert check_answers(QUESTIONS, {"kaos": "   "})[1] == {"answers.kaos": [rules.ANSWER_REQUIRED]}


def test_optional_questions_may_be_left_out_and_are_not_stored():
    assert check_answers(QUESTIONS, {"kaos": "S", "harapan": ""}) == ({"kaos": "S"}, {})


def test_a_question_the_session_does_not_ask_is_refused():
    assert check_answers(QUESTIONS, {"kaos": "S", "hobi": "x"})[1] == {"answers.hobi": [rules.ANSWER_UNKNOWN]}


def test_a_choice_must_be_one_of_the_choices_exactly():
    assert check_answers(QUESTIONS, {"kaos": "XL"})[1] == {"answers.kaos": ["Must be one of: S, M, L."]}
    assert check_answers(QUESTIONS, {"kaos": "m"})[1] == {"answers.kaos": ["Must be one of: S, M, L."]}


def test_a_yes_no_answer_is_a_boolean_not_a_word():
    assert check_answers(QUESTIONS, {"kaos": "S", "laptop": "ya"})[1] == {"answers.laptop": [rules.ANSWER_NOT_YES_NO]}
    assert check_answers(QUESTIONS, {"kaos": "S", "laptop": 1})[1] == {"answers.laptop": [rules.ANSWER_NOT_YES_NO]}


def test_text_may_span_lines_but_holds_no_other_control_character_and_keeps_its_limit():
    assert check_answers(QUESTIONS, {"kaos": "S", "harapan": "satu\r\ndua"})[0]["harapan"] == "satu\ndua"
    assert check_answers(QUESTIONS, {"kaos": "S", "harapan": "a\tb"})[1] == {
        "answers.harapan": [rules.ANSWER_CONTROL_CHARACTERS]
    }
    assert check_answers(QUESTIONS, {"kaos": "S", "harapan": "x" * 21})[1] == {
        "answers.harapan": ["Longer than maximum length 20."]
    }
    assert check_answers(QUESTIONS, {"kaos": True})[1] == {"answers.kaos": [rules.ANSWER_NOT_TEXT]}


def test_every_refused_answer_is_named_at_once():
    _stored, problems = check_answers(QUESTIONS, {"laptop": "ya", "harapan": "x" * 30, "lain": "?"})
    assert sorted(problems) == ["answers.harapan", "answers.kaos", "answers.lain", "answers.laptop"]


def test_a_session_without_questions_takes_no_answers():
    assert check_answers([], {}) == ({}, {})
    assert check_answers([], {"kaos": "M"})[1] == {"answers.kaos": [rules.ANSWER_UNKNOWN]}


@pytest.mark.parametrize(
    ("typed", "read"), [("ya", True), (" Yes ", True), ("1", True), ("tidak", False), ("no", False)]
)
def test_yes_and_no_are_read_as_people_type_them(typed, read):
    assert rules.read_yes_no(typed) is read


def test_typed_answers_read_yes_no_only_for_yes_no_questions_and_drop_blanks():
    typed = {"kaos": "M", "laptop": "ya", "harapan": "", "lain": "ya"}
    assert rules.typed_answers(QUESTIONS, typed) == {"kaos": "M", "laptop": True, "lain": "ya"}


def test_an_answer_is_a_spreadsheet_cell_with_yes_and_no_for_booleans():
    assert [rules.answer_cell(v) for v in (True, False, None, "M")] == ["yes", "no", "", "M"]


# --- changing the questions (rules.question_change_refusal) -----------------------------------------------


def test_before_anyone_registers_every_change_is_allowed():
    assert question_change_refusal(QUESTIONS, [], registered=False) is None
    assert question_change_refusal(QUESTIONS, [{**LAPTOP, "kind": "text"}], registered=False) is None


def test_once_people_registered_relabelling_reordering_and_optional_additions_are_allowed():
    after = [
        {**HOPES, "label": "Apa harapan Anda?", "max_length": 200},
        {**SHIRT, "choices": ["S", "M", "L", "XL"], "required": False},
        LAPTOP,
        {"key": "baru", "label": "Baru", "kind": "text", "required": False, "max_length": 500},
    ]
    assert question_change_refusal(QUESTIONS, after, registered=True) is None


@pytest.mark.parametrize(
    ("after", "reason"),
    [
        ([SHIRT, LAPTOP], "harapan cannot be removed"),
        (
            [*QUESTIONS, {"key": "wajib", "label": "Wajib", "kind": "yes-no", "required": True}],
            "wajib must be optional",
        ),
        ([SHIRT, {**LAPTOP, "required": True}, HOPES], "laptop cannot become required"),
        ([SHIRT, {**LAPTOP, "kind": "text", "max_length": 500}, HOPES], "laptop cannot change its kind"),
        ([{**SHIRT, "choices": ["M", "L"]}, LAPTOP, HOPES], "kaos must keep its choices (S may have been chosen)"),
        ([SHIRT, LAPTOP, {**HOPES, "max_length": 10}], "harapan cannot allow shorter answers"),
    ],
    ids=["removed", "new-required", "made-required", "kind", "choice-dropped", "shorter"],
)
def test_once_people_registered_a_change_that_spoils_answers_is_refused_naming_the_question(after, reason):
    refusal = question_change_refusal(QUESTIONS, after, registered=True)
    assert refusal is not None and reason in refusal and refusal.startswith("People have registered")


def test_a_key_is_made_from_the_label_clear_of_taken_and_reserved_keys():
    assert rules.question_key_from("Ukuran Kaos (S/M/L)", set()) == "ukuran-kaos-s-m-l"
    assert rules.question_key_from("Ukuran kaos", {"ukuran-kaos"}) == "ukuran-kaos-2"
    assert rules.question_key_from("NIP", set()) == "nip-2"
    assert rules.question_key_from("2 hari?", set()) == "q-2-hari"
    assert rules.question_key_from("Alergi makanan — sebutkan", set()) == "alergi-makanan-sebutkan"
    assert rules.QUESTION_KEY.fullmatch(rules.question_key_from("Ä" * 60, set()))


def test_no_question_key_can_be_a_column_of_the_registrations_export():
    assert set(api.CSV_COLUMNS) <= rules.RESERVED_QUESTION_KEYS


# --- the schemas ----------------------------------------------------------------------------------------

SESSION = {
    "title": "Sosialisasi",
    "starts_at": "2027-03-01T09:00:00+08:00",
    "ends_at": "2027-03-01T12:00:00+08:00",
    "location": "Aula",
    "capacity": 10,
}


def test_a_question_is_stored_with_only_the_fields_of_its_kind():
    loaded = SessionCreateSchema().load(
        {**SESSION, "questions": [{"key": "catatan", "label": "Catatan", "kind": "text"}]}
    )
    assert loaded["questions"] == [
        {"key": "catatan", "label": "Catatan", "kind": "text", "required": False, "max_length": 500}
    ]
    assert SessionCreateSchema().load(SESSION)["questions"] == []


@pytest.mark.parametrize(
    ("question", "field", "rule"),
    [
        ({"key": "Kaos", "label": "Kaos", "kind": "text"}, "questions.0.key", "short name"),
        ({"key": "nip", "label": "NIP lagi", "kind": "text"}, "questions.0.key", "registration field"),
        ({"key": "kaos", "label": "Kaos", "kind": "menu"}, "questions.0.kind", "Must be one of"),
        ({"key": "kaos", "label": "Kaos", "kind": "choice"}, "questions.0.choices", "needs its choices"),
        ({"key": "kaos", "label": "Kaos", "kind": "choice", "choices": ["S", "S"]}, "questions.0.choices", "different"),
        (
            {"key": "kaos", "label": "Kaos", "kind": "text", "choices": ["S", "M"]},
            "questions.0.choices",
            "Only a choice",
        ),
        ({"key": "ok", "label": "Oke", "kind": "yes-no", "max_length": 5}, "questions.0.max_length", "Only a text"),
        ({"key": "kaos", "label": "Kaos\nL", "kind": "text"}, "questions.0.label", "one line"),
    ],
    ids=[
        "key-case",
        "key-reserved",
        "kind",
        "no-choices",
        "same-choice",
        "text-choices",
        "yes-no-length",
        "label-lines",
    ],
)
def test_a_bad_question_is_refused_naming_its_index_and_field(question, field, rule):
    with pytest.raises(ValidationError) as refused:
        SessionCreateSchema().load({**SESSION, "questions": [question]})
    assert rule in " ".join(refused.value.messages[field])


def test_two_questions_with_one_key_or_too_many_questions_are_refused():
    twice = [{"key": "a", "label": "Satu", "kind": "text"}, {"key": "a", "label": "Dua", "kind": "yes-no"}]
    with pytest.raises(ValidationError) as refused:
        SessionChangeSchema().load({"questions": twice})
    assert refused.value.messages == {"questions": ["The key a is used by two questions; each needs its own."]}
    many = [{"key": f"q{i}", "label": f"Soal {i}", "kind": "text"} for i in range(rules.MAX_QUESTIONS + 1)]
    with pytest.raises(ValidationError) as refused:
        SessionChangeSchema().load({"questions": many})
    assert "questions" in refused.value.messages


def test_answers_that_are_not_text_or_booleans_are_refused_by_the_schema_before_any_lock():
    with pytest.raises(ValidationError) as refused:
        ParticipantSchema().load({**participant(1), "answers": {"kaos": 3, "lain": ["x"], "x" * 41: "?"}})
    assert set(refused.value.messages) == {"answers.kaos", "answers.lain", "answers." + "x" * 40 + "…"}
    with pytest.raises(ValidationError) as refused:
        ParticipantSchema().load({**participant(1), "answers": ["M"]})
    assert "answers" in refused.value.messages
    assert ParticipantSchema().load(participant(1))["answers"] == {}


# --- the API (SQLite) -----------------------------------------------------------------------------------


@pytest.fixture
def organiser(registration_app, mint_token):
    return {"Authorization": "Bearer " + mint_token(registration_app.extensions["labinov"].settings, "organiser")}


def _session_with_questions(client, organiser, questions=QUESTIONS, **extra) -> str:
    starts = datetime.now(UTC) + timedelta(days=7)
    body = {
        **SESSION,
        "starts_at": starts.isoformat(),
        "ends_at": (starts + timedelta(hours=3)).isoformat(),
        "questions": questions,
        **extra,
    }
    response = client.post("/registration/api/v1/sessions", json=body, headers=organiser)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def _register(client, session_id, i, answers):
    return client.post(
        f"/registration/api/v1/sessions/{session_id}/registrations", json={**participant(i), "answers": answers}
    )


def test_the_session_answer_carries_its_questions_for_anyone(registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser)
    public = registration_client.get(f"/registration/api/v1/sessions/{session_id}").get_json()
    assert public["questions"] == [SHIRT, LAPTOP, HOPES]


def test_answers_are_stored_and_shown_to_organisers_not_to_the_public(registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser)
    created = _register(registration_client, session_id, 1, {"kaos": "M", "laptop": True})
    assert created.status_code == 201
    assert created.get_json()["answers"] == {"kaos": "M", "laptop": True}  # the registrant's own answer
    listed = registration_client.get(f"/registration/api/v1/sessions/{session_id}/registrations", headers=organiser)
    assert listed.get_json()[0]["answers"] == {"kaos": "M", "laptop": True}
    public = registration_client.get(f"/registration/api/v1/sessions/{session_id}").get_data(as_text=True)
    assert '"laptop": true' not in public and "answers" not in public
    assert registration_client.get(f"/registration/api/v1/sessions/{session_id}/registrations").status_code == 401


def test_a_refused_answer_is_a_422_naming_answers_key_and_nothing_is_written(registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser)
    refused = _register(registration_client, session_id, 1, {"laptop": True, "lain": "x"})
    assert refused.status_code == 422 and refused.mimetype == "application/problem+json"
    assert refused.get_json()["errors"] == {
        "answers.kaos": ["This question must be answered."],
        "answers.lain": ["The session asks no such question."],
    }
    assert (
        registration_client.get(
            f"/registration/api/v1/sessions/{session_id}/registrations", headers=organiser
        ).get_json()
        == []
    )


def test_the_csv_export_has_a_formula_safe_column_per_question(registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser)
    _register(registration_client, session_id, 1, {"kaos": "L", "laptop": False, "harapan": "=HYPERLINK(1)"})
    _register(registration_client, session_id, 2, {"kaos": "S"})
    exported = registration_client.get(
        f"/registration/api/v1/sessions/{session_id}/registrations.csv", headers=organiser
    )
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True).lstrip("\ufeff"))))
    assert list(rows[0])[-3:] == ["kaos", "laptop", "harapan"]
    assert [(r["kaos"], r["laptop"], r["harapan"]) for r in rows] == [("L", "no", "'=HYPERLINK(1)"), ("S", "", "")]


def test_changing_questions_after_registrations_is_409_naming_why_and_changes_nothing(registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser)
    _register(registration_client, session_id, 1, {"kaos": "M"})
    url = f"/registration/api/v1/sessions/{session_id}"
    refused = registration_client.patch(url, json={"questions": [SHIRT, LAPTOP]}, headers=organiser)
    assert refused.status_code == 409
    assert refused.get_json()["type"].endswith("/questions-in-use")
    assert "harapan cannot be removed" in refused.get_json()["detail"]
    relabelled = {**SHIRT, "label": "Ukuran kaos panitia"}
    allowed = registration_client.patch(url, json={"questions": [relabelled, LAPTOP, HOPES]}, headers=organiser)
    assert allowed.status_code == 200
    assert registration_client.get(url).get_json()["questions"][0]["label"] == "Ukuran kaos panitia"


def test_questions_may_be_changed_freely_before_anyone_registers(registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser)
    url = f"/registration/api/v1/sessions/{session_id}"
    changed = registration_client.patch(url, json={"questions": [{**LAPTOP, "required": True}]}, headers=organiser)
    assert changed.status_code == 200 and changed.get_json()["questions"] == [{**LAPTOP, "required": True}]


def test_the_openapi_document_describes_questions_and_answers(registration_client):
    spec = registration_client.get("/registration/api/v1/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    assert "answers" in schemas["Participant"]["properties"]
    assert "questions" in schemas["SessionCreate"]["properties"]
    assert "answers" in schemas["Registration"]["properties"]
    patch = spec["paths"]["/registration/api/v1/sessions/{session_id}"]["patch"]
    assert "questions-in-use" in patch["responses"]["409"]["description"]


# --- the pages ------------------------------------------------------------------------------------------


def _form(client, session_id: str, **fields) -> object:
    token = csrf_of(client, f"/registration/sessions/{session_id}")
    person = participant(7)
    data = {"csrf_token": token, **{k: person[k] for k in ("name", "nip", "email", "phone", "opd")}, **fields}
    return client.post(f"/registration/sessions/{session_id}", data=data, headers=BROWSER)


def test_the_registration_form_asks_the_questions_with_labels(registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser)
    page = registration_client.get(f"/registration/sessions/{session_id}?lang=en", headers=BROWSER)
    html = page.get_data(as_text=True)
    assert '<label for="f-answers-kaos">Ukuran kaos</label>' in html
    assert '<select id="f-answers-kaos" name="answers.kaos" required' in html
    assert '<legend>Membawa laptop? <span class="muted">(optional)</span></legend>' in html
    assert 'id="f-answers-laptop-yes" name="answers.laptop" value="yes"' in html
    assert 'name="answers.harapan" type="text" value="" maxlength="20"' in html


def test_answers_given_on_the_form_are_stored_with_yes_no_as_booleans(registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser)
    sent = _form(
        registration_client, session_id, **{"answers.kaos": "L", "answers.laptop": "no", "answers.harapan": ""}
    )
    assert sent.status_code == 303
    listed = registration_client.get(f"/registration/api/v1/sessions/{session_id}/registrations", headers=organiser)
    assert listed.get_json()[0]["answers"] == {"kaos": "L", "laptop": False}


def test_a_missing_required_answer_is_shown_inline_with_everything_typed_kept(registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser)
    refused = _form(
        registration_client, session_id, **{"answers.kaos": "", "answers.laptop": "yes", "answers.harapan": "Belajar"}
    )
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert '<span class="error-text" id="e-answers-kaos">Pertanyaan ini wajib dijawab.</span>' in html
    assert 'id="f-answers-laptop-yes" name="answers.laptop" value="yes" checked' in html
    assert 'value="Belajar"' in html and f'value="{participant(7)["nip"]}"' in html


def test_a_bad_field_and_a_missing_answer_are_both_shown_at_once(registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser)
    refused = _form(registration_client, session_id, nip="1985", **{"answers.kaos": ""})
    html = refused.get_data(as_text=True)
    assert 'id="e-nip"' in html and 'id="e-answers-kaos"' in html


@pytest.fixture
def signed_in(registration_app, organiser_account):  # noqa: F811 (the fixture imported above)
    client = registration_app.test_client()
    assert sign_in(client, organiser_account).status_code == 303
    return client


def _session_form(client, path: str, rows: dict[str, str], **fields) -> object:
    token = csrf_of(client, path)
    data = {
        "csrf_token": token,
        "title": "Workshop desain",
        "location": "Aula Bappeda",
        "starts_at": (datetime.now(UTC) + timedelta(days=9)).strftime("%Y-%m-%dT09:00"),
        "ends_at": (datetime.now(UTC) + timedelta(days=9)).strftime("%Y-%m-%dT12:00"),
        "capacity": "20",
        "action": "publish",
        **{f"q-{row}-{name}": "" for row in range(3) for name in ("label", "key", "kind", "choices", "max_length")},
        **rows,
        **fields,
    }
    return client.post(path, data=data, headers=BROWSER)


def test_an_organiser_defines_questions_on_the_session_form_without_script(signed_in, registration_client, organiser):
    new = signed_in.get("/registration/admin/sessions/new", headers=BROWSER).get_data(as_text=True)
    assert 'name="q-2-label"' in new and 'name="q-3-label"' not in new  # three empty rows
    rows = {
        "q-0-label": "Ukuran kaos",
        "q-0-kind": "choice",
        "q-0-choices": "S\r\nM\r\n\r\nL",
        "q-0-required": "on",
        "q-1-label": "Membawa laptop?",
        "q-1-kind": "yes-no",
        "q-2-label": "",
    }
    saved = _session_form(signed_in, "/registration/admin/sessions/new", rows)
    assert saved.status_code == 303
    session_id = saved.headers["Location"].rsplit("/", 1)[1]
    questions = registration_client.get(f"/registration/api/v1/sessions/{session_id}").get_json()["questions"]
    assert questions == [
        {"key": "ukuran-kaos", "label": "Ukuran kaos", "kind": "choice", "required": True, "choices": ["S", "M", "L"]},
        {"key": "membawa-laptop", "label": "Membawa laptop?", "kind": "yes-no", "required": False},
    ]
    edit = signed_in.get(f"/registration/admin/sessions/{session_id}", headers=BROWSER).get_data(as_text=True)
    assert 'name="q-0-key" type="text" value="ukuran-kaos"' in edit and 'name="q-4-label"' in edit


def test_a_bad_question_on_the_form_is_shown_at_its_row(signed_in):
    rows = {"q-0-label": "", "q-1-label": "Pilih sesi", "q-1-kind": "choice", "q-1-choices": ""}
    refused = _session_form(signed_in, "/registration/admin/sessions/new", rows)
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert re.search(r'id="e-q-1-choices">[^<]+</span>', html), "the refusal belongs beside row 2's choices"
    assert 'value="Pilih sesi"' in html


def test_removing_a_question_after_registrations_on_the_page_says_why(signed_in, registration_client, organiser):
    session_id = _session_with_questions(registration_client, organiser, questions=[LAPTOP])
    _register(registration_client, session_id, 1, {"laptop": True})
    path = f"/registration/admin/sessions/{session_id}"
    refused = _session_form(signed_in, path, {"q-0-label": "", "q-0-key": "laptop", "q-0-kind": "yes-no"})
    assert refused.status_code == 409
    assert "pertanyaan laptop tidak dapat dihapus" in refused.get_data(as_text=True)


def test_a_page_string_of_the_questions_is_translated(registration_app):
    from services.registration.pages import translate_refusal

    with registration_app.test_request_context("/registration/"):
        for message in (
            rules.ANSWER_REQUIRED,
            rules.ANSWER_NOT_YES_NO,
            rules.question_change_refusal([LAPTOP], [], registered=True),
            "The key a is used by two questions; each needs its own.",
        ):
            assert translate_refusal(message) != message
