"""Evaluation's domain operations (the imperative shell): load the state, ask ``rules``/``scoring``, write
the outcome and its events. They receive a unit of work and never commit (the view or the event processor
does, see ``shared/db.py: UnitOfWork``).

**Who may write a proposal** is known from events only: the ``registrations`` projection (registration's
``registration.*`` events) says whether a participant token's registration is confirmed, and the
``accounts`` projection (``account.*``) who the evaluators are and their agency (OPD). No call to the
registration service is ever made. A cancelled registration stays cancelled in the projection whatever order
its events arrive in (:func:`record_registration`), so its token cannot write again.

**Concurrency: the round row is the lock.** Everything that changes a round's assignments or evaluations or
its state locks the round's row first — ``SELECT … FOR UPDATE`` for assigning (by hand or automatically),
closing, deciding and publishing; ``SELECT … FOR SHARE`` for storing an evaluation (many evaluators score at
once, but never while the round closes). On SQLite every writing transaction holds the database's write lock
from its first statement (``BEGIN IMMEDIATE``), which serialises the same paths. So two organisers
auto-assigning one round at once run one after the other: the second sees the first's assignments, finds
nothing left to assign and adds nothing (``tests/integration/test_assignment_race.py``); the unique
``(round, proposal, evaluator)`` constraint is the backstop. An evaluation stored while another transaction
closes the round either commits before the close (and is in the results) or sees the round closed (409).

**No score leaves before a round closes.** Evaluators read only their own evaluation; ``evaluation.submitted``
carries no score; refusals name only the caller's own input. Results are the organisers'.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, delete, func, select

from services.evaluation import rules, scoring
from services.evaluation.tables import (
    Account,
    Assignment,
    ConflictOfInterest,
    Evaluation,
    Objection,
    Participant,
    Proposal,
    RegistrationView,
    Round,
    RoundEntry,
)
from shared.db import UnitOfWork, insert_or_update, new_id, upsert
from shared.errors import Conflict, DomainError, NotFound, RuleViolation
from shared.tokens import Principal


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class Unassignable(DomainError):
    """The automatic assignment cannot meet its constraints; ``errors`` name each proposal (and evaluator)."""

    status = 422
    slug = "assignment-infeasible"
    title = "The proposals cannot all get their evaluators"


def _now() -> datetime:
    return datetime.now(UTC)


# --- projections from registration's events -----------------------------------------------------------------


def record_participant(uow: UnitOfWork, data: dict[str, Any]) -> None:
    """Create or refresh the participant a confirmed registration describes (keyed by NIP; the event handled
    last wins)."""
    upsert(
        uow.session,
        Participant.__table__,
        {
            "nip": data["nip"],
            "name": data["name"],
            "email": data["email"],
            "opd": data["opd"],
            "position": data.get("position"),
            "last_registration_id": data["registration_id"],
            "updated_at": _now(),
        },
        key=("nip",),
    )


def record_registration(uow: UnitOfWork, data: dict[str, Any], status: str) -> None:
    """Project a registration (``confirmed`` or ``cancelled``) in one statement. Cancelled is for good: a
    late ``registration.confirmed`` arriving after the cancellation does not bring it back."""
    table = RegistrationView.__table__
    statement = insert_or_update(uow.session, table).values(
        id=data["registration_id"],
        programme_id=data.get("programme_id"),
        session_id=data["session_id"],
        status=status,
        name=data["name"],
        nip=data["nip"],
        email=data["email"],
        opd=data["opd"],
        language=data.get("language") or "id",
        updated_at=_now(),
    )
    changes: dict[str, Any] = {
        name: statement.excluded[name]
        for name in ("programme_id", "session_id", "name", "nip", "email", "opd", "language", "updated_at")
    }
    changes["status"] = case((table.c.status == "cancelled", "cancelled"), else_=statement.excluded.status)
    uow.session.execute(statement.on_conflict_do_update(index_elements=["id"], set_=changes))
    if status == "confirmed":
        record_participant(uow, data)


def record_account(uow: UnitOfWork, data: dict[str, Any]) -> None:
    """Project an organiser or evaluator account (each event carries the account as it is now)."""
    upsert(
        uow.session,
        Account.__table__,
        {
            "id": data["account_id"],
            "email": data["email"],
            "name": data.get("name"),
            "role": data["role"],
            "opd": data.get("opd"),
            "active": data.get("active", True),
            "updated_at": _now(),
        },
        key=("id",),
    )


def list_participants(uow: UnitOfWork, opd: str | None = None, limit: int = 100, offset: int = 0):
    query = select(Participant).order_by(Participant.opd, Participant.name).limit(limit).offset(offset)
    if opd:
        query = query.where(Participant.opd == opd)
    return list(uow.session.scalars(query))


def list_evaluators(uow: UnitOfWork, limit: int = 100, offset: int = 0) -> list[Account]:
    query = (
        select(Account)
        .where(Account.role == "evaluator", Account.active.is_(True))
        .order_by(Account.name, Account.email, Account.id)
        .limit(limit)
        .offset(offset)
    )
    return list(uow.session.scalars(query))


# --- proposals -------------------------------------------------------------------------------------------


def team_of(uow: UnitOfWork, principal: Principal) -> RegistrationView:
    """The registration a participant token speaks for, if it may write proposals (else 403, or 409 when
    this service has not heard of it yet)."""
    registration = uow.session.get(RegistrationView, principal.account_id)
    refusal = rules.submission_refusal(registration.status if registration else None)
    if refusal:
        raise (Conflict if registration is None else Forbidden)(refusal)
    assert registration is not None
    return registration


def _section_values(sections: dict[str, str | None] | None) -> dict[str, str]:
    return {name: (sections or {}).get(name) or "" for name in rules.SECTION_LIMITS}


def create_proposal(uow: UnitOfWork, principal: Principal, data: dict[str, Any]) -> Proposal:
    team = team_of(uow, principal)
    sections = _section_values(data.get("sections"))
    problems = rules.section_problems(sections, complete=False)
    if problems:
        raise RuleViolation("Some sections are longer than their word limit.", problems)
    now = _now()
    proposal = Proposal(
        id=new_id(),
        registration_id=team.id,
        programme_id=team.programme_id,
        opd=team.opd,
        title=data["title"],
        category=data["category"],
        started_on=data.get("started_on"),
        members=[dict(member) for member in data.get("members", [])],
        sections=sections,
        links=list(data.get("links", [])),
        status="draft",
        created_at=now,
        updated_at=now,
    )
    uow.session.add(proposal)
    uow.flush()
    return proposal


def _own_proposal(uow: UnitOfWork, principal: Principal, proposal_id: str, lock: bool = False) -> Proposal:
    """The caller's team's proposal; another team's answers like a missing one (404: nothing revealed)."""
    query = select(Proposal).where(Proposal.id == proposal_id)
    if lock:
        query = query.with_for_update()
    proposal = uow.session.scalar(query)
    if proposal is None or proposal.registration_id != principal.account_id:
        raise NotFound("No proposal of your team has this id.")
    return proposal


def update_proposal(uow: UnitOfWork, principal: Principal, proposal_id: str, changes: dict[str, Any]) -> Proposal:
    team_of(uow, principal)
    proposal = _own_proposal(uow, principal, proposal_id, lock=True)
    if proposal.status != "draft":
        raise Conflict("A submitted proposal is frozen; it can no longer be edited.")
    if "sections" in changes:
        sections = _section_values(proposal.sections)
        sections.update({k: v or "" for k, v in changes["sections"].items()})
        problems = rules.section_problems(sections, complete=False)
        if problems:
            raise RuleViolation("Some sections are longer than their word limit.", problems)
        proposal.sections = sections
    for name in ("title", "category", "started_on"):
        if name in changes:
            setattr(proposal, name, changes[name])
    if "members" in changes:
        proposal.members = [dict(member) for member in changes["members"]]
    if "links" in changes:
        proposal.links = list(changes["links"])
    proposal.updated_at = _now()
    uow.flush()
    return proposal


def submit_proposal(uow: UnitOfWork, principal: Principal, proposal_id: str) -> Proposal:
    """Freeze a draft (``submitted``) once every section is there and within its limit; emits
    ``proposal.submitted``."""
    team = team_of(uow, principal)
    proposal = _own_proposal(uow, principal, proposal_id, lock=True)
    if proposal.status != "draft":
        raise Conflict("This proposal is already submitted.")
    problems = rules.section_problems(proposal.sections, complete=True)
    if proposal.started_on is None:
        problems["started_on"] = ["Required before submitting: the date implementation began."]
    if problems:
        raise RuleViolation("The proposal is not complete: see the sections named.", problems)
    proposal.status = "submitted"
    proposal.submitted_at = proposal.updated_at = _now()
    uow.publish(
        "proposal.submitted",
        {
            "proposal_id": proposal.id,
            "programme_id": proposal.programme_id,
            "registration_id": proposal.registration_id,
            "opd": proposal.opd,
            "title": proposal.title,
            "category": proposal.category,
            "team_name": team.name,
            "team_email": team.email,
            "language": team.language,
            "submitted_at": proposal.submitted_at,
        },
        subject=proposal.id,
    )
    uow.flush()
    return proposal


def read_proposal(uow: UnitOfWork, principal: Principal, proposal_id: str) -> tuple[Proposal, bool]:
    """A proposal and whether its team members must be hidden (a blind round's evaluator). Its team reads
    it with their token; an evaluator only a proposal assigned to them; organisers any. Everyone else gets
    404, as for a missing one."""
    if principal.role == "participant":
        return _own_proposal(uow, principal, proposal_id), False
    proposal = uow.session.get(Proposal, proposal_id)
    if proposal is None:
        raise NotFound("No proposal has this id.")
    if principal.role == "organiser":
        return proposal, False
    blind = list(
        uow.session.scalars(
            select(Round.blind)
            .join(Assignment, Assignment.round_id == Round.id)
            .where(Assignment.proposal_id == proposal_id, Assignment.evaluator_id == principal.account_id)
        )
    )
    if not blind:
        raise NotFound("No proposal assigned to you has this id.")
    return proposal, any(blind)


def list_proposals(
    uow: UnitOfWork, programme_id: str | None, status: str | None, limit: int, offset: int
) -> list[Proposal]:
    query = select(Proposal).order_by(Proposal.created_at, Proposal.id).limit(limit).offset(offset)
    if programme_id:
        query = query.where(Proposal.programme_id == programme_id)
    if status:
        query = query.where(Proposal.status == status)
    return list(uow.session.scalars(query))


def team_results(uow: UnitOfWork, proposal_id: str) -> list[dict[str, Any]]:
    """What a team may know of its proposal's published rounds: rank, whether it advanced and why not."""
    rows = uow.session.execute(
        select(Round, RoundEntry)
        .join(RoundEntry, RoundEntry.round_id == Round.id)
        .where(RoundEntry.proposal_id == proposal_id, Round.provisional_at.is_not(None))
        .order_by(Round.sequence)
    )
    return [
        {
            "round_id": round_.id,
            "round_name": round_.name,
            "rank": entry.rank,
            "advanced": entry.advanced,
            "reason": entry.reason,
            "final": round_.final_at is not None,
            "objection_deadline": round_.objection_deadline,
        }
        for round_, entry in rows
    ]


# --- rounds ------------------------------------------------------------------------------------------------


def round_criteria(round_: Round) -> list[rules.Criterion]:
    return [rules.Criterion.from_dict(c) for c in round_.criteria]


def _scoring_criteria(criteria: Sequence[rules.Criterion]) -> list[scoring.Criterion]:
    return [scoring.Criterion(c.key, c.weight, float(c.low), float(c.high), c.informational) for c in criteria]


def _lock_round(uow: UnitOfWork, round_id: str, shared: bool = False) -> Round:
    round_ = uow.session.scalar(select(Round).where(Round.id == round_id).with_for_update(read=shared))
    if round_ is None:
        raise NotFound("No round has this id.")
    return round_


def get_round(uow: UnitOfWork, round_id: str) -> Round:
    round_ = uow.session.get(Round, round_id)
    if round_ is None:
        raise NotFound("No round has this id.")
    return round_


def create_round(uow: UnitOfWork, data: dict[str, Any]) -> Round:
    """Open a programme's next round. The first takes every proposal submitted by now; a later one takes
    those that advanced from the one before, which must be closed with every proposal decided."""
    kind = data["kind"]
    criteria = [rules.Criterion.from_dict(c) for c in data["criteria"]] if data.get("criteria") else None
    criteria = criteria or list(rules.default_criteria(kind))
    problems = rules.criteria_problems(kind, criteria)
    if problems:
        raise RuleViolation("The criteria cannot be used.", problems)
    programme_id = data.get("programme_id")
    same_programme = Round.programme_id.is_(None) if programme_id is None else Round.programme_id == programme_id
    previous = uow.session.scalar(select(Round).where(same_programme).order_by(Round.sequence.desc()).limit(1))
    if previous is None:
        same = Proposal.programme_id.is_(None) if programme_id is None else Proposal.programme_id == programme_id
        taken = list(uow.session.scalars(select(Proposal.id).where(same, Proposal.status == "submitted")))
    else:
        if previous.state != "closed":
            raise Conflict(f"The round before, {previous.name!r}, is still open; close it first.")
        undecided = uow.session.scalar(
            select(func.count())
            .select_from(RoundEntry)
            .where(RoundEntry.round_id == previous.id, RoundEntry.advanced.is_(None))
        )
        if undecided:
            raise Conflict(f"{undecided} proposal(s) of {previous.name!r} await the organisers' decision.")
        taken = list(
            uow.session.scalars(
                select(RoundEntry.proposal_id).where(RoundEntry.round_id == previous.id, RoundEntry.advanced.is_(True))
            )
        )
    advancement = data.get("advancement") or {"rule": "decision"}
    round_ = Round(
        id=new_id(),
        programme_id=programme_id,
        sequence=(previous.sequence + 1) if previous else 1,
        name=data["name"],
        kind=kind,
        criteria=[c.as_dict() for c in criteria],
        evaluators_per_proposal=data["evaluators_per_proposal"],
        blind=data.get("blind", False),
        advancement=advancement,
        ranked_by=data.get("ranked_by", "normalised"),
        objection_days=data.get("objection_days", 0),
        state="open",
        created_at=_now(),
    )
    uow.session.add(round_)
    uow.flush()
    uow.session.add_all([RoundEntry(round_id=round_.id, proposal_id=pid) for pid in taken])
    uow.flush()
    return round_


def list_rounds(uow: UnitOfWork, programme_id: str | None, limit: int, offset: int) -> list[Round]:
    query = select(Round).order_by(Round.created_at, Round.sequence).limit(limit).offset(offset)
    if programme_id:
        query = query.where(Round.programme_id == programme_id)
    return list(uow.session.scalars(query))


def entry_count(uow: UnitOfWork, round_id: str) -> int:
    return uow.session.scalar(select(func.count()).select_from(RoundEntry).where(RoundEntry.round_id == round_id))


def list_entries(uow: UnitOfWork, round_id: str, limit: int, offset: int) -> list[RoundEntry]:
    get_round(uow, round_id)
    query = (
        select(RoundEntry)
        .where(RoundEntry.round_id == round_id)
        .order_by(RoundEntry.rank, RoundEntry.proposal_id)
        .limit(limit)
        .offset(offset)
    )
    return list(uow.session.scalars(query))


def _evaluations_of(uow: UnitOfWork, round_id: str) -> list[tuple[Assignment, Evaluation]]:
    return list(
        uow.session.execute(
            select(Assignment, Evaluation)
            .join(Evaluation, Evaluation.assignment_id == Assignment.id)
            .where(Assignment.round_id == round_id)
        ).tuples()
    )


def round_results(uow: UnitOfWork, round_id: str) -> dict[str, Any]:
    """The round's results (``scoring.round_results``), for organisers only."""
    round_ = get_round(uow, round_id)
    return _results(uow, round_).to_dict()


def _results(uow: UnitOfWork, round_: Round) -> scoring.RoundResults:
    evaluations = [
        scoring.Evaluation(assignment.proposal_id, assignment.evaluator_id, evaluation.scores)
        for assignment, evaluation in _evaluations_of(uow, round_.id)
    ]
    proposal_ids = list(uow.session.scalars(select(RoundEntry.proposal_id).where(RoundEntry.round_id == round_.id)))
    return scoring.round_results(
        _scoring_criteria(round_criteria(round_)), evaluations, proposal_ids, ranking_by=round_.ranked_by
    )


def close_round(uow: UnitOfWork, round_id: str) -> Round:
    """Close an open round: no evaluation is stored after this. Each proposal's rank and score are kept, and
    the advancement rule decides who goes on (``decision``: the organisers decide each one afterwards)."""
    round_ = _lock_round(uow, round_id)
    if round_.state != "open":
        raise Conflict("The round is already closed.")
    round_.state = "closed"
    round_.closed_at = _now()
    results = _results(uow, round_)
    entries = {e.proposal_id: e for e in uow.session.scalars(select(RoundEntry).where(RoundEntry.round_id == round_id))}
    ranked = [
        rules.Ranked(str(r.proposal_id), r.rank if r.evaluations else None, _ranked_score(round_, r))
        for r in results.ranking
    ]
    if round_.kind == "checklist":
        by_proposal: dict[str, list[tuple[dict, dict]]] = {}
        for assignment, evaluation in _evaluations_of(uow, round_id):
            by_proposal.setdefault(assignment.proposal_id, []).append((evaluation.scores, evaluation.reasons))
        criteria = round_criteria(round_)
        outcome = {pid: rules.checklist_outcome(criteria, by_proposal.get(pid, [])) for pid in entries}
    else:
        outcome = rules.decide_advancement(round_.advancement, ranked)
    for r in ranked:
        entry = entries.get(r.proposal_id)
        if entry is None:
            continue
        entry.rank, entry.score = r.rank, r.score
        entry.advanced, entry.reason = outcome.get(r.proposal_id, (None, None))
    uow.flush()
    return round_


def _ranked_score(round_: Round, ranked: scoring.RankedProposal) -> float | None:
    return ranked.normalised if round_.ranked_by == "normalised" else ranked.mean


def decide(uow: UnitOfWork, round_id: str, proposal_id: str, advanced: bool, reason: str | None) -> RoundEntry:
    """The organisers' decision whether a proposal advances (a ``decision`` round, or after an upheld
    objection): only once the round is closed and until its final list is published."""
    round_ = _lock_round(uow, round_id)
    if round_.state != "closed":
        raise Conflict("Decide once the round is closed.")
    if round_.final_at is not None:
        raise Conflict("The final list of this round is published; it can no longer change.")
    entry = uow.session.get(RoundEntry, (round_id, proposal_id))
    if entry is None:
        raise NotFound("This proposal is not in this round.")
    if not advanced and not (reason or "").strip():
        raise RuleViolation("Say why it does not advance.", {"reason": ["Required when a proposal does not advance."]})
    entry.advanced, entry.reason = advanced, (None if advanced else reason)
    uow.flush()
    return entry


# --- assignments --------------------------------------------------------------------------------------------


def _proposal_slots(uow: UnitOfWork, round_id: str) -> list[rules.ProposalSlot]:
    rows = uow.session.execute(
        select(Proposal.id, Proposal.opd)
        .join(RoundEntry, RoundEntry.proposal_id == Proposal.id)
        .where(RoundEntry.round_id == round_id)
        .order_by(Proposal.id)
    )
    return [rules.ProposalSlot(pid, opd) for pid, opd in rows]


def _assign(uow: UnitOfWork, round_: Round, pairs: Iterable[tuple[str, str]], by: Principal) -> list[Assignment]:
    """Write assignments and one ``evaluation.assigned`` each (the caller holds the round's lock)."""
    pairs = list(pairs)
    if not pairs:
        return []
    titles = {
        pid: title
        for pid, title in uow.session.execute(
            select(Proposal.id, Proposal.title).where(Proposal.id.in_({p for p, _ in pairs}))
        )
    }
    accounts = {a.id: a for a in uow.session.scalars(select(Account).where(Account.id.in_({e for _, e in pairs})))}
    now = _now()
    made = []
    for proposal_id, evaluator_id in pairs:
        assignment = Assignment(
            id=new_id(),
            round_id=round_.id,
            proposal_id=proposal_id,
            evaluator_id=evaluator_id,
            assigned_by=by.account_id,
            assigned_at=now,
        )
        made.append(assignment)
        account = accounts[evaluator_id]
        uow.publish(
            "evaluation.assigned",
            {
                "assignment_id": assignment.id,
                "round_id": round_.id,
                "round_name": round_.name,
                "proposal_id": proposal_id,
                "proposal_title": titles[proposal_id],
                "evaluator_id": evaluator_id,
                "evaluator_email": account.email,
                "evaluator_name": account.name,
                "assigned_at": now,
            },
            subject=assignment.id,
        )
    uow.session.add_all(made)
    uow.flush()
    return made


def assign_by_hand(
    uow: UnitOfWork, by: Principal, round_id: str, proposal_id: str, evaluator_id: str
) -> list[Assignment]:
    round_ = _lock_round(uow, round_id)
    if round_.state != "open":
        raise Conflict("The round is closed; it takes no assignments.")
    if uow.session.get(RoundEntry, (round_id, proposal_id)) is None:
        raise RuleViolation("Not a proposal of this round.", {"proposal_id": ["This proposal is not in this round."]})
    account = uow.session.get(Account, evaluator_id)
    if account is None or account.role != "evaluator" or not account.active:
        raise RuleViolation("Not an evaluator.", {"evaluator_id": ["No active evaluator has this id."]})
    proposal = uow.session.get(Proposal, proposal_id)
    assert proposal is not None
    conflicts = set(
        uow.session.execute(
            select(ConflictOfInterest.evaluator_id, ConflictOfInterest.proposal_id).where(
                ConflictOfInterest.evaluator_id == evaluator_id, ConflictOfInterest.proposal_id == proposal_id
            )
        ).tuples()
    )
    why = rules.may_evaluate(
        rules.EvaluatorSlot(account.id, account.opd), rules.ProposalSlot(proposal.id, proposal.opd), conflicts
    )
    if why == "own-opd":
        raise RuleViolation("Own agency.", {"evaluator_id": ["This evaluator works for the proposal's OPD."]})
    if why == "conflict":
        raise RuleViolation("Conflict.", {"evaluator_id": ["This evaluator declared a conflict with the proposal."]})
    existing = uow.session.scalar(
        select(Assignment.id).where(
            Assignment.round_id == round_id,
            Assignment.proposal_id == proposal_id,
            Assignment.evaluator_id == evaluator_id,
        )
    )
    if existing:
        raise Conflict("This evaluator already has this proposal in this round.")
    return _assign(uow, round_, [(proposal_id, evaluator_id)], by)


def auto_assign(
    uow: UnitOfWork, by: Principal, round_id: str, evaluator_ids: list[str] | None = None
) -> list[Assignment]:
    """Give every proposal of the round its evaluators (``rules.plan_assignments``), all or nothing: when
    the constraints cannot be met, :class:`Unassignable` names each proposal that lacks evaluators and why.
    Locks the round row first (see the module doc): a second organiser at the same time adds nothing."""
    round_ = _lock_round(uow, round_id)
    if round_.state != "open":
        raise Conflict("The round is closed; it takes no assignments.")
    query = select(Account).where(Account.role == "evaluator", Account.active.is_(True))
    if evaluator_ids is not None:
        query = query.where(Account.id.in_(evaluator_ids))
    pool = [rules.EvaluatorSlot(a.id, a.opd) for a in uow.session.scalars(query.order_by(Account.id))]
    if evaluator_ids is not None and len(pool) != len(set(evaluator_ids)):
        unknown = sorted(set(evaluator_ids) - {e.id for e in pool})
        raise RuleViolation(
            "Unknown evaluators.", {"evaluator_ids": [f"No active evaluator has id {i}." for i in unknown]}
        )
    proposals = _proposal_slots(uow, round_id)
    existing = set(
        uow.session.execute(
            select(Assignment.proposal_id, Assignment.evaluator_id).where(Assignment.round_id == round_id)
        ).tuples()
    )
    conflicts = set(
        uow.session.execute(
            select(ConflictOfInterest.evaluator_id, ConflictOfInterest.proposal_id).where(
                ConflictOfInterest.proposal_id.in_([p.id for p in proposals])
            )
        ).tuples()
    )
    plan = rules.plan_assignments(proposals, pool, round_.evaluators_per_proposal, conflicts, existing)
    if not plan.feasible:
        errors = {
            f"proposals.{s.proposal_id}": [f"Lacks {s.missing} evaluator(s). {s.reason}"] for s in plan.shortfalls
        }
        errors.update({f"evaluators.{eid}": [why] for eid, why in plan.evaluator_problems.items()})
        raise Unassignable("Nothing was assigned: the constraints cannot all be met; see errors.", errors)
    return _assign(uow, round_, plan.pairs, by)


def list_assignments(
    uow: UnitOfWork, evaluator_id: str, round_id: str | None, limit: int, offset: int
) -> list[tuple[Assignment, Round, Proposal, Evaluation | None]]:
    query = (
        select(Assignment, Round, Proposal, Evaluation)
        .join(Round, Round.id == Assignment.round_id)
        .join(Proposal, Proposal.id == Assignment.proposal_id)
        .outerjoin(Evaluation, Evaluation.assignment_id == Assignment.id)
        .where(Assignment.evaluator_id == evaluator_id)
        .order_by(Round.created_at, Assignment.assigned_at, Assignment.id)
        .limit(limit)
        .offset(offset)
    )
    if round_id:
        query = query.where(Assignment.round_id == round_id)
    return list(uow.session.execute(query).tuples())


def own_assignment(uow: UnitOfWork, principal: Principal, assignment_id: str) -> tuple[Assignment, Round, Proposal]:
    """An assignment of the calling evaluator (another evaluator's: 403, naming nothing of it)."""
    assignment = uow.session.get(Assignment, assignment_id)
    if assignment is None:
        raise NotFound("No assignment has this id.")
    if assignment.evaluator_id != principal.account_id:
        raise Forbidden("This assignment is another evaluator's.")
    round_ = uow.session.get(Round, assignment.round_id)
    proposal = uow.session.get(Proposal, assignment.proposal_id)
    assert round_ is not None and proposal is not None
    return assignment, round_, proposal


def own_evaluation(uow: UnitOfWork, assignment_id: str) -> Evaluation | None:
    return uow.session.get(Evaluation, assignment_id)


def record_evaluation(
    uow: UnitOfWork,
    principal: Principal,
    assignment_id: str,
    scores: dict[str, float],
    comment: str | None,
    reasons: dict[str, str] | None = None,
) -> Evaluation:
    """Store or revise the caller's evaluation while the round is open (the round row ``FOR SHARE``: never
    while it closes); emits ``evaluation.submitted`` without any score."""
    assignment, _round, _proposal = own_assignment(uow, principal, assignment_id)
    round_ = _lock_round(uow, assignment.round_id, shared=True)
    if round_.state != "open":
        raise Conflict("The round is closed; its evaluations can no longer change.")
    criteria = round_criteria(round_)
    problems = rules.evaluation_problems(round_.kind, criteria, scores, reasons)
    if problems:
        raise RuleViolation("The evaluation breaks the round's rubric: see the fields named.", problems)
    total = scoring.weighted_total(scores, _scoring_criteria(criteria))
    evaluation = uow.session.get(Evaluation, assignment_id, with_for_update=True)
    now = _now()
    if evaluation is None:
        evaluation = Evaluation(assignment_id=assignment_id, revision=0)
        uow.session.add(evaluation)
    evaluation.scores = {key: float(value) for key, value in scores.items()}
    evaluation.reasons = {key: rules.one_line_ending(text) for key, text in (reasons or {}).items() if text}
    evaluation.comment = rules.one_line_ending(comment)
    evaluation.total = total
    evaluation.revision += 1
    evaluation.submitted_at = now
    uow.publish(
        "evaluation.submitted",
        {
            "assignment_id": assignment.id,
            "round_id": round_.id,
            "proposal_id": assignment.proposal_id,
            "evaluator_id": principal.account_id,
            "evaluator_email": _evaluator_email(uow, principal),
            "revision": evaluation.revision,
            "submitted_at": now,
        },
        subject=assignment.id,
    )
    uow.flush()
    return evaluation


def _evaluator_email(uow: UnitOfWork, principal: Principal) -> str:
    account = uow.session.get(Account, principal.account_id)
    return account.email if account else principal.email


def declare_conflict(uow: UnitOfWork, principal: Principal, proposal_id: str, reason: str) -> int:
    """Record an evaluator's conflict of interest with a proposal; their assignments of it that they have
    not evaluated yet, in open rounds, are withdrawn (the organisers assign again). Returns how many."""
    if uow.session.get(Proposal, proposal_id) is None:
        raise RuleViolation("Unknown proposal.", {"proposal_id": ["No proposal has this id."]})
    upsert(
        uow.session,
        ConflictOfInterest.__table__,
        {"evaluator_id": principal.account_id, "proposal_id": proposal_id, "reason": reason, "declared_at": _now()},
        key=("evaluator_id", "proposal_id"),
    )
    withdrawn = list(
        uow.session.scalars(
            select(Assignment.id)
            .join(Round, Round.id == Assignment.round_id)
            .outerjoin(Evaluation, Evaluation.assignment_id == Assignment.id)
            .where(
                Assignment.evaluator_id == principal.account_id,
                Assignment.proposal_id == proposal_id,
                Round.state == "open",
                Evaluation.assignment_id.is_(None),
            )
        )
    )
    if withdrawn:
        uow.session.execute(delete(Assignment).where(Assignment.id.in_(withdrawn)))
    return len(withdrawn)


# --- publication and objections ----------------------------------------------------------------------------


def publish_results(uow: UnitOfWork, round_id: str) -> Round:
    """Publish a closed round's results: one ``results.published`` per proposal. With an objection window
    the first publication is provisional (``final`` false, until ``objection_deadline``); the final list is
    published after the window, once every objection has its answer."""
    round_ = _lock_round(uow, round_id)
    now = _now()
    open_objections = uow.session.scalar(
        select(func.count()).select_from(Objection).where(Objection.round_id == round_id, Objection.state == "open")
    )
    refusal = rules.publication_refusal(
        round_.state, round_.provisional_at, round_.final_at, round_.objection_deadline, open_objections, now
    )
    if refusal:
        raise Conflict(refusal)
    undecided = uow.session.scalar(
        select(func.count())
        .select_from(RoundEntry)
        .where(RoundEntry.round_id == round_id, RoundEntry.advanced.is_(None))
    )
    if undecided:
        raise Conflict(f"{undecided} proposal(s) await the organisers' decision whether they advance.")
    if round_.provisional_at is None:
        round_.provisional_at = now
        round_.objection_deadline = rules.objection_deadline(now, round_.objection_days)
        if round_.objection_deadline is None:
            round_.final_at = now
    else:
        round_.final_at = now
    rows = list(
        uow.session.execute(
            select(RoundEntry, Proposal, RegistrationView)
            .join(Proposal, Proposal.id == RoundEntry.proposal_id)
            .join(RegistrationView, RegistrationView.id == Proposal.registration_id)
            .where(RoundEntry.round_id == round_id)
            .order_by(RoundEntry.rank, Proposal.id)
        ).tuples()
    )
    ranked_count = sum(1 for entry, _p, _r in rows if entry.score is not None)
    for entry, proposal, team in rows:
        uow.publish(
            "results.published",
            {
                **_told_to_team(round_, proposal, team),
                "opd": proposal.opd,
                "rank": entry.rank if entry.score is not None else None,
                "ranked_proposals": ranked_count,
                "advanced": entry.advanced,
                "reason": entry.reason,
                "final": round_.final_at is not None,
                "objection_deadline": round_.objection_deadline,
            },
            subject=proposal.id,
        )
    uow.flush()
    return round_


def _told_to_team(round_: Round, proposal: Proposal, team: RegistrationView) -> dict[str, Any]:
    """What every event told to a team about a round carries: the round, the proposal, and who the team is."""
    return {
        "round_id": round_.id,
        "round_name": round_.name,
        "programme_id": round_.programme_id,
        "proposal_id": proposal.id,
        "proposal_title": proposal.title,
        "registration_id": team.id,
        "team_name": team.name,
        "team_email": team.email,
        "language": team.language,
    }


def file_objection(uow: UnitOfWork, principal: Principal, proposal_id: str, round_id: str, text: str) -> Objection:
    """A team objects to a round's provisional result for its proposal, within the objection window."""
    _own_proposal(uow, principal, proposal_id)
    round_ = get_round(uow, round_id)
    if uow.session.get(RoundEntry, (round_id, proposal_id)) is None:
        raise RuleViolation("Not in this round.", {"round_id": ["Your proposal is not in this round."]})
    refusal = rules.objection_refusal(round_.provisional_at, round_.objection_deadline, _now())
    if refusal:
        raise Conflict(refusal)
    objection = Objection(
        id=new_id(), round_id=round_id, proposal_id=proposal_id, text=text, filed_at=_now(), state="open"
    )
    uow.session.add(objection)
    uow.flush()
    return objection


def list_objections(uow: UnitOfWork, round_id: str, limit: int, offset: int) -> list[Objection]:
    get_round(uow, round_id)
    query = (
        select(Objection)
        .where(Objection.round_id == round_id)
        .order_by(Objection.filed_at, Objection.id)
        .limit(limit)
        .offset(offset)
    )
    return list(uow.session.scalars(query))


def answer_objection(uow: UnitOfWork, by: Principal, objection_id: str, decision: str, reason: str) -> Objection:
    """The organisers' answer: ``upheld`` (they may then change the decision, :func:`decide`) or
    ``rejected``, with the reason; ``objection.answered`` tells the team, in the same transaction. The
    objection row is locked, so of two organisers answering at once exactly one answers and one event goes."""
    objection = uow.session.get(Objection, objection_id, with_for_update=True)
    if objection is None:
        raise NotFound("No objection has this id.")
    if objection.state != "open":
        raise Conflict("This objection is already answered.")
    objection.state, objection.answer = decision, reason
    objection.answered_by, objection.answered_at = by.account_id, _now()
    round_ = get_round(uow, objection.round_id)
    proposal, team = uow.session.execute(
        select(Proposal, RegistrationView)
        .join(RegistrationView, RegistrationView.id == Proposal.registration_id)
        .where(Proposal.id == objection.proposal_id)
    ).one()
    uow.publish(
        "objection.answered",
        {
            **_told_to_team(round_, proposal, team),
            "objection_id": objection.id,
            "decision": decision,
            "answer": reason,
            "filed_at": objection.filed_at,
            "answered_at": objection.answered_at,
        },
        subject=proposal.id,
    )
    uow.flush()
    return objection


def team_objections(uow: UnitOfWork, proposal_id: str) -> list[Objection]:
    return list(
        uow.session.scalars(select(Objection).where(Objection.proposal_id == proposal_id).order_by(Objection.filed_at))
    )


def results_rows(uow: UnitOfWork, round_id: str) -> list[dict[str, Any]]:
    """The ranking joined with each proposal's title and OPD, for the page and the CSV."""
    results = round_results(uow, round_id)
    proposals = {
        p.id: p
        for p in uow.session.scalars(
            select(Proposal)
            .join(RoundEntry, RoundEntry.proposal_id == Proposal.id)
            .where(RoundEntry.round_id == round_id)
        )
    }
    entries = {e.proposal_id: e for e in uow.session.scalars(select(RoundEntry).where(RoundEntry.round_id == round_id))}
    rows = []
    for ranked in results["ranking"]:
        proposal = proposals.get(ranked["proposal_id"])
        entry = entries.get(ranked["proposal_id"])
        rows.append(
            {
                **ranked,
                "title": proposal.title if proposal else "",
                "opd": proposal.opd if proposal else "",
                "advanced": entry.advanced if entry else None,
                "reason": entry.reason if entry else None,
            }
        )
    return rows


def criterion_scores(uow: UnitOfWork, round_id: str) -> dict[str, list[float]]:
    """Every score given in the round, by criterion key (for the distribution chart)."""
    by_key: dict[str, list[float]] = {}
    for _assignment, evaluation in _evaluations_of(uow, round_id):
        for key, value in evaluation.scores.items():
            by_key.setdefault(key, []).append(float(value))
    return by_key
