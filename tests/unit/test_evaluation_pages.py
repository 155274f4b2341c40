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
