"""The evaluators' and organisers' evaluation pages: no JavaScript, inline refusals, save and revise, and the
results page's server-drawn chart."""

from __future__ import annotations

import re

from shared.pages import AUTH_COOKIE
from tests.unit.test_evaluation_api import SCORES, World

BROWSER = {"Accept": "text/html"}


def page_client(world: World, token: str):
    client = world.app.test_client()
    client.set_cookie(AUTH_COOKIE, token)
    return client


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def a_round_with_one_assignment(world: World):
    team = world.team(1, "Dinas Kesehatan")
    proposal_id = world.submitted_proposal(team, "Puskesmas Keliling")
    _account, evaluator = world.evaluator(1, "Bappeda")
    _other_account, other = world.evaluator(2, "Bappeda")
    round_id = world.call(
        "POST",
        "/rounds",
        world.organiser,
        {
            "name": "Desk",
            "programme_id": "programme-2027",
            "kind": "rubric",
            "evaluators_per_proposal": 1,
            "blind": True,
        },
    ).get_json()["id"]
    made = world.call(
        "POST",
        f"/rounds/{round_id}/assignments",
        world.organiser,
        {"proposal_id": proposal_id, "evaluator_id": "evaluator-1"},
    ).get_json()
    return round_id, made[0]["id"], evaluator, other


def test_an_evaluator_scores_on_the_page_sees_refusals_beside_the_fields_and_revises(app_for):
    world = World(app_for("evaluation"))
    _round_id, assignment_id, evaluator, _other = a_round_with_one_assignment(world)
    client = page_client(world, evaluator)
    listing = client.get("/evaluation/assignments", headers=BROWSER).get_data(as_text=True)
    assert "Puskesmas Keliling" in listing and "Belum dinilai" in listing
    page = client.get(f"/evaluation/assignments/{assignment_id}", headers=BROWSER).get_data(as_text=True)
    assert "Kebaruan" in page and "Sari Wulandari" not in page  # blind: no team members
    assert "<script" not in page
    form = {"csrf_token": csrf_of(page), **{f"score-{k}": str(v) for k, v in SCORES.items()}, "comment": "Baik"}
    refused = client.post(
        f"/evaluation/assignments/{assignment_id}", data={**form, "score-novelty": ""}, headers=BROWSER
    )
    assert refused.status_code == 422
    text = refused.get_data(as_text=True)
    assert 'id="e-novelty"' in text and "Belum diisi" in text and ">Baik<" in text  # what was typed stays
    saved = client.post(f"/evaluation/assignments/{assignment_id}", data=form, headers=BROWSER)
    assert saved.status_code == 303
    again = client.get(saved.headers["Location"], headers=BROWSER).get_data(as_text=True)
    assert "Penilaian Anda tersimpan" in again and "Simpan revisi" in again and 'value="8"' in again


def test_another_evaluator_gets_a_403_page_for_an_assignment_not_theirs(app_for):
    world = World(app_for("evaluation"))
    _round_id, assignment_id, _evaluator, other = a_round_with_one_assignment(world)
    response = page_client(world, other).get(f"/evaluation/assignments/{assignment_id}", headers=BROWSER)
    assert response.status_code == 403 and "Puskesmas" not in response.get_data(as_text=True)


def test_the_results_page_draws_the_distribution_as_svg_without_script(app_for):
    world = World(app_for("evaluation"))
    round_id, assignment_id, evaluator, _other = a_round_with_one_assignment(world)
    world.call("PUT", f"/assignments/{assignment_id}/evaluation", evaluator, {"scores": SCORES})
    client = page_client(world, world.organiser)
    page = client.get(f"/evaluation/rounds/{round_id}/results", headers=BROWSER).get_data(as_text=True)
    assert "Puskesmas Keliling" in page and page.count("<svg") == 5 and "<script" not in page
    assert (
        page_client(world, evaluator).get(f"/evaluation/rounds/{round_id}/results", headers=BROWSER).status_code == 403
    )
    csv = client.get(f"/evaluation/rounds/{round_id}/results.csv")
    assert csv.get_data().startswith("\ufeff".encode())


def test_a_score_out_of_scale_is_refused_beside_it_with_the_scale_in_the_visitor_s_language(app_for):
    world = World(app_for("evaluation"))
    _round_id, assignment_id, evaluator, _other = a_round_with_one_assignment(world)
    client = page_client(world, evaluator)
    page = client.get(f"/evaluation/assignments/{assignment_id}", headers=BROWSER).get_data(as_text=True)
    assert "novalidate" in page  # the server's refusal, in the page's language, not the browser's bubble
    form = {"csrf_token": csrf_of(page), **{f"score-{k}": str(v) for k, v in SCORES.items()}, "score-novelty": "11"}
    refused = client.post(f"/evaluation/assignments/{assignment_id}", data=form, headers=BROWSER)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert '<span class="error-text" id="e-novelty">Harus antara 1 dan 10.</span>' in text and 'value="11"' in text
    client.set_cookie("labinov_lang", "en")
    english = client.post(f"/evaluation/assignments/{assignment_id}", data=form, headers=BROWSER)
    assert "Must be between 1 and 10." in english.get_data(as_text=True)


def test_every_evaluation_refusal_with_values_is_translated_keeping_its_numbers(app_for):
    from services.evaluation import rules
    from services.evaluation.pages import translate_refusal

    app = app_for("evaluation")
    long_sections = {name: "kata " * (limit + 31) for name, limit in rules.SECTION_LIMITS.items()}
    refusals = [
        *(m for found in rules.section_problems(long_sections, complete=True).values() for m in found),
        *(m for found in rules.section_problems({}, complete=True).values() for m in found),
        *(
            m
            for found in rules.evaluation_problems(
                "rubric", rules.DEFAULT_RUBRIC, {"novelty": 0, "benefit": 10.5, "charm": 3}
            ).values()
            for m in found
        ),
        *(
            m
            for found in rules.evaluation_problems("checklist", rules.DEFAULT_CHECKLIST, {"implemented": 2}).values()
            for m in found
        ),
        rules.submission_refusal(None),
        rules.submission_refusal("cancelled"),
    ]
    with app.test_request_context("/evaluation/?lang=id"):
        translated = {message: translate_refusal(message) for message in refusals}
    untranslated = [message for message, text in translated.items() if text == message]
    assert untranslated == []
    assert translated["At most 200 words; this has 231."] == "Paling banyak 200 kata; isian ini 231 kata."
    assert translated["Required before submitting (at most 600 words)."] == (
        "Wajib diisi sebelum dikirim (paling banyak 600 kata)."
    )
    assert translated["Must be between 1 and 10."] == "Harus antara 1 dan 10."
    assert translated[
        "Unknown criterion; this round's are: novelty, effectiveness, benefit, replicability, sustainability."
    ] == ("Kriteria tidak dikenal; kriteria babak ini: novelty, effectiveness, benefit, replicability, sustainability.")
    with app.test_request_context("/evaluation/?lang=en"):
        assert translate_refusal("At most 200 words; this has 231.") == "At most 200 words; this has 231."


def test_a_comment_typed_on_the_form_is_stored_with_the_line_breaks_an_api_client_would_send(app_for):
    world = World(app_for("evaluation"))
    _round_id, assignment_id, evaluator, _other = a_round_with_one_assignment(world)
    client = page_client(world, evaluator)
    page = client.get(f"/evaluation/assignments/{assignment_id}", headers=BROWSER).get_data(as_text=True)
    form = {
        "csrf_token": csrf_of(page),
        **{f"score-{k}": str(v) for k, v in SCORES.items()},
        "comment": "Menjangkau desa;\r\nperlu data biaya.",  # a browser sends a textarea's lines as CRLF
    }
    assert client.post(f"/evaluation/assignments/{assignment_id}", data=form, headers=BROWSER).status_code == 303
    [mine] = world.call("GET", "/assignments", evaluator).get_json()
    assert mine["evaluation"]["comment"] == "Menjangkau desa;\nperlu data biaya."
