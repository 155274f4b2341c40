"""Evaluation pages for people: server-rendered, usable without JavaScript and on a 360-px phone.

Thin adapters like the API views: a form is validated with the API's own schema and the same domain
operation, then post/redirect/get, or the form again with the refusals beside their fields.

Who may open what (each view says so under its route):
- anyone: ``/`` (an overview: counts only, no personal data; links for the signed-in);
- evaluators: ``/assignments`` (their own list) and ``/assignments/<id>`` (the proposal — without members in a
  blind round — and the scoring form; saving again revises until the round closes). Another evaluator's
  assignment is a 403 page. Nothing on these pages shows another evaluator's scores or any average;
- organisers: ``/rounds/<id>/results`` (the ranking and a per-criterion score distribution chart drawn as
  SVG on the server) and ``/rounds/<id>/results.csv``.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, flash, g, redirect, render_template, request
from flask_babel import gettext as _
from marshmallow import ValidationError
from sqlalchemy import func, select

from services.evaluation import domain, rules
from services.evaluation.api import RESULTS_COLUMNS
from services.evaluation.schemas import EvaluationRequestSchema
from services.evaluation.tables import Participant
from shared.errors import DomainError
from shared.http import runtime_of
from shared.i18n import N_, current_language
from shared.i18n import translate_refusal as _translate_any_refusal
from shared.pages import error_page, page_principal, page_public, page_requires
from shared.spreadsheets import spreadsheet_csv

pages = Blueprint("evaluation_pages", __name__)

#: The rules' refusals the scoring form shows, as the API states them (English); the page translates them.
RULE_REFUSALS = (
    N_("Must be 1 (pass) or 0 (fail)."),
    N_("Missing: every counted criterion needs a score."),
    N_("A failed item needs a reason."),
    N_("The round is closed; its evaluations can no longer change."),
    N_("Not a valid number."),
    N_("This assignment is another evaluator's."),
    N_("No assignment has this id."),
    N_("No proposal assigned to you has this id."),
    # a proposal's own refusals (rules.section_problems, rules.submission_refusal, domain.submit_proposal)
    N_("Required before submitting: the date implementation began."),
    N_("This service has not heard of your registration yet; try again in a minute."),
    N_("Only a confirmed registration may submit proposals; this one is cancelled."),
)

#: The rules' refusals that carry values (a scale, a word limit and count, the rubric's keys), as (pattern,
#: msgid with the same named placeholders): the page says the same numbers in the visitor's language.
TEMPLATED_RULE_REFUSALS = (
    (
        re.compile(r"^Must be between (?P<low>-?\d+(?:\.\d+)?) and (?P<high>-?\d+(?:\.\d+)?)\.$"),
        N_("Must be between %(low)s and %(high)s."),
    ),
    (
        re.compile(r"^At most (?P<limit>\d+) words; this has (?P<words>\d+)\.$"),
        N_("At most %(limit)s words; this has %(words)s."),
    ),
    (
        re.compile(r"^Required before submitting \(at most (?P<limit>\d+) words\)\.$"),
        N_("Required before submitting (at most %(limit)s words)."),
    ),
    (
        re.compile(r"^Unknown criterion; this round's are: (?P<keys>.+)\.$"),
        N_("Unknown criterion; this round's are: %(keys)s."),
    ),
)


def translate_refusal(message: str) -> str:
    """A refusal of evaluation's rules or schemas in the visitor's language (values kept as they are)."""
    return _translate_any_refusal(message, TEMPLATED_RULE_REFUSALS)


SECTION_NAMES = {
    "summary": "Ringkasan / Summary",
    "background": "Latar belakang / Background",
    "novelty": "Kebaruan / Novelty",
    "implementation": "Implementasi / Implementation",
    "significance": "Signifikansi / Significance",
    "adaptability": "Adaptabilitas / Adaptability",
    "resources": "Sumber daya / Resources",
    "sustainability": "Keberlanjutan / Sustainability",
}


@pages.get("/")
@page_public
def home():
    with runtime_of().reading() as uow:
        count = uow.session.scalar(select(func.count()).select_from(Participant))
    return render_template("evaluation/home.html", participant_count=count, principal=page_principal())


@pages.get("/assignments")
@page_requires("evaluator")
def assignments():
    with runtime_of().reading() as uow:
        found = domain.list_assignments(uow, g.principal.account_id, None, 500, 0)
    return render_template("evaluation/assignments.html", assignments=found)


def _criterion_name(criterion: rules.Criterion) -> str:
    return criterion.name.get(current_language()) or criterion.name.get("id") or criterion.key


def _scoring_page(assignment_id: str, values: dict[str, Any] | None = None, errors=None, status: int = 200):
    with runtime_of().reading() as uow:
        try:
            assignment, round_, proposal = domain.own_assignment(uow, g.principal, assignment_id)
        except DomainError as refusal:
            return error_page(refusal.status, detail=translate_refusal(refusal.detail))
        _p, blind = domain.read_proposal(uow, g.principal, proposal.id)
        evaluation = domain.own_evaluation(uow, assignment_id)
    if values is None:
        values = {
            "scores": {k: _plain(v) for k, v in (evaluation.scores if evaluation else {}).items()},
            "reasons": dict(evaluation.reasons) if evaluation else {},
            "comment": (evaluation.comment if evaluation else "") or "",
        }
    criteria = [(c, _criterion_name(c)) for c in domain.round_criteria(round_)]
    body = render_template(
        "evaluation/score.html",
        assignment=assignment,
        round=round_,
        proposal=proposal,
        blind=blind,
        evaluation=evaluation,
        criteria=criteria,
        section_names=SECTION_NAMES,
        values=values,
        errors=errors or {},
    )
    return body, status


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


@pages.get("/assignments/<assignment_id>")
@page_requires("evaluator")
def score(assignment_id: str):
    return _scoring_page(assignment_id)


@pages.post("/assignments/<assignment_id>")
@page_requires("evaluator")
def save_score(assignment_id: str):
    scores_typed = {k[len("score-") :]: v.strip() for k, v in request.form.items() if k.startswith("score-")}
    reasons = {k[len("reason-") :]: v for k, v in request.form.items() if k.startswith("reason-") and v.strip()}
    values = {"scores": scores_typed, "reasons": reasons, "comment": request.form.get("comment", "")}
    payload = {
        "scores": {k: v.replace(",", ".") for k, v in scores_typed.items() if v},
        "reasons": reasons,
        "comment": values["comment"] or None,
    }
    try:
        data = EvaluationRequestSchema().load(payload)
        with runtime_of().unit_of_work() as uow:
            domain.record_evaluation(uow, g.principal, assignment_id, data["scores"], data["comment"], data["reasons"])
            uow.commit()
    except ValidationError as error:
        return _scoring_page(assignment_id, values, _by_field(error.messages), 422)
    except DomainError as refusal:
        if refusal.status == 422:
            return _scoring_page(assignment_id, values, _by_field(refusal.errors or {}), 422)
        if refusal.status == 409:
            return _scoring_page(assignment_id, values, {"_schema": [translate_refusal(refusal.detail)]}, 409)
        return error_page(refusal.status, detail=translate_refusal(refusal.detail))
    flash(_("Your evaluation is saved. You may revise it until the round closes."), "success")
    return redirect(f"/evaluation/assignments/{assignment_id}", 303)


def _by_field(messages: dict) -> dict[str, list[str]]:
    """Refusals by form field (``scores.novelty`` → ``novelty``), in the visitor's language."""
    flat: dict[str, list[str]] = {}
    for name, found in messages.items():
        if isinstance(found, dict):  # marshmallow's nested errors: {"scores": {"novelty": {"value": [...]}}}
            for key, inner in found.items():
                texts = inner.get("value", inner) if isinstance(inner, dict) else inner
                flat[f"{name}.{key}"] = [translate_refusal(str(t)) for t in _texts(texts)]
        else:
            flat[name] = [translate_refusal(str(t)) for t in _texts(found)]
    return flat


def _texts(found: Any) -> list[Any]:
    if isinstance(found, dict):
        return [t for inner in found.values() for t in _texts(inner)]
    return list(found) if isinstance(found, list) else [found]


@pages.get("/rounds/<round_id>/results")
@page_requires("organiser")
def results_page(round_id: str):
    with runtime_of().reading() as uow:
        try:
            round_ = domain.get_round(uow, round_id)
        except DomainError as refusal:
            return error_page(refusal.status)
        results = domain.round_results(uow, round_id)
        rows = domain.results_rows(uow, round_id)
        by_key = domain.criterion_scores(uow, round_id)
    charts = []
    for criterion in domain.round_criteria(round_):
        bars = rules.score_histogram(by_key.get(criterion.key, []), criterion.low, criterion.high)
        charts.append(
            {
                "key": criterion.key,
                "name": _criterion_name(criterion),
                "bars": bars,
                "most": max([count for _point, count in bars] + [1]),
            }
        )
    return render_template("evaluation/results.html", round=round_, results=results, rows=rows, charts=charts)


@pages.get("/rounds/<round_id>/results.csv")
@page_requires("organiser")
def results_csv_page(round_id: str):
    with runtime_of().reading() as uow:
        try:
            rows = domain.results_rows(uow, round_id)
        except DomainError as refusal:
            return error_page(refusal.status)
    document = spreadsheet_csv(RESULTS_COLUMNS, ([row[c] for c in RESULTS_COLUMNS] for row in rows))
    return Response(
        document,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="results-{round_id[:36]}.csv"'},
    )
