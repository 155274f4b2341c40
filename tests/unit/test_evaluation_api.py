"""The evaluation API through the real app on SQLite: proposals, rounds, assignment, scoring, results,
publication and objections — and who may see what (no evaluator ever sees another's scores)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from services.evaluation.handlers import HANDLERS
from services.evaluation.tables import Round
from shared.events import make_event, parse_event
from shared.tokens import Principal, TokenIssuer, load_private_key_pem

API = "/evaluation/api/v1"
WORDS = "kata " * 20
SECTIONS = {
    name: WORDS
    for name in (
        "summary",
        "background",
        "novelty",
        "implementation",
        "significance",
        "adaptability",
        "resources",
        "sustainability",
    )
}
SCORES = {"novelty": 8, "effectiveness": 7, "benefit": 9, "replicability": 6, "sustainability": 7}


class World:
    """The evaluation app, fed with registration's events as its worker would be, and tokens to call it."""

    def __init__(self, app) -> None:
        self.app = app
        self.client = app.test_client()
        self.runtime = app.extensions["labinov"]
        self.issuer = TokenIssuer(load_private_key_pem(self.runtime.settings), 3600)
        self.organiser = self.token("organiser-1", "organiser", "panitia@kaltaraprov.go.id")

    def feed(self, event_type: str, data: dict) -> None:
        event = parse_event(make_event(event_type, data, source="/registration", correlation_id="test"))
        with self.runtime.unit_of_work() as uow:
            HANDLERS[event_type](uow, event)
            uow.commit()

    def token(self, subject: str, role: str, email: str = "") -> str:
        return self.issuer.issue(Principal(subject, email, role))

    def team(self, number: int, opd: str, status: str = "confirmed") -> str:
        registration_id = f"00000000-0000-4000-8000-{number:012d}"
        self.feed(
            f"registration.{status}",
            {
                "registration_id": registration_id,
                "session_id": "7d1c1a8e-0000-4000-8000-0000000000aa",
                "programme_id": "programme-2027",
                "session_title": "Sosialisasi",
                "session_starts_at": datetime(2027, 3, 1, 1, tzinfo=UTC),
                "session_location": "Tanjung Selor",
                "status": status,
                "name": f"Ketua Tim {number}",
                "nip": f"19850315201001{number:04d}",
                "email": f"tim{number}@kaltaraprov.go.id",
                "phone": "+6281234567890",
                "opd": opd,
            },
        )
        return self.token(registration_id, "participant")

    def evaluator(self, number: int, opd: str | None) -> tuple[str, str]:
        account_id = f"evaluator-{number}"
        self.feed(
            "account.created",
            {
                "account_id": account_id,
                "email": f"penilai{number}@kaltaraprov.go.id",
                "name": f"Penilai {number}",
                "role": "evaluator",
                "opd": opd,
            },
        )
        return account_id, self.token(account_id, "evaluator", f"penilai{number}@kaltaraprov.go.id")

    def call(self, method: str, path: str, token: str | None = None, body=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.open(API + path, method=method, json=body, headers=headers)

    def submitted_proposal(self, team_token: str, title: str = "Layanan Keliling") -> str:
        created = self.call("POST", "/proposals", team_token, proposal_body(title))
        assert created.status_code == 201, created.get_json()
        proposal_id = created.get_json()["id"]
        submitted = self.call("POST", f"/proposals/{proposal_id}/submit", team_token)
        assert submitted.status_code == 200, submitted.get_json()
        return proposal_id

    def outbox(self, event_type: str) -> list[dict]:
        with self.runtime.reading() as uow:
            rows = uow.session.execute(
                select(self.runtime.outbox.c.payload).where(self.runtime.outbox.c.event_type == event_type)
            )
            return [json.loads(payload) for (payload,) in rows]


def proposal_body(title: str = "Layanan Keliling", **overrides) -> dict:
    body = {
        "title": title,
        "category": "Pelayanan publik",
        "started_on": "2026-01-15",
        "members": [{"name": "Sari Wulandari", "position": "Analis Kebijakan"}],
        "sections": SECTIONS,
        "links": ["https://kaltaraprov.go.id/inovasi"],
    }
    body.update(overrides)
    return body


@pytest.fixture
def world(app_for) -> World:
    return World(app_for("evaluation"))


# --- proposals -------------------------------------------------------------------------------------------


def test_a_team_lead_creates_a_draft_edits_it_and_submits_it(world):
    token = world.team(1, "Dinas Kesehatan")
    created = world.call("POST", "/proposals", token, proposal_body(sections={"summary": "Ringkas saja."}))
    assert created.status_code == 201
    proposal = created.get_json()
    assert proposal["status"] == "draft" and proposal["opd"] == "Dinas Kesehatan"
    refused = world.call("POST", f"/proposals/{proposal['id']}/submit", token)
    assert refused.status_code == 422
    assert refused.get_json()["errors"]["sections.background"] == ["Required before submitting (at most 300 words)."]
    edited = world.call("PATCH", f"/proposals/{proposal['id']}", token, {"sections": SECTIONS})
    assert edited.status_code == 200 and edited.get_json()["word_counts"]["summary"] == 20
    submitted = world.call("POST", f"/proposals/{proposal['id']}/submit", token)
    assert submitted.status_code == 200 and submitted.get_json()["status"] == "submitted"
    assert world.call("PATCH", f"/proposals/{proposal['id']}", token, {"title": "Baru"}).status_code == 409
    [event] = world.outbox("proposal.submitted")
    assert event["data"]["proposal_id"] == proposal["id"] and event["data"]["team_email"] == "tim1@kaltaraprov.go.id"


def test_an_over_long_section_is_refused_naming_it_and_its_limit(world):
    token = world.team(1, "Dinas Kesehatan")
    response = world.call("POST", "/proposals", token, proposal_body(sections={"summary": "kata " * 201}))
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"sections.summary": ["At most 200 words; this has 201."]}


def test_another_team_s_token_cannot_read_or_edit_a_proposal(world):
    mine = world.team(1, "Dinas Kesehatan")
    theirs = world.team(2, "Dinas Pendidikan")
    proposal_id = world.submitted_proposal(mine)
    assert world.call("GET", f"/proposals/{proposal_id}", mine).status_code == 200
    for method, path, body in (
        ("GET", f"/proposals/{proposal_id}", None),
        ("PATCH", f"/proposals/{proposal_id}", {"title": "x"}),
        ("POST", f"/proposals/{proposal_id}/submit", None),
    ):
        response = world.call(method, path, theirs, body)
        assert response.status_code == 404, (method, path)
        assert "Layanan" not in response.get_data(as_text=True)


def test_a_cancelled_registration_s_token_cannot_submit(world):
    token = world.team(1, "Dinas Kesehatan")
    created = world.call("POST", "/proposals", token, proposal_body()).get_json()
    world.team(1, "Dinas Kesehatan", status="cancelled")
    assert world.call("POST", f"/proposals/{created['id']}/submit", token).status_code == 403
    assert world.call("POST", "/proposals", token, proposal_body()).status_code == 403
    world.team(1, "Dinas Kesehatan")  # a late confirmed event does not bring a cancelled registration back
    assert world.call("POST", "/proposals", token, proposal_body()).status_code == 403


def test_a_registration_this_service_has_not_heard_of_is_told_to_try_again(world):
    stranger = world.token("00000000-0000-4000-8000-999999999999", "participant")
    response = world.call("POST", "/proposals", stranger, proposal_body())
    assert response.status_code == 409 and "not heard" in response.get_json()["detail"]


def test_the_evaluators_are_known_from_account_events(world):
    world.evaluator(1, "Dinas Kesehatan")
    world.feed(
        "account.changed",
        {
            "account_id": "evaluator-1",
            "email": "baru@kaltaraprov.go.id",
            "name": "Penilai Satu",
            "role": "evaluator",
            "opd": "Bappeda",
        },
    )
    world.feed("account.created", {"account_id": "org-2", "email": "org@kaltaraprov.go.id", "role": "organiser"})
    listed = world.call("GET", "/evaluators", world.organiser).get_json()
    assert listed == [
        {"id": "evaluator-1", "email": "baru@kaltaraprov.go.id", "name": "Penilai Satu", "opd": "Bappeda"}
    ]


# --- a whole round ----------------------------------------------------------------------------------------------


@pytest.fixture
def open_round(world):
    """Three teams of different OPDs, four evaluators (one of Dinkes), a desk round, auto-assigned."""
    teams = {
        "dinkes": world.team(1, "Dinas Kesehatan"),
        "disdik": world.team(2, "Dinas Pendidikan"),
        "dishub": world.team(3, "Dinas Perhubungan"),
    }
    proposals = {name: world.submitted_proposal(token, f"Inovasi {name}") for name, token in teams.items()}
    evaluators = {
        n: world.evaluator(n, opd) for n, opd in ((1, "Dinas Kesehatan"), (2, "Bappeda"), (3, None), (4, "Bappeda"))
    }
    created = world.call(
        "POST",
        "/rounds",
        world.organiser,
        {
            "name": "Penilaian desk",
            "programme_id": "programme-2027",
            "kind": "rubric",
            "evaluators_per_proposal": 2,
            "blind": True,
            "advancement": {"rule": "top_n", "n": 2},
            "objection_days": 3,
        },
    )
    assert created.status_code == 201, created.get_json()
    round_ = created.get_json()
    assert round_["state"] == "open" and round_["proposals"] == 3
    assert [c["key"] for c in round_["criteria"]] == list(SCORES)
    assigned = world.call("POST", f"/rounds/{round_['id']}/assignments", world.organiser, {"auto": True})
    assert assigned.status_code == 201, assigned.get_json()
    return world, round_["id"], teams, proposals, evaluators, assigned.get_json()


def assignments_of(world, token) -> list[dict]:
    return world.call("GET", "/assignments", token).get_json()


def test_auto_assignment_gives_each_proposal_two_evaluators_of_other_opds_within_one_of_each_other(open_round):
    world, round_id, _teams, proposals, evaluators, made = open_round
    assert len(made) == 6
    per_proposal = {}
    for a in made:
        per_proposal.setdefault(a["proposal"]["id"], []).append(a["evaluator_id"])
    assert sorted(map(len, per_proposal.values())) == [2, 2, 2]
    assert "evaluator-1" not in per_proposal[proposals["dinkes"]]
    loads = [sum(a["evaluator_id"] == f"evaluator-{n}" for a in made) for n in evaluators]
    assert max(loads) - min(loads) <= 1
    assert len(world.outbox("evaluation.assigned")) == 6
    again = world.call("POST", f"/rounds/{round_id}/assignments", world.organiser, {"auto": True})
    assert again.status_code == 201 and again.get_json() == []  # nothing left to assign


def test_an_evaluator_reads_an_assigned_proposal_without_members_in_a_blind_round_and_nothing_else(open_round):
    world, _round_id, _teams, proposals, evaluators, _made = open_round
    _id, token = evaluators[2]
    mine = {a["proposal"]["id"] for a in assignments_of(world, token)}
    for proposal_id in proposals.values():
        response = world.call("GET", f"/proposals/{proposal_id}", token)
        if proposal_id in mine:
            assert response.status_code == 200 and "members" not in response.get_json()
        else:
            assert response.status_code == 404


def test_scores_are_refused_naming_the_field(open_round):
    world, _round_id, _teams, _proposals, evaluators, _made = open_round
    _id, token = evaluators[2]
    assignment = assignments_of(world, token)[0]["id"]
    path = f"/assignments/{assignment}/evaluation"
    out_of_scale = world.call("PUT", path, token, {"scores": {**SCORES, "novelty": 11}})
    assert out_of_scale.status_code == 422
    assert out_of_scale.get_json()["errors"] == {"scores.novelty": ["Must be between 1 and 10."]}
    unknown = world.call("PUT", path, token, {"scores": {**SCORES, "charm": 5}})
    assert list(unknown.get_json()["errors"]) == ["scores.charm"]
    missing = dict(SCORES)
    del missing["benefit"]
    assert list(world.call("PUT", path, token, {"scores": missing}).get_json()["errors"]) == ["scores.benefit"]
    other_token = (
        evaluators[3][1]
        if assignment not in {a["id"] for a in assignments_of(world, evaluators[3][1])}
        else evaluators[4][1]
    )
    assert world.call("PUT", path, other_token, {"scores": SCORES}).status_code == 403


def score_everything(world, evaluators) -> None:
    for _account, token in evaluators.values():
        for i, assignment in enumerate(assignments_of(world, token)):
            scores = {key: min(10, value + i) for key, value in SCORES.items()}
            response = world.call(
                "PUT", f"/assignments/{assignment['id']}/evaluation", token, {"scores": scores, "comment": "Baik."}
            )
            assert response.status_code == 200, response.get_json()


def test_no_evaluator_sees_another_evaluator_s_scores_anywhere_while_the_round_is_open(open_round):
    world, round_id, _teams, proposals, evaluators, _made = open_round
    score_everything(world, evaluators)
    for account_id, token in evaluators.values():
        for assignment in assignments_of(world, token):
            evaluation = assignment["evaluation"]
            assert assignment["evaluator_id"] == account_id and evaluation["revision"] == 1
        for proposal_id in proposals.values():
            body = world.call("GET", f"/proposals/{proposal_id}", token).get_data(as_text=True)
            assert "scores" not in body and "total" not in body and "mean" not in body
        for path in (f"/rounds/{round_id}/results", f"/rounds/{round_id}", "/proposals", f"/rounds/{round_id}/entries"):
            assert world.call("GET", path, token).status_code == 403
    for event in world.outbox("evaluation.submitted"):
        assert set(event["data"]) == {
            "assignment_id",
            "round_id",
            "proposal_id",
            "evaluator_id",
            "evaluator_email",
            "revision",
            "submitted_at",
        }
    for event in world.outbox("evaluation.assigned"):
        assert "score" not in json.dumps(event["data"])


def test_a_revision_is_stored_until_the_round_closes_and_refused_after(open_round):
    world, round_id, _teams, _proposals, evaluators, _made = open_round
    _id, token = evaluators[2]
    assignment = assignments_of(world, token)[0]["id"]
    path = f"/assignments/{assignment}/evaluation"
    assert world.call("PUT", path, token, {"scores": SCORES}).get_json()["revision"] == 1
    revised = world.call("PUT", path, token, {"scores": {**SCORES, "novelty": 10}, "comment": "Direvisi."})
    assert revised.get_json()["revision"] == 2 and revised.get_json()["scores"]["novelty"] == 10
    assert world.call("POST", f"/rounds/{round_id}/close", world.organiser).status_code == 200
    closed = world.call("PUT", path, token, {"scores": SCORES})
    assert closed.status_code == 409 and "closed" in closed.get_json()["detail"]


def test_results_are_computed_published_and_objected_to(open_round):
    world, round_id, teams, proposals, evaluators, _made = open_round
    score_everything(world, evaluators)
    results = world.call("GET", f"/rounds/{round_id}/results", world.organiser).get_json()
    assert set(results) == {"ranking", "agreement", "evaluators", "flagged"}
    assert {r["proposal_id"] for r in results["ranking"]} == set(proposals.values())
    assert [r["rank"] for r in results["ranking"]] == [1, 2, 3]
    assert all(r["evaluations"] == 2 for r in results["ranking"])
    assert "krippendorff_alpha_interval" in results["agreement"]
    assert world.call("POST", f"/rounds/{round_id}/publish", world.organiser).status_code == 409  # still open
    closed = world.call("POST", f"/rounds/{round_id}/close", world.organiser).get_json()
    assert closed["state"] == "closed"
    entries = world.call("GET", f"/rounds/{round_id}/entries", world.organiser).get_json()
    assert [e["advanced"] for e in entries] == [True, True, False]
    assert entries[2]["reason"] == "Ranked 3 of 3; the first 2 advance."
    published = world.call("POST", f"/rounds/{round_id}/publish", world.organiser).get_json()
    assert published["provisional_at"] and published["final_at"] is None and published["objection_deadline"]
    events = world.outbox("results.published")
    assert len(events) == 3 and {e["data"]["final"] for e in events} == {False}
    # the team reads its own result, and objects
    last = next(p for p in proposals.values() if p == entries[2]["proposal_id"])
    team = next(t for name, t in teams.items() if proposals[name] == last)
    own = world.call("GET", f"/proposals/{last}", team).get_json()
    assert own["results"][0]["advanced"] is False and own["results"][0]["reason"].startswith("Ranked 3")
    objection = world.call(
        "POST", f"/proposals/{last}/objections", team, {"round_id": round_id, "text": "Mohon ditinjau."}
    )
    assert objection.status_code == 201
    other_team = next(t for t in teams.values() if t != team)
    assert (
        world.call(
            "POST", f"/proposals/{last}/objections", other_team, {"round_id": round_id, "text": "Bukan milik kami."}
        ).status_code
        == 404
    )
    # the window has to end, and the objection be answered, before the final list
    assert world.call("POST", f"/rounds/{round_id}/publish", world.organiser).status_code == 409
    with world.runtime.unit_of_work() as uow:
        uow.session.execute(update(Round).where(Round.id == round_id).values(objection_deadline=datetime.now(UTC)))
        uow.commit()
    assert "await an answer" in world.call("POST", f"/rounds/{round_id}/publish", world.organiser).get_json()["detail"]
    answered = world.call(
        "POST",
        f"/objections/{objection.get_json()['id']}/answer",
        world.organiser,
        {"decision": "rejected", "reason": "Penilaian sesuai rubrik."},
    )
    assert answered.get_json()["state"] == "rejected"
    [told] = world.outbox("objection.answered")  # the team hears the answer, once
    assert told["subject"] == last and told["data"]["proposal_id"] == last
    assert (told["data"]["decision"], told["data"]["answer"]) == ("rejected", "Penilaian sesuai rubrik.")
    assert told["data"]["team_email"] and told["data"]["round_name"]
    again = world.call(
        "POST",
        f"/objections/{objection.get_json()['id']}/answer",
        world.organiser,
        {"decision": "upheld", "reason": "Ditinjau ulang."},
    )
    assert again.status_code == 409 and len(world.outbox("objection.answered")) == 1
    final = world.call("POST", f"/rounds/{round_id}/publish", world.organiser)
    assert final.status_code == 200 and final.get_json()["final_at"]
    assert {e["data"]["final"] for e in world.outbox("results.published")} == {False, True}


def test_the_results_csv_has_a_bom_and_neutralised_formulas(world):
    token = world.team(1, "Dinas Kesehatan")
    world.submitted_proposal(token, title='=HYPERLINK("http://x")')
    world.evaluator(1, "Bappeda")
    round_id = world.call(
        "POST",
        "/rounds",
        world.organiser,
        {"name": "Desk", "programme_id": "programme-2027", "kind": "rubric", "evaluators_per_proposal": 1},
    ).get_json()["id"]
    response = world.call("GET", f"/rounds/{round_id}/results.csv", world.organiser)
    text = response.get_data().decode("utf-8")
    assert response.mimetype == "text/csv" and text.startswith("\ufeffrank,proposal_id,title")
    assert "'=HYPERLINK" in text


def test_an_infeasible_assignment_names_the_proposal_and_assigns_nothing(world):
    token = world.team(1, "Dinas Kesehatan")
    proposal_id = world.submitted_proposal(token)
    world.evaluator(1, "Dinas Kesehatan")
    _account, conflicted = world.evaluator(2, "Bappeda")
    assert (
        world.call(
            "POST", "/conflicts", conflicted, {"proposal_id": proposal_id, "reason": "Saudara ketua tim."}
        ).status_code
        == 201
    )
    round_id = world.call(
        "POST",
        "/rounds",
        world.organiser,
        {"name": "Desk", "programme_id": "programme-2027", "kind": "rubric", "evaluators_per_proposal": 1},
    ).get_json()["id"]
    response = world.call("POST", f"/rounds/{round_id}/assignments", world.organiser, {"auto": True})
    assert response.status_code == 422
    assert response.get_json()["errors"] == {
        f"proposals.{proposal_id}": [
            "Lacks 1 evaluator(s). Only 0 of 2 evaluators may take it, 1 are needed: 1 are of its OPD, "
            "1 declared a conflict, 0 have it already."
        ]
    }
    by_hand = world.call(
        "POST",
        f"/rounds/{round_id}/assignments",
        world.organiser,
        {"proposal_id": proposal_id, "evaluator_id": "evaluator-2"},
    )
    assert by_hand.status_code == 422 and "conflict" in by_hand.get_json()["errors"]["evaluator_id"][0]
    assert world.outbox("evaluation.assigned") == []


def test_a_later_round_takes_only_the_proposals_that_advanced(open_round):
    world, round_id, _teams, _proposals, evaluators, _made = open_round
    score_everything(world, evaluators)
    world.call("POST", f"/rounds/{round_id}/close", world.organiser)
    second = world.call(
        "POST",
        "/rounds",
        world.organiser,
        {"name": "Presentasi", "programme_id": "programme-2027", "kind": "rubric", "evaluators_per_proposal": 1},
    ).get_json()
    assert second["sequence"] == 2 and second["proposals"] == 2


# --- never leak: every route an evaluator can reach, every event --------------------------------------------

#: What the other evaluator gave (distinctive numbers and words), and the panel's mean with it.
OTHER_SCORES = dict.fromkeys(SCORES, 3.25)
OTHER_COMMENT = "RAHASIA-PENILAI-DUA"
LEAK_MARKERS = ("3.25", OTHER_COMMENT, "6.125", "6.12", "6.13")  # 3.25 alone, and (9 + 3.25) / 2


def test_no_route_an_evaluator_can_reach_and_no_event_shows_another_evaluator_s_scores_while_open(world):
    from shared.pages import AUTH_COOKIE

    team = world.team(1, "Dinas Kesehatan")
    proposal_id = world.submitted_proposal(team, "Puskesmas Keliling")
    (mine_id, mine), (_other_id, other) = world.evaluator(1, "Bappeda"), world.evaluator(2, "Bappeda")
    round_id = world.call(
        "POST",
        "/rounds",
        world.organiser,
        {"name": "Desk", "programme_id": "programme-2027", "kind": "rubric", "evaluators_per_proposal": 2},
    ).get_json()["id"]
    assert world.call("POST", f"/rounds/{round_id}/assignments", world.organiser, {"auto": True}).status_code == 201
    [own] = assignments_of(world, mine)
    [others] = assignments_of(world, other)
    path = "/assignments/{}/evaluation"
    assert world.call("PUT", path.format(others["id"]), other, {"scores": OTHER_SCORES, "comment": OTHER_COMMENT})
    assert world.call("PUT", path.format(own["id"]), mine, {"scores": dict.fromkeys(SCORES, 9)}).status_code == 200

    values = {
        "round_id": round_id,
        "proposal_id": proposal_id,
        "objection_id": "00000000-0000-4000-8000-000000000000",
        "path:filename": "labinov.css",
    }
    answers = []
    for rule in world.app.url_map.iter_rules():
        if not rule.rule.startswith("/evaluation/") or "GET" not in rule.methods:
            continue
        if rule.rule.startswith("/evaluation/health/"):  # a fixed answer about the service (and a broker timeout)
            continue
        for assignment_id in (own["id"], others["id"]):
            url = rule.rule
            for name, value in {**values, "assignment_id": assignment_id}.items():
                url = url.replace(f"<{name}>", value)
            assert "<" not in url, f"a route with an argument this test does not fill: {rule.rule}"
            answers.append((url, world.client.get(url, headers={"Authorization": f"Bearer {mine}"})))
            page = world.app.test_client()
            page.set_cookie(AUTH_COOKIE, mine)
            answers.append((url, page.get(url, headers={"Accept": "text/html"})))
    # the evaluator's writes and their refusals: another's assignment, a score out of scale, a conflict
    answers.append(("PUT other's", world.call("PUT", path.format(others["id"]), mine, {"scores": SCORES})))
    answers.append(("PUT out of scale", world.call("PUT", path.format(own["id"]), mine, {"scores": {"novelty": 99}})))
    answers.append(("POST conflict", world.call("POST", "/conflicts", mine, {"proposal_id": "nope", "reason": "x"})))
    assert len(answers) > 40
    for url, response in answers:
        body = response.get_data(as_text=True)
        assert not [m for m in LEAK_MARKERS if m in body], f"{url} ({response.status_code}) shows another's scores"
    assert world.call("GET", f"/rounds/{round_id}/results", world.organiser).get_json()["ranking"][0]["mean"] == 6.125
    for event_type in ("evaluation.assigned", "evaluation.submitted", "proposal.submitted"):
        for event in world.outbox(event_type):
            text = json.dumps(event["data"])
            assert not [m for m in (*LEAK_MARKERS, "9.0", "scores", "total") if m in text], event
    assert mine_id != _other_id
