"""The evaluation service's decisions, as pure functions over plain values (the functional core).

No database, web framework, mail or broker here (import-linter holds this); ``domain.py`` loads the state,
asks these, and writes what they decide. The statistics of a round's results (means, normalisation,
agreement) are ``scoring.py``'s; this module decides everything around them:

- **proposals** — counting words the way a person does (:func:`count_words`), and what keeps a proposal
  from being saved or submitted (:func:`section_problems`);
- **rubrics** — the default rubric of the five national criteria and the default administrative checklist,
  and what is wrong with an evaluation (:func:`evaluation_problems`; its weighted total is ``scoring``'s);
- **assignment** — who evaluates which proposal (:func:`plan_assignments`, a flow with bounds, see there);
- **advancement** — who goes on to the next round, and the reason told to those who do not
  (:func:`decide_advancement`, :func:`checklist_outcome`);
- **publication and objections** — when results may be published and objections filed (masa sanggah);
- **spreadsheets** — cells a spreadsheet would run as formulas, and the CSV writer of the exports.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# --- proposals ----------------------------------------------------------------------------------------

#: The sections of the national (KIPP) proposal form and their word limits, in the form's order.
SECTION_LIMITS: dict[str, int] = {
    "summary": 200,
    "background": 300,
    "novelty": 200,
    "implementation": 200,
    "significance": 600,
    "adaptability": 300,
    "resources": 200,
    "sustainability": 500,
}

#: A word: letters or digits of any script, joined into one word by a hyphen, an apostrophe, a slash or the
#: separators inside a number — ``anak-anak``, ``e-KTP``, ``dan/atau``, ``1.500.000``, ``3,5`` and ``Jum'at``
#: are one word each, as a person counts them. Punctuation on its own (a dash, an ellipsis, a bullet) is none.
_WORD = re.compile(r"[^\W_]+(?:[-'’./,][^\W_]+)*")


def count_words(text: str | None) -> int:
    """How many words ``text`` has, counted as a person would (see :data:`_WORD`); spaces, tabs and new
    lines of any number only separate words."""
    return len(_WORD.findall(text or ""))


def section_problems(sections: Mapping[str, str | None], complete: bool) -> dict[str, list[str]]:
    """What is wrong with a proposal's sections, by field (``sections.<name>``): a section over its word limit
    always, and — when ``complete`` (submitting) — a missing or empty one. Empty when nothing is."""
    problems: dict[str, list[str]] = {}
    for name, limit in SECTION_LIMITS.items():
        words = count_words(sections.get(name))
        if words > limit:
            problems[f"sections.{name}"] = [f"At most {limit} words; this has {words}."]
        elif complete and words == 0:
            problems[f"sections.{name}"] = [f"Required before submitting (at most {limit} words)."]
    return problems


def submission_refusal(registration_status: str | None) -> str | None:
    """Why a team lead with a registration in this state may not write proposals, or ``None`` if they may.
    The state is this service's projection of registration's events: ``None`` means no event has arrived."""
    if registration_status == "confirmed":
        return None
    if registration_status is None:
        return "This service has not heard of your registration yet; try again in a minute."
    return "Only a confirmed registration may submit proposals; this one is cancelled."


# --- rubrics --------------------------------------------------------------------------------------------

KINDS = ("rubric", "checklist")


@dataclass(frozen=True)
class Criterion:
    """One line of a rubric (a score on ``low``..``high``) or of a checklist (pass = 1, fail = 0)."""

    key: str
    name: Mapping[str, str]  # by language: {"id": ..., "en": ...}
    weight: float = 1.0
    low: float = 1
    high: float = 10
    informational: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": dict(self.name),
            "weight": self.weight,
            "min": self.low,
            "max": self.high,
            "informational": self.informational,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Criterion:
        return cls(
            key=data["key"],
            name=dict(data["name"]),
            weight=float(data.get("weight", 1.0)),
            low=data.get("min", 1),
            high=data.get("max", 10),
            informational=bool(data.get("informational", False)),
        )


#: The five national criteria (KIPP), 1–10, equal weights.
DEFAULT_RUBRIC: tuple[Criterion, ...] = (
    Criterion("novelty", {"id": "Kebaruan", "en": "Novelty"}),
    Criterion("effectiveness", {"id": "Efektif", "en": "Effectiveness"}),
    Criterion("benefit", {"id": "Bermanfaat", "en": "Benefit"}),
    Criterion("replicability", {"id": "Dapat direplikasi", "en": "Replicability"}),
    Criterion("sustainability", {"id": "Berkelanjutan", "en": "Sustainability"}),
)

#: The administrative check: each item passes (1) or fails (0, with a reason).
DEFAULT_CHECKLIST: tuple[Criterion, ...] = (
    Criterion("form_complete", {"id": "Formulir lengkap", "en": "Form complete"}, low=0, high=1),
    Criterion("implemented", {"id": "Sudah diterapkan", "en": "Already implemented"}, low=0, high=1),
    Criterion("supporting_material", {"id": "Bukti pendukung tersedia", "en": "Supporting material"}, low=0, high=1),
)


def default_criteria(kind: str) -> tuple[Criterion, ...]:
    return DEFAULT_CHECKLIST if kind == "checklist" else DEFAULT_RUBRIC


def criteria_problems(kind: str, criteria: Sequence[Criterion]) -> dict[str, list[str]]:
    """What is wrong with a round's own criteria (by field ``criteria``), empty when nothing is."""
    problems: list[str] = []
    keys = [c.key for c in criteria]
    if len(set(keys)) != len(keys):
        problems.append("Each criterion needs its own key.")
    if not any(not c.informational for c in criteria):
        problems.append("At least one criterion must be counted (not informational).")
    for c in criteria:
        if kind == "checklist" and (c.low, c.high) != (0, 1):
            problems.append(f"Checklist item {c.key!r} is pass/fail: min 0, max 1.")
        if c.low >= c.high:
            problems.append(f"Criterion {c.key!r}: min must be below max.")
        if c.weight <= 0:
            problems.append(f"Criterion {c.key!r}: the weight must be above 0.")
    return {"criteria": problems} if problems else {}


def evaluation_problems(
    kind: str, criteria: Sequence[Criterion], scores: Mapping[str, float], reasons: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """What is wrong with an evaluation, by field (``scores.<key>``, ``reasons.<key>``); empty if nothing.

    Refused: a criterion the round does not have, a score outside its criterion's scale (a checklist item is
    0 = fail or 1 = pass), a counted criterion without a score, and a failed checklist item without a reason.
    Informational criteria may be left out. The messages name only the caller's own input and the rubric."""
    reasons = reasons or {}
    by_key = {c.key: c for c in criteria}
    problems: dict[str, list[str]] = {}
    for key, value in scores.items():
        criterion = by_key.get(key)
        if criterion is None:
            problems[f"scores.{key}"] = [f"Unknown criterion; this round's are: {', '.join(by_key)}."]
        elif kind == "checklist" and value not in (0, 1):
            problems[f"scores.{key}"] = ["Must be 1 (pass) or 0 (fail)."]
        elif not criterion.low <= value <= criterion.high:
            problems[f"scores.{key}"] = [f"Must be between {_plain(criterion.low)} and {_plain(criterion.high)}."]
    for criterion in criteria:
        if not criterion.informational and criterion.key not in scores:
            problems[f"scores.{criterion.key}"] = ["Missing: every counted criterion needs a score."]
    if kind == "checklist":
        for key, value in scores.items():
            if key in by_key and value == 0 and not (reasons.get(key) or "").strip():
                problems[f"reasons.{key}"] = ["A failed item needs a reason."]
    for key in reasons:
        if key not in by_key:
            problems[f"reasons.{key}"] = [f"Unknown criterion; this round's are: {', '.join(by_key)}."]
    return problems


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def one_line_ending(text: str | None) -> str | None:
    r"""An evaluator's comment or reason with every line break as ``\n``: a browser's form sends ``\r\n``
    (HTML's form encoding), an API client usually ``\n``, and the same words must be stored the same way."""
    return None if text is None else text.replace("\r\n", "\n").replace("\r", "\n")


# --- assignment -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProposalSlot:
    """A proposal of the round, with the agency (OPD) that sent it."""

    id: str
    opd: str


@dataclass(frozen=True)
class EvaluatorSlot:
    id: str
    opd: str | None


@dataclass(frozen=True)
class Shortfall:
    """A proposal that cannot get its evaluators, how many it lacks, and why."""

    proposal_id: str
    missing: int
    reason: str


@dataclass(frozen=True)
class AssignmentPlan:
    """``pairs`` (proposal id, evaluator id) to add — or, when the constraints cannot be met, none and the
    ``shortfalls`` (proposals) and ``evaluator_problems`` (evaluator id → why) that say why."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    shortfalls: list[Shortfall] = field(default_factory=list)
    evaluator_problems: dict[str, str] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return not self.shortfalls and not self.evaluator_problems


def may_evaluate(evaluator: EvaluatorSlot, proposal: ProposalSlot, conflicts: set[tuple[str, str]]) -> str | None:
    """Why ``evaluator`` may not take ``proposal`` (their own agency's, or a declared conflict), or ``None``."""
    if evaluator.opd and evaluator.opd.casefold() == proposal.opd.casefold():
        return "own-opd"
    if (evaluator.id, proposal.id) in conflicts:
        return "conflict"
    return None


def plan_assignments(
    proposals: Sequence[ProposalSlot],
    evaluators: Sequence[EvaluatorSlot],
    per_proposal: int,
    conflicts: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    existing: Iterable[tuple[str, str]] = (),
) -> AssignmentPlan:
    """Give every proposal ``per_proposal`` evaluators in all (``existing`` pairs count), so that the loads of
    ``evaluators`` (the pool) end within one of each other, nobody takes a proposal of their own OPD or one
    they declared a conflict with, and nobody takes a proposal twice. All or nothing.

    **The algorithm: a flow with lower bounds, solved by max-flow (Dinic).** Let T be the evaluations still
    needed, S the pool's existing load plus T, and m the pool's size; loads within one of each other and
    summing to S are exactly loads in [q, q+1] with q = ⌊S/m⌋. The network: source → proposal p with
    capacity and lower bound need(p); p → evaluator e with capacity 1 where e may take p and does not yet;
    e → sink with lower bound max(0, q − existing(e)) and capacity q + 1 − existing(e). Every integer
    feasible flow is an assignment meeting every constraint and every such assignment is one, and by the
    integrality theorem an integer feasible flow exists whenever any does — so this finds an assignment
    whenever one exists. Lower bounds are removed the standard way (each bound becomes a demand at its head
    and a supply at its tail, met from a super source and sink); the plan is feasible iff that max flow
    meets every demand. Cost: O(E·√V) augmentations on a graph of P·m edges; 3,000 proposals × 60
    evaluators plans in about a second.

    When it is infeasible, the plan says why, in the order a person would fix it: a proposal fewer people
    may take than it needs (its OPD's evaluators, declared conflicts); proposals that cannot all be covered
    at once (the few who may take them are needed elsewhere); an evaluator already over the balanced load,
    or who may take too few proposals to keep the loads within one (leave them out of the pool).
    """
    pool = sorted({e.id: e for e in evaluators}.values(), key=lambda e: e.id)
    existing_pairs = set(existing)
    load = {e.id: 0 for e in pool}
    have: dict[str, int] = {p.id: 0 for p in proposals}
    for proposal_id, evaluator_id in existing_pairs:
        if proposal_id in have:
            have[proposal_id] += 1
            if evaluator_id in load:
                load[evaluator_id] += 1
    need = {p.id: max(0, per_proposal - have[p.id]) for p in proposals}
    total_needed = sum(need.values())
    if total_needed == 0:
        return AssignmentPlan()
    if not pool:
        return AssignmentPlan(
            shortfalls=[Shortfall(p.id, need[p.id], "No evaluator is known to this service.") for p in proposals]
        )
    allowed: dict[str, list[str]] = {}
    for p in proposals:
        allowed[p.id] = [
            e.id for e in pool if (p.id, e.id) not in existing_pairs and may_evaluate(e, p, set(conflicts)) is None
        ]

    shortfalls = _too_few_may_take(proposals, pool, need, allowed, existing_pairs, conflicts)
    if shortfalls:
        return AssignmentPlan(shortfalls=shortfalls)

    def solve(lower_load: dict[str, int] | None, upper_load: dict[str, int] | None):
        return _bounded_flow(proposals, pool, need, allowed, lower_load, upper_load)

    unbalanced = solve(None, None)
    if unbalanced.unmet:
        return AssignmentPlan(
            shortfalls=[
                Shortfall(
                    pid,
                    missing,
                    "Not enough evaluators to go round: those who may take it are needed by other proposals.",
                )
                for pid, missing in unbalanced.unmet.items()
            ]
        )
    quota = (sum(load.values()) + total_needed) // len(pool)
    over = {eid: n for eid, n in load.items() if n > quota + 1}
    if over:
        return AssignmentPlan(
            evaluator_problems={
                eid: f"Already has {n} proposals, more than the {quota + 1} that keep the loads within one."
                for eid, n in over.items()
            }
        )
    upper = {e.id: quota + 1 - load[e.id] for e in pool}
    lower = {e.id: max(0, quota - load[e.id]) for e in pool}
    balanced = solve(lower, upper)
    if balanced.unmet or balanced.under:
        reachable = {e.id: 0 for e in pool}
        for pid in allowed:
            if need[pid]:
                for eid in allowed[pid]:
                    reachable[eid] += 1
        problems = {
            eid: (
                f"May take only {reachable[eid]} more proposals, fewer than the {lower[eid]} needed to keep the "
                "loads within one; leave them out of the evaluators chosen."
            )
            for eid in balanced.under
        }
        return AssignmentPlan(
            shortfalls=[
                Shortfall(pid, missing, "The evaluators' loads cannot stay within one of each other.")
                for pid, missing in balanced.unmet.items()
            ],
            evaluator_problems=problems
            or {eid: "The evaluators' loads cannot stay within one of each other." for eid in balanced.under},
        )
    return AssignmentPlan(pairs=balanced.pairs)


def _too_few_may_take(proposals, pool, need, allowed, existing_pairs, conflicts) -> list[Shortfall]:
    shortfalls = []
    for p in proposals:
        if len(allowed[p.id]) >= need[p.id]:
            continue
        own = sum(1 for e in pool if may_evaluate(e, p, set()) == "own-opd")
        declared = sum(1 for e in pool if may_evaluate(e, p, set()) is None and (e.id, p.id) in conflicts)
        already = sum(1 for e in pool if (p.id, e.id) in existing_pairs)
        shortfalls.append(
            Shortfall(
                p.id,
                need[p.id] - len(allowed[p.id]),
                f"Only {len(allowed[p.id])} of {len(pool)} evaluators may take it, {need[p.id]} are needed: "
                f"{own} are of its OPD, {declared} declared a conflict, {already} have it already.",
            )
        )
    return shortfalls


@dataclass
class _FlowResult:
    pairs: list[tuple[str, str]]
    unmet: dict[str, int]  # proposal id → evaluations it still lacks
    under: list[str]  # evaluators left below their lower bound


def _bounded_flow(proposals, pool, need, allowed, lower_load, upper_load) -> _FlowResult:
    """The network of :func:`plan_assignments` as a circulation with demands, solved by one max-flow.

    Every lower bound l on an edge u → v becomes capacity ``upper − l``, a supply of l at v and a demand of l
    at u; the source → proposal edges have lower bound = capacity = need(p), the sink → source edge closes
    the circulation. A super source feeds every supply and a super sink drains every demand: the bounds are
    all met iff the max flow from one to the other saturates them."""
    source, sink, super_source, super_sink = 0, 1, 2, 3
    first_proposal = 4
    first_evaluator = first_proposal + len(proposals)
    graph = _FlowGraph(first_evaluator + len(pool))
    evaluator_node = {e.id: first_evaluator + i for i, e in enumerate(pool)}
    pair_edges: list[tuple[int, str, str]] = []
    supply_edges: dict[str, int] = {}
    total_needed = sum(need.values())
    for i, p in enumerate(proposals):
        node = first_proposal + i
        if need[p.id]:
            supply_edges[p.id] = graph.add(super_source, node, need[p.id])  # source → p, lower = upper = need
        for eid in allowed[p.id]:
            pair_edges.append((graph.add(node, evaluator_node[eid], 1), p.id, eid))
    graph.add(source, super_sink, total_needed)
    lower_edges: dict[str, int] = {}
    lower_total = 0
    for e in pool:
        node = evaluator_node[e.id]
        low = lower_load[e.id] if lower_load else 0
        high = upper_load[e.id] if upper_load else len(proposals)
        graph.add(node, sink, high - low)
        if low:
            lower_edges[e.id] = graph.add(node, super_sink, low)
            lower_total += low
    if lower_total:
        graph.add(super_source, sink, lower_total)
    graph.add(sink, source, total_needed + lower_total)
    graph.max_flow(super_source, super_sink)
    unmet = {pid: graph.capacity_left(edge) for pid, edge in supply_edges.items() if graph.capacity_left(edge)}
    under = [eid for eid, edge in lower_edges.items() if graph.capacity_left(edge)]
    pairs = [(pid, eid) for edge, pid, eid in pair_edges if graph.capacity_left(edge) == 0]
    return _FlowResult(pairs=pairs, unmet=unmet, under=under)


class _FlowGraph:
    """Dinic's max-flow on integer capacities, iterative (no recursion limit on large rounds)."""

    def __init__(self, nodes: int) -> None:
        self.adjacent: list[list[int]] = [[] for _ in range(nodes)]
        self.head: list[int] = []
        self.capacity: list[int] = []

    def add(self, tail: int, head: int, capacity: int) -> int:
        """Add an edge and its residual twin; returns the edge's index."""
        index = len(self.head)
        self.head += [head, tail]
        self.capacity += [capacity, 0]
        self.adjacent[tail].append(index)
        self.adjacent[head].append(index + 1)
        return index

    def capacity_left(self, edge: int) -> int:
        return self.capacity[edge]

    def max_flow(self, source: int, sink: int) -> int:
        total = 0
        while True:
            level = self._levels(source, sink)
            if level[sink] < 0:
                return total
            cursor = [0] * len(self.adjacent)
            while pushed := self._augment(source, sink, level, cursor):
                total += pushed

    def _levels(self, source: int, sink: int) -> list[int]:
        level = [-1] * len(self.adjacent)
        level[source] = 0
        queue = deque([source])
        while queue:
            node = queue.popleft()
            for edge in self.adjacent[node]:
                if self.capacity[edge] > 0 and level[self.head[edge]] < 0:
                    level[self.head[edge]] = level[node] + 1
                    queue.append(self.head[edge])
        return level

    def _augment(self, source: int, sink: int, level: list[int], cursor: list[int]) -> int:
        """One augmenting path along the level graph (depth-first, with a stack); its bottleneck, or 0."""
        path: list[int] = []
        node = source
        while True:
            if node == sink:
                bottleneck = min(self.capacity[edge] for edge in path)
                for edge in path:
                    self.capacity[edge] -= bottleneck
                    self.capacity[edge ^ 1] += bottleneck
                return bottleneck
            edges = self.adjacent[node]
            while cursor[node] < len(edges):
                edge = edges[cursor[node]]
                if self.capacity[edge] > 0 and level[self.head[edge]] == level[node] + 1:
                    break
                cursor[node] += 1
            else:  # a dead end: retreat
                if not path:
                    return 0
                level[node] = -1
                edge = path.pop()
                node = self.head[edge ^ 1]
                cursor[node] += 1
                continue
            path.append(edges[cursor[node]])
            node = self.head[edges[cursor[node]]]


# --- advancement ----------------------------------------------------------------------------------------

ADVANCEMENT_RULES = ("top_n", "threshold", "decision")


@dataclass(frozen=True)
class Ranked:
    """A proposal's place in a round's ranking (``rank`` ``None``: it received no evaluation)."""

    proposal_id: str
    rank: int | None
    score: float | None


def decide_advancement(rule: Mapping[str, Any], ranking: Sequence[Ranked]) -> dict[str, tuple[bool | None, str | None]]:
    """Who advances when a rubric round closes: proposal id → (advanced, the reason told to a proposal that
    did not). ``top_n``: the first ``n`` of the ranking; ``threshold``: a ranked score of at least ``min``;
    ``decision``: the organiser decides each one later (``None``). Unranked proposals never advance."""
    ranked_count = sum(1 for r in ranking if r.rank is not None and r.score is not None)
    outcome: dict[str, tuple[bool | None, str | None]] = {}
    for r in ranking:
        if r.rank is None or r.score is None:
            outcome[r.proposal_id] = (False, "It received no evaluation in this round.")
        elif rule["rule"] == "top_n":
            n = int(rule["n"])
            advanced = r.rank <= n
            outcome[r.proposal_id] = (
                advanced,
                None if advanced else f"Ranked {r.rank} of {ranked_count}; the first {n} advance.",
            )
        elif rule["rule"] == "threshold":
            advanced = r.score >= float(rule["min"])
            outcome[r.proposal_id] = (
                advanced,
                None if advanced else f"Scored {r.score:.2f}, below the threshold of {_plain(float(rule['min']))}.",
            )
        else:
            outcome[r.proposal_id] = (None, None)
    return outcome


def checklist_outcome(
    criteria: Sequence[Criterion], evaluations: Sequence[tuple[Mapping[str, float], Mapping[str, str]]]
) -> tuple[bool, str | None]:
    """An administrative check: a proposal passes when every evaluator passed every counted item; otherwise
    the reason lists each failed item with the evaluators' reasons."""
    if not evaluations:
        return False, "It received no administrative check."
    failed: dict[str, list[str]] = {}
    for scores, reasons in evaluations:
        for c in criteria:
            if not c.informational and scores.get(c.key) == 0:
                failed.setdefault(c.key, []).append((reasons.get(c.key) or "").strip())
    if not failed:
        return True, None
    names = {c.key: c.name.get("en", c.key) for c in criteria}
    return False, "; ".join(f"{names[key]}: {' / '.join(r for r in why if r)}" for key, why in failed.items())


# --- publication and objections (masa sanggah) -----------------------------------------------------------


def publication_refusal(
    state: str,
    provisional_at: datetime | None,
    final_at: datetime | None,
    deadline: datetime | None,
    open_objections: int,
    now: datetime,
) -> str | None:
    """Why a round's results may not be published now, or ``None``. The first publication of a closed round
    is provisional when it has an objection window, else final; the final list follows once the window has
    ended and every objection has its answer."""
    if state != "closed":
        return "Close the round before publishing its results."
    if final_at is not None:
        return "The final results of this round are already published."
    if provisional_at is None:
        return None
    if deadline is not None and now < deadline:
        return f"The objection window is open until {deadline.isoformat()}; publish the final list after it."
    if open_objections:
        return f"{open_objections} objection(s) still await an answer."
    return None


def objection_deadline(published_at: datetime, days: int) -> datetime | None:
    return published_at + timedelta(days=days) if days > 0 else None


def objection_refusal(provisional_at: datetime | None, deadline: datetime | None, now: datetime) -> str | None:
    """Why a team may not file an objection against a round now, or ``None``."""
    if provisional_at is None or deadline is None:
        return "This round's results are not open to objections."
    if now >= deadline:
        return f"The objection window closed at {deadline.isoformat()}."
    return None


# --- the results page's chart -------------------------------------------------------------------------------


def score_histogram(values: Iterable[float], low: float, high: float) -> list[tuple[int, int]]:
    """How many scores fall on each whole point of ``low``..``high`` (a score is counted at its nearest whole
    point): ``[(point, count), ...]``, every point present, for the per-criterion distribution chart."""
    points = list(range(int(low), int(high) + 1))
    counts = dict.fromkeys(points, 0)
    for value in values:
        nearest = min(max(int(round(value)), points[0]), points[-1])
        counts[nearest] += 1
    return list(counts.items())
