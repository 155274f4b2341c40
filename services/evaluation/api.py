"""The evaluation JSON API (``/evaluation/api/v1``): thin adapters over ``domain``.

Who commits: each view opens its unit of work and commits it once the domain operation has added to it.

Who may call what (``@requires`` on each view):

- organisers: ``GET /participants``, ``GET /evaluators``, ``GET /proposals``; rounds — ``POST /rounds``,
  ``GET /rounds``, ``GET /rounds/{id}``, ``POST /rounds/{id}/close``, ``POST /rounds/{id}/assignments``,
  ``GET /rounds/{id}/entries``, ``POST /rounds/{id}/decisions``, ``GET /rounds/{id}/results`` (+ ``.csv``),
  ``POST /rounds/{id}/publish``, ``GET /rounds/{id}/objections``; ``POST /objections/{id}/answer``;
- evaluators: ``GET /assignments`` (their own), ``PUT /assignments/{id}/evaluation`` (their own: another
  evaluator's is 403), ``POST /conflicts``;
- a team lead with their participant token (its registration confirmed in this service's projection; a
  cancelled one's is 403, one not heard of yet 409): ``POST /proposals``, ``PATCH /proposals/{id}``,
  ``POST /proposals/{id}/submit``, ``POST /proposals/{id}/objections``;
- ``GET /proposals/{id}``: organisers; the proposal's team; an evaluator it is assigned to (without team
  members in a blind round). Anyone else gets 404, as for a proposal that does not exist.

No answer of any of these shows an evaluator another evaluator's scores, or any total, while a round is open.
"""

from __future__ import annotations

from typing import Any

from flask import Response
from flask_smorest import Blueprint

from services.evaluation import domain, rules, scoring
from services.evaluation.schemas import (
    AssignmentQuerySchema,
    AssignmentSchema,
    AssignRequestSchema,
    ConflictRequestSchema,
    ConflictSchema,
    DecisionSchema,
    EntrySchema,
    EvaluationRequestSchema,
    EvaluatorSchema,
    ObjectionAnswerSchema,
    ObjectionRequestSchema,
    ObjectionSchema,
    OwnEvaluationSchema,
    ParticipantQuerySchema,
    ParticipantSchema,
    ProposalChangeSchema,
    ProposalCreateSchema,
    ProposalQuerySchema,
    ProposalSchema,
    ResultsSchema,
    RoundCreateSchema,
    RoundQuerySchema,
    RoundSchema,
)
from services.evaluation.tables import Assignment, Evaluation, Proposal, Round
from shared.auth import Principal, current_principal, requires
from shared.http import PageQuerySchema, runtime_of
from shared.idempotency import idempotent
from shared.spreadsheets import spreadsheet_csv

blp = Blueprint("evaluation_api", __name__, description="Proposals, rounds, assignments, scores and results")


def _caller() -> Principal:
    principal = current_principal()
    assert principal is not None  # @requires put it there
    return principal


# --- views of the tables ------------------------------------------------------------------------------------


def proposal_view(proposal: Proposal, hide_members: bool = False, results: list | None = None) -> dict[str, Any]:
    view = {
        name: getattr(proposal, name)
        for name in (
            "id",
            "status",
            "programme_id",
            "opd",
            "title",
            "category",
            "started_on",
            "sections",
            "links",
            "created_at",
            "updated_at",
            "submitted_at",
        )
    }
    view["word_counts"] = {name: rules.count_words(text) for name, text in proposal.sections.items()}
    if not hide_members:
        view["members"] = proposal.members
    if results is not None:
        view["results"] = results
    return view


def round_view(round_: Round, proposals: int) -> dict[str, Any]:
    view = {column.key: getattr(round_, column.key) for column in Round.__table__.columns}
    view["proposals"] = proposals
    return view


def assignment_view(assignment: Assignment, round_: Round, proposal: Proposal, evaluation: Evaluation | None) -> dict:
    return {
        "id": assignment.id,
        "round_id": round_.id,
        "round_name": round_.name,
        "round_state": round_.state,
        "proposal": {
            "id": proposal.id,
            "title": proposal.title,
            "category": proposal.category,
            "status": proposal.status,
        },
        "evaluator_id": assignment.evaluator_id,
        "assigned_at": assignment.assigned_at,
        "evaluation": evaluation,
    }


# --- projections -------------------------------------------------------------------------------------------------


@blp.get("/participants")
@requires("organiser")
@blp.arguments(ParticipantQuerySchema, location="query")
@blp.response(200, ParticipantSchema(many=True))
def list_participants(query):
    """Confirmed participants, by agency (OPD) and name."""
    with runtime_of().reading() as uow:
        return domain.list_participants(uow, query["opd"], query["limit"], query["offset"])


@blp.get("/evaluators")
@requires("organiser")
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, EvaluatorSchema(many=True))
def list_evaluators(query):
    """The active evaluator accounts this service knows from registration's `account.*` events, with the
    agency (OPD) whose proposals each may not evaluate."""
    with runtime_of().reading() as uow:
        return domain.list_evaluators(uow, query["limit"], query["offset"])


# --- proposals -------------------------------------------------------------------------------------------------


@blp.post("/proposals")
@requires("participant")
@idempotent
@blp.arguments(ProposalCreateSchema)
@blp.response(201, ProposalSchema)
@blp.alt_response(403, description="The token's registration is cancelled")
@blp.alt_response(409, description="This service has not heard of the token's registration yet")
@blp.alt_response(422, description="A section over its word limit (named, with the limit)")
def create_proposal(data):
    """A team lead starts a proposal for their OPD (a draft: sections may be empty, none over its limit)."""
    with runtime_of().unit_of_work() as uow:
        proposal = domain.create_proposal(uow, _caller(), data)
        uow.commit()
    return proposal_view(proposal, results=[])


@blp.get("/proposals")
@requires("organiser")
@blp.arguments(ProposalQuerySchema, location="query")
@blp.response(200, ProposalSchema(many=True))
def list_proposals(query):
    """Every proposal, oldest first; filter by `programme_id` and `status`."""
    with runtime_of().reading() as uow:
        found = domain.list_proposals(uow, query["programme_id"], query["status"], query["limit"], query["offset"])
        return [proposal_view(p) for p in found]


@blp.get("/proposals/<proposal_id>")
@requires("organiser", "evaluator", "participant")
@blp.response(200, ProposalSchema)
@blp.alt_response(404, description="No such proposal, or not one the caller may read")
def get_proposal(proposal_id):
    """One proposal: organisers any; its team (with its published results); an evaluator one assigned to
    them — without the team's members in a blind round."""
    with runtime_of().reading() as uow:
        principal = _caller()
        proposal, blind = domain.read_proposal(uow, principal, proposal_id)
        results = domain.team_results(uow, proposal.id) if principal.role != "evaluator" else None
        return proposal_view(proposal, hide_members=blind, results=results)


@blp.patch("/proposals/<proposal_id>")
@requires("participant")
@blp.arguments(ProposalChangeSchema)
@blp.response(200, ProposalSchema)
@blp.alt_response(404, description="Not a proposal of the caller's team")
@blp.alt_response(409, description="Already submitted (frozen)")
@blp.alt_response(422, description="A section over its word limit")
def update_proposal(changes, proposal_id):
    """Edit a draft; the fields left out stay as they are (sections one by one)."""
    with runtime_of().unit_of_work() as uow:
        proposal = domain.update_proposal(uow, _caller(), proposal_id, changes)
        uow.commit()
    return proposal_view(proposal)


@blp.post("/proposals/<proposal_id>/submit")
@requires("participant")
@blp.response(200, ProposalSchema)
@blp.alt_response(404, description="Not a proposal of the caller's team")
@blp.alt_response(409, description="Already submitted")
@blp.alt_response(422, description="A section missing or over its limit, or no start date (each named)")
def submit_proposal(proposal_id):
    """Submit a draft: it is frozen (`status` `submitted`) and `proposal.submitted` is emitted."""
    with runtime_of().unit_of_work() as uow:
        proposal = domain.submit_proposal(uow, _caller(), proposal_id)
        uow.commit()
    return proposal_view(proposal)


@blp.post("/proposals/<proposal_id>/objections")
@requires("participant")
@idempotent
@blp.arguments(ObjectionRequestSchema)
@blp.response(201, ObjectionSchema)
@blp.alt_response(404, description="Not a proposal of the caller's team")
@blp.alt_response(409, description="The round's results are not open to objections (now)")
def file_objection(data, proposal_id):
    """The team objects (sanggahan) to a round's provisional result, within its objection window."""
    with runtime_of().unit_of_work() as uow:
        domain.team_of(uow, _caller())
        objection = domain.file_objection(uow, _caller(), proposal_id, data["round_id"], data["text"])
        uow.commit()
    return objection


# --- rounds ------------------------------------------------------------------------------------------------------


@blp.post("/rounds")
@requires("organiser")
@idempotent
@blp.arguments(RoundCreateSchema)
@blp.response(201, RoundSchema)
@blp.alt_response(409, description="The programme's previous round is open, or has undecided proposals")
@blp.alt_response(422, description="Criteria that cannot be used (named)")
def create_round(data):
    """Open a programme's next round: the first takes every proposal submitted by now, a later one those
    that advanced from the round before. Without `criteria`, a rubric round uses the five national criteria
    (`novelty`, `effectiveness`, `benefit`, `replicability`, `sustainability`; 1–10, equal weights) and a
    checklist round the administrative checklist. `advancement`: `{"rule": "top_n", "n"}`,
    `{"rule": "threshold", "min"}` or `{"rule": "decision"}` (the default). `ranked_by`: which score ranks."""
    with runtime_of().unit_of_work() as uow:
        round_ = domain.create_round(uow, data)
        uow.commit()
        return round_view(round_, domain.entry_count(uow, round_.id))


@blp.get("/rounds")
@requires("organiser")
@blp.arguments(RoundQuerySchema, location="query")
@blp.response(200, RoundSchema(many=True))
def list_rounds(query):
    """The rounds, oldest first; filter by `programme_id`."""
    with runtime_of().reading() as uow:
        found = domain.list_rounds(uow, query["programme_id"], query["limit"], query["offset"])
        return [round_view(r, domain.entry_count(uow, r.id)) for r in found]


@blp.get("/rounds/<round_id>")
@requires("organiser")
@blp.response(200, RoundSchema)
@blp.alt_response(404, description="No such round")
def get_round(round_id):
    with runtime_of().reading() as uow:
        round_ = domain.get_round(uow, round_id)
        return round_view(round_, domain.entry_count(uow, round_id))


@blp.post("/rounds/<round_id>/close")
@requires("organiser")
@blp.response(200, RoundSchema)
@blp.alt_response(404, description="No such round")
@blp.alt_response(409, description="Already closed")
def close_round(round_id):
    """Close the round: evaluations can no longer change; the advancement rule decides who goes on."""
    with runtime_of().unit_of_work() as uow:
        round_ = domain.close_round(uow, round_id)
        uow.commit()
        return round_view(round_, domain.entry_count(uow, round_id))


@blp.post("/rounds/<round_id>/assignments")
@requires("organiser")
@blp.arguments(AssignRequestSchema)
@blp.response(201, AssignmentSchema(many=True))
@blp.alt_response(404, description="No such round")
@blp.alt_response(409, description="The round is closed, or the evaluator has the proposal already")
@blp.alt_response(422, description="Infeasible: each proposal lacking evaluators named, with why; nothing assigned")
def assign(data, round_id):
    """Assign by hand (`{"proposal_id", "evaluator_id"}`) or automatically (`{"auto": true}`, optionally
    with the pool `evaluator_ids`): every proposal gets the round's number of evaluators, loads differ by at
    most one, nobody gets a proposal of their own OPD or one they declared a conflict with. All or nothing;
    two organisers at once do not double-assign (the round's row is locked). The answer: the assignments made."""
    with runtime_of().unit_of_work() as uow:
        if data["auto"]:
            made = domain.auto_assign(uow, _caller(), round_id, data["evaluator_ids"])
        else:
            made = domain.assign_by_hand(uow, _caller(), round_id, data["proposal_id"], data["evaluator_id"])
        uow.commit()
        round_ = domain.get_round(uow, round_id)
        return [assignment_view(a, round_, uow.session.get(Proposal, a.proposal_id), None) for a in made]


@blp.get("/rounds/<round_id>/entries")
@requires("organiser")
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, EntrySchema(many=True))
@blp.alt_response(404, description="No such round")
def list_entries(query, round_id):
    """The round's proposals and, once it is closed, their rank, score, and whether each advanced (and why not)."""
    with runtime_of().reading() as uow:
        return domain.list_entries(uow, round_id, query["limit"], query["offset"])


@blp.post("/rounds/<round_id>/decisions")
@requires("organiser")
@blp.arguments(DecisionSchema)
@blp.response(200, EntrySchema)
@blp.alt_response(409, description="The round is open, or its final list is published")
def decide(data, round_id):
    """The organisers decide whether a proposal advances (a `decision` round, or after an upheld objection);
    a proposal that does not advance is told the `reason`."""
    with runtime_of().unit_of_work() as uow:
        entry = domain.decide(uow, round_id, data["proposal_id"], data["advanced"], data["reason"])
        uow.commit()
    return entry


@blp.get("/rounds/<round_id>/results")
@requires("organiser")
@blp.response(200, ResultsSchema, description=scoring.METHOD_DESCRIPTION)
@blp.alt_response(404, description="No such round")
def results(round_id):
    """The round's ranking, agreement and fairness evidence (organisers only: while a round is open no
    evaluator sees any of it). The method is below."""
    with runtime_of().reading() as uow:
        return domain.round_results(uow, round_id)


RESULTS_COLUMNS = (
    "rank",
    "proposal_id",
    "title",
    "opd",
    "mean",
    "median",
    "spread",
    "normalised",
    "evaluations",
    "advanced",
    "reason",
)


@blp.get("/rounds/<round_id>/results.csv")
@requires("organiser")
@blp.response(200, content_type="text/csv", description="UTF-8 with a BOM; formula-like cells start with '")
@blp.alt_response(404, description="No such round")
def results_csv(round_id):
    """The ranking as CSV for a spreadsheet (UTF-8 with BOM, formulas neutralised)."""
    with runtime_of().reading() as uow:
        rows = domain.results_rows(uow, round_id)
    document = spreadsheet_csv(RESULTS_COLUMNS, ([row[c] for c in RESULTS_COLUMNS] for row in rows))
    return Response(
        document,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="results-{round_id[:36]}.csv"'},
    )


@blp.post("/rounds/<round_id>/publish")
@requires("organiser")
@blp.response(200, RoundSchema)
@blp.alt_response(404, description="No such round")
@blp.alt_response(409, description="Open round, undecided proposals, window still open, or already final")
def publish(round_id):
    """Publish the results: `results.published` for each team. With `objection_days` the first publication
    is provisional and opens the objection window (masa sanggah); publish again after it for the final list."""
    with runtime_of().unit_of_work() as uow:
        round_ = domain.publish_results(uow, round_id)
        uow.commit()
        return round_view(round_, domain.entry_count(uow, round_id))


@blp.get("/rounds/<round_id>/objections")
@requires("organiser")
@blp.arguments(PageQuerySchema, location="query")
@blp.response(200, ObjectionSchema(many=True))
@blp.alt_response(404, description="No such round")
def list_objections(query, round_id):
    with runtime_of().reading() as uow:
        return domain.list_objections(uow, round_id, query["limit"], query["offset"])


@blp.post("/objections/<objection_id>/answer")
@requires("organiser")
@blp.arguments(ObjectionAnswerSchema)
@blp.response(200, ObjectionSchema)
@blp.alt_response(404, description="No such objection")
@blp.alt_response(409, description="Already answered")
def answer_objection(data, objection_id):
    """Answer an objection: `upheld` (then change the decision if need be) or `rejected`, with the reason."""
    with runtime_of().unit_of_work() as uow:
        objection = domain.answer_objection(uow, _caller(), objection_id, data["decision"], data["reason"])
        uow.commit()
    return objection


# --- evaluators ------------------------------------------------------------------------------------------------


@blp.get("/assignments")
@requires("evaluator")
@blp.arguments(AssignmentQuerySchema, location="query")
@blp.response(200, AssignmentSchema(many=True))
def list_assignments(query):
    """The caller's own assignments, each with its proposal (read it at `GET /proposals/{id}`) and the
    caller's own evaluation if stored — never anyone else's."""
    with runtime_of().reading() as uow:
        found = domain.list_assignments(uow, _caller().account_id, query["round_id"], query["limit"], query["offset"])
        return [assignment_view(*row) for row in found]


@blp.put("/assignments/<assignment_id>/evaluation")
@requires("evaluator")
@blp.arguments(EvaluationRequestSchema)
@blp.response(200, OwnEvaluationSchema)
@blp.alt_response(403, description="Another evaluator's assignment")
@blp.alt_response(404, description="No such assignment")
@blp.alt_response(409, description="The round is closed")
@blp.alt_response(422, description="A score out of scale, an unknown criterion, a missing counted criterion")
def put_evaluation(data, assignment_id):
    """Store or revise the caller's evaluation while the round is open: `scores` by criterion key (a
    checklist: 1 pass, 0 fail with its `reasons`), a `comment`. Emits `evaluation.submitted` (no scores)."""
    with runtime_of().unit_of_work() as uow:
        evaluation = domain.record_evaluation(
            uow, _caller(), assignment_id, data["scores"], data["comment"], data["reasons"]
        )
        uow.commit()
    return evaluation


@blp.post("/conflicts")
@requires("evaluator")
@blp.arguments(ConflictRequestSchema)
@blp.response(201, ConflictSchema)
@blp.alt_response(422, description="No such proposal")
def declare_conflict(data):
    """Declare a conflict of interest with a proposal, with the reason: it is never assigned to the caller,
    and their unevaluated assignments of it in open rounds are withdrawn."""
    with runtime_of().unit_of_work() as uow:
        withdrawn = domain.declare_conflict(uow, _caller(), data["proposal_id"], data["reason"])
        uow.commit()
    return {**data, "withdrawn_assignments": withdrawn}
