"""The statistics of an evaluation round, as pure functions: plain values in, plain values out.

Why a module of its own: the results of a round are what organisers publish and teams may object to, so every
number must be reproducible by hand from the scores, and testable in milliseconds without a database or an app.
The results endpoint loads the round's criteria and evaluations, calls :func:`round_results`, and serialises
:meth:`RoundResults.to_dict` (which has exactly the shape of ``GET /evaluation/api/v1/rounds/{id}/results``);
:data:`METHOD_DESCRIPTION` is the text that endpoint's API description shows.

Only the standard library is imported: no database, web framework, mail or broker (a unit test checks what
importing the module loads). Every step is linear in the number of evaluations except the two sorts
(ranking, listing), so a round of 3,000 proposals × 3 evaluators is computed in a few tens of milliseconds
(``make bench``, part ``results``). Sums go through :func:`math.fsum`, which is correctly rounded: the same
multiset of scores gives bit-for-bit the same mean whatever order the evaluations were loaded in, so a ranking
never depends on the order of rows a query happened to return.

The method (also in :data:`METHOD_DESCRIPTION`):

* **weighted total** of one evaluation: Σ wᵢ·sᵢ / Σ wᵢ over the counted (non-informational) criteria;
* per proposal: **mean** and **median** of its weighted totals, **spread** = range (highest − lowest weighted
  total; 0 for one evaluation), the number of **evaluations**; a proposal without evaluations has nulls;
* **normalised** score: each evaluator's weighted totals standardised over the proposals that evaluator rated,
  z = (x − μₑ)/σₑ (population standard deviation; z = 0 when the evaluator has a single evaluation or gave the
  same total everywhere), averaged per proposal and mapped back onto the scale as μ + σ·z̄ with μ, σ the mean
  and population standard deviation of all weighted totals of the round;
* **ranking** by the round's score (``mean`` or ``normalised``), ties broken by the other score, then the
  median, then more evaluations, then the proposal id ascending; scores equal to 9 decimals count as equal;
  ranks are 1..n without gaps; proposals without evaluations come last, by id;
* **agreement**: Krippendorff's alpha, interval metric, over the weighted totals (:func:`krippendorff_alpha_interval`);
* **leniency** of an evaluator: the mean, over their evaluations of proposals someone else rated too, of their
  total minus the mean of the other evaluators' totals on that proposal (:func:`evaluator_leniency`);
* **flagged**: proposals with at least two evaluations whose spread exceeds ``disagreement_threshold`` × the
  width of the scale (default 0.25: more than 2.25 points apart on a 1–10 scale).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

RankingBy = Literal["mean", "normalised"]
RANKING_SCORES: tuple[RankingBy, ...] = ("mean", "normalised")

#: A proposal is flagged when its weighted totals lie further apart than this fraction of the scale's width.
DEFAULT_DISAGREEMENT_THRESHOLD = 0.25

#: Scores equal to this many decimals are a tie (so that two mathematically equal normalised scores reached
#: through different evaluators' standard deviations do not differ by a rounding error in the last bit).
TIE_DECIMALS = 9


class ScoringError(ValueError):
    """Scores or criteria the statistics cannot be computed from; the message names what is wrong."""


class MissingScoreError(ScoringError):
    """An evaluation lacks the score of a counted criterion (informational criteria may be left out)."""

    def __init__(self, key: str, proposal_id: Hashable | None = None, evaluator_id: Hashable | None = None):
        self.key = key
        self.proposal_id = proposal_id
        self.evaluator_id = evaluator_id
        whose = "" if proposal_id is None else f"the evaluation of proposal {proposal_id} by evaluator {evaluator_id}: "
        super().__init__(f"{whose}no score for the counted criterion {key!r}")


@dataclass(frozen=True)
class Criterion:
    """One criterion of a rubric: its key, its weight and its scale [min, max]; an informational criterion is
    shown to people but not counted in the weighted total."""

    key: str
    weight: float = 1.0
    min: float = 1.0
    max: float = 10.0
    informational: bool = False

    def __post_init__(self) -> None:
        if not all(math.isfinite(value) for value in (self.weight, self.min, self.max)):
            raise ScoringError(f"criterion {self.key!r}: weight and scale must be finite numbers")
        if self.weight < 0:
            raise ScoringError(f"criterion {self.key!r}: the weight must not be negative (it is {self.weight})")
        if not self.min < self.max:
            raise ScoringError(f"criterion {self.key!r}: the scale needs min < max (it is {self.min}..{self.max})")


@dataclass(frozen=True)
class Evaluation:
    """One evaluator's scores for one proposal, by criterion key. Ids are of one kind per round (str, int or
    UUID) so that they sort."""

    proposal_id: Hashable
    evaluator_id: Hashable
    scores: Mapping[str, float]


@dataclass(frozen=True)
class RankedProposal:
    proposal_id: Hashable
    rank: int
    mean: float | None
    median: float | None
    spread: float | None
    normalised: float | None
    evaluations: int


@dataclass(frozen=True)
class Agreement:
    krippendorff_alpha_interval: float | None


@dataclass(frozen=True)
class EvaluatorLeniency:
    evaluator_id: Hashable
    leniency: float | None


@dataclass(frozen=True)
class RoundResults:
    """The results of a round, field for field the body of ``GET /evaluation/api/v1/rounds/{id}/results``."""

    ranking: list[RankedProposal]
    agreement: Agreement
    evaluators: list[EvaluatorLeniency]
    flagged: list[Hashable] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body (ids as they were given: the endpoint turns UUIDs into strings if it uses them)."""
        return asdict(self)


# --- one evaluation ----------------------------------------------------------------------------------------------


def counted_criteria(criteria: Sequence[Criterion]) -> list[Criterion]:
    """The criteria the weighted total counts; refuses a rubric whose counted weights add up to nothing."""
    counted = [criterion for criterion in criteria if not criterion.informational]
    if math.fsum(criterion.weight for criterion in counted) <= 0:
        raise ScoringError("the rubric needs at least one counted criterion with a positive weight")
    return counted


def weighted_total(scores: Mapping[str, float], criteria: Sequence[Criterion]) -> float:
    """Σ wᵢ·sᵢ / Σ wᵢ over the counted criteria: on the criteria's own scale (a weighted average, not a sum).

    Informational criteria and keys the rubric does not know are ignored here (:func:`score_problems` is the
    check an API applies to what an evaluator submits); a missing counted criterion raises
    :class:`MissingScoreError` naming it.
    """
    counted = counted_criteria(criteria)
    return _weighted_total(scores, counted, math.fsum(criterion.weight for criterion in counted))


def _weighted_total(scores: Mapping[str, float], counted: Sequence[Criterion], weight_sum: float) -> float:
    products = []
    for criterion in counted:
        try:
            products.append(criterion.weight * scores[criterion.key])
        except KeyError:
            raise MissingScoreError(criterion.key) from None
    return math.fsum(products) / weight_sum


def total_scale(criteria: Sequence[Criterion]) -> tuple[float, float]:
    """The lowest and highest weighted total the rubric allows (the criteria's scale when they share one)."""
    counted = counted_criteria(criteria)
    weight_sum = math.fsum(criterion.weight for criterion in counted)
    low = math.fsum(criterion.weight * criterion.min for criterion in counted) / weight_sum
    high = math.fsum(criterion.weight * criterion.max for criterion in counted) / weight_sum
    return low, high


def score_problems(scores: Mapping[str, object], criteria: Sequence[Criterion]) -> dict[str, str]:
    """What is wrong with an evaluator's submitted scores, by criterion key (empty when nothing is): an unknown
    criterion, a score that is not a number or lies outside its criterion's scale, a missing counted criterion.
    Informational criteria may be left out; when given they must be on their scale too."""
    by_key = {criterion.key: criterion for criterion in criteria}
    problems: dict[str, str] = {}
    for key, value in scores.items():
        criterion = by_key.get(key)
        if criterion is None:
            problems[key] = "unknown criterion"
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            problems[key] = "must be a number"
        elif not criterion.min <= value <= criterion.max:
            problems[key] = f"must be between {_plain(criterion.min)} and {_plain(criterion.max)}"
    for criterion in criteria:
        if not criterion.informational and criterion.key not in scores:
            problems[criterion.key] = "missing: a score is required for this criterion"
    return problems


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


# --- a round -----------------------------------------------------------------------------------------------------


def weighted_totals(
    criteria: Sequence[Criterion], evaluations: Iterable[Evaluation]
) -> dict[Hashable, dict[Hashable, float]]:
    """Every evaluation's weighted total, as {proposal id: {evaluator id: total}}.

    Refuses two evaluations of one proposal by one evaluator (a round stores one, revised in place)."""
    counted = counted_criteria(criteria)
    weight_sum = math.fsum(criterion.weight for criterion in counted)
    totals: dict[Hashable, dict[Hashable, float]] = defaultdict(dict)
    for evaluation in evaluations:
        of_proposal = totals[evaluation.proposal_id]
        if evaluation.evaluator_id in of_proposal:
            raise ScoringError(f"evaluator {evaluation.evaluator_id} evaluated proposal {evaluation.proposal_id} twice")
        try:
            of_proposal[evaluation.evaluator_id] = _weighted_total(evaluation.scores, counted, weight_sum)
        except MissingScoreError as missing:
            raise MissingScoreError(missing.key, evaluation.proposal_id, evaluation.evaluator_id) from None
    return dict(totals)


def krippendorff_alpha_interval(units: Iterable[Sequence[float]]) -> float | None:
    """Krippendorff's alpha with the interval metric δ(c, k)² = (c − k)², from the values of each unit.

    Here a unit is a proposal and its values are the weighted totals of whoever evaluated it: alpha uses which
    values share a unit, never which coder gave them, so evaluators may rate different subsets. Only pairable
    values count: units with at least two values; n is the number of pairable values, mᵤ those of unit u.

    Krippendorff's definition, α = 1 − D_o / D_e, with the coincidence-matrix disagreements

        D_o = 1/n · Σᵤ 1/(mᵤ − 1) · Σ_{i≠j in u} (vᵢ − vⱼ)²        (observed: pairs within a unit)
        D_e = 1/(n(n − 1)) · Σ_{i≠j over all pairable values} (vᵢ − vⱼ)²   (expected: all pairs)

    Over ordered pairs of m values, Σ_{i≠j} (vᵢ − vⱼ)² = 2m · SS with SS = Σ (v − v̄)², so

        D_o = 2/n · Σᵤ mᵤ·SSᵤ/(mᵤ − 1)      D_e = 2·SS_all/(n − 1)
        α = 1 − (n − 1) · Σᵤ [mᵤ·SSᵤ/(mᵤ − 1)] / (n · SS_all)

    which is linear in the number of values (two passes for SS, each sum correctly rounded).

    None when alpha is not defined: fewer than two pairable units (with one unit α is 0 whatever the values,
    which says nothing) or no variation at all among the pairable values (D_e = 0). α = 1 is perfect agreement,
    0 is what chance gives, below 0 is systematic disagreement; Krippendorff suggests relying on data with
    α ≥ 0.8 and drawing tentative conclusions from 0.667 ≤ α < 0.8.
    """
    pairable = [[float(value) for value in values] for values in units if len(values) >= 2]
    if len(pairable) < 2:
        return None
    all_values = [value for values in pairable for value in values]
    n = len(all_values)
    ss_all = _sum_of_squares(all_values)
    if ss_all == 0:
        return None
    within = math.fsum(len(values) * _sum_of_squares(values) / (len(values) - 1) for values in pairable)
    return 1 - (n - 1) * within / (n * ss_all)


def _sum_of_squares(values: Sequence[float]) -> float:
    centre = math.fsum(values) / len(values)
    return math.fsum((value - centre) ** 2 for value in values)


def normalised_scores(totals: Mapping[Hashable, Mapping[Hashable, float]]) -> dict[Hashable, float]:
    """Each evaluated proposal's score corrected for lenient and strict evaluators, on the scale of the totals.

    Every evaluator's totals are standardised over the proposals that evaluator rated, z = (x − μₑ)/σₑ with σₑ
    the population standard deviation; z = 0 when the evaluator has one evaluation or σₑ = 0 (their totals
    cannot tell proposals apart, so they move none up or down). A proposal's z̄ is the mean of its z-scores,
    reported as μ + σ·z̄ with μ and σ the mean and population standard deviation of all totals of the round
    (all μ when σ = 0). The mapping is linear and the same for every proposal, so it changes no ranking; it
    only puts the number on the scale people know. A strongly above-average proposal may land slightly
    outside the scale: the value is not clipped, since clipping would make ties.

    It assumes each evaluator received a comparable mix of proposals (what balanced random assignment gives):
    an evaluator who happens to get only the strongest proposals is corrected downwards as if lenient.
    """
    by_evaluator: dict[Hashable, list[tuple[Hashable, float]]] = defaultdict(list)
    for proposal_id, of_proposal in totals.items():
        for evaluator_id, total in of_proposal.items():
            by_evaluator[evaluator_id].append((proposal_id, total))
    z_scores: dict[Hashable, list[float]] = defaultdict(list)
    for rated in by_evaluator.values():
        values = [total for _, total in rated]
        centre = math.fsum(values) / len(values)
        deviation = math.sqrt(math.fsum((value - centre) ** 2 for value in values) / len(values))
        for proposal_id, total in rated:
            z_scores[proposal_id].append((total - centre) / deviation if deviation > 0 else 0.0)
    every_total = [total for of_proposal in totals.values() for total in of_proposal.values()]
    if not every_total:
        return {}
    mu = math.fsum(every_total) / len(every_total)
    sigma = math.sqrt(math.fsum((total - mu) ** 2 for total in every_total) / len(every_total))
    return {proposal_id: mu + sigma * (math.fsum(zs) / len(zs)) for proposal_id, zs in z_scores.items()}


def evaluator_leniency(totals: Mapping[Hashable, Mapping[Hashable, float]]) -> dict[Hashable, float | None]:
    """How much higher (positive) or lower (negative) than the rest of the panel each evaluator scores, in
    points of the scale: the mean, over the evaluator's evaluations of proposals that someone else evaluated
    too, of (their total − the mean of the other evaluators' totals on that proposal). None for an evaluator
    who shares no proposal with anyone (there is nobody to compare with)."""
    differences: dict[Hashable, list[float]] = {}
    for of_proposal in totals.values():
        for evaluator_id in of_proposal:
            differences.setdefault(evaluator_id, [])
        if len(of_proposal) < 2:
            continue
        proposal_sum = math.fsum(of_proposal.values())
        others = len(of_proposal) - 1
        for evaluator_id, total in of_proposal.items():
            differences[evaluator_id].append(total - (proposal_sum - total) / others)
    return {
        evaluator_id: (math.fsum(found) / len(found) if found else None) for evaluator_id, found in differences.items()
    }


def round_results(
    criteria: Sequence[Criterion],
    evaluations: Iterable[Evaluation],
    proposal_ids: Iterable[Hashable] = (),
    ranking_by: RankingBy = "normalised",
    disagreement_threshold: float = DEFAULT_DISAGREEMENT_THRESHOLD,
) -> RoundResults:
    """The results of one round: ranking, agreement, each evaluator's leniency, the proposals to look at again.

    ``proposal_ids`` are the round's proposals, so that those nobody evaluated are listed too (with nulls,
    ranked last by id); a proposal that has evaluations is listed whether or not it is named there.
    ``ranking_by`` is the round's ranked score; ties are broken by the other score, then the median, then the
    larger number of evaluations, then the proposal id ascending (scores equal to ``TIE_DECIMALS`` decimals
    tie), and ranks run 1..n without gaps. ``disagreement_threshold`` is a fraction of the width of the scale
    of the weighted totals: a proposal with two or more evaluations whose spread (highest − lowest total) is
    greater than it is flagged; flagged proposals are listed in ranking order, evaluators by id.
    """
    if ranking_by not in RANKING_SCORES:
        raise ScoringError(f"ranking_by must be one of {', '.join(RANKING_SCORES)} (it is {ranking_by!r})")
    if not 0 <= disagreement_threshold <= 1:
        raise ScoringError(f"disagreement_threshold is a fraction of the scale, 0..1 (it is {disagreement_threshold})")
    low, high = total_scale(criteria)
    totals = weighted_totals(criteria, evaluations)
    normalised = normalised_scores(totals)

    evaluated: list[RankedProposal] = []
    for proposal_id, of_proposal in totals.items():
        values = sorted(of_proposal.values())
        evaluated.append(
            RankedProposal(
                proposal_id=proposal_id,
                rank=0,
                mean=math.fsum(values) / len(values),
                median=statistics.median(values),
                spread=values[-1] - values[0],
                normalised=normalised[proposal_id],
                evaluations=len(values),
            )
        )
    other_score = "mean" if ranking_by == "normalised" else "normalised"

    def order(proposal: RankedProposal) -> tuple:
        return (
            -round(getattr(proposal, ranking_by), TIE_DECIMALS),
            -round(getattr(proposal, other_score), TIE_DECIMALS),
            -round(proposal.median, TIE_DECIMALS),
            -proposal.evaluations,
            proposal.proposal_id,
        )

    evaluated.sort(key=order)
    unevaluated = sorted(set(proposal_ids) - totals.keys())  # ids of one kind sort
    ranking = [replace(proposal, rank=rank) for rank, proposal in enumerate(evaluated, start=1)]
    ranking += [
        RankedProposal(proposal_id, len(evaluated) + offset, None, None, None, None, 0)
        for offset, proposal_id in enumerate(unevaluated, start=1)
    ]

    limit = disagreement_threshold * (high - low)
    flagged = [
        proposal.proposal_id
        for proposal in evaluated
        if proposal.evaluations >= 2
        and proposal.spread is not None
        and round(proposal.spread, TIE_DECIMALS) > round(limit, TIE_DECIMALS)
    ]
    leniency = evaluator_leniency(totals)
    return RoundResults(
        ranking=ranking,
        agreement=Agreement(krippendorff_alpha_interval(list(of_proposal.values()) for of_proposal in totals.values())),
        evaluators=[EvaluatorLeniency(evaluator_id, leniency[evaluator_id]) for evaluator_id in sorted(leniency)],
        flagged=flagged,
    )


METHOD_DESCRIPTION = f"""\
**How the results are computed** (the same numbers can be recomputed by hand from the scores).

- **Weighted total** of one evaluation: Σ wᵢ·sᵢ / Σ wᵢ over the counted criteria (informational criteria are
  shown, not counted). It stays on the criteria's scale, e.g. 1–10.
- Per proposal: `mean` and `median` of its weighted totals; `spread` is the **range**, the highest minus the
  lowest weighted total (0 with one evaluation); `evaluations` is how many there are. A proposal nobody has
  evaluated is listed with `null` scores and ranked after every evaluated proposal, by id.
- `normalised` corrects for lenient and strict evaluators by **per-evaluator standardisation**: each
  evaluator's weighted totals become z-scores over the proposals that evaluator rated, z = (x − μₑ) / σₑ
  (μₑ, σₑ: that evaluator's mean and population standard deviation; z = 0 when an evaluator has only one
  evaluation or gave every proposal the same total). A proposal's normalised score is the mean of its
  z-scores, put back on the scale as μ + σ·z̄, where μ and σ are the mean and population standard deviation
  of all weighted totals of the round. It is not clipped to the scale. It assumes every evaluator received a
  comparable mix of proposals, which balanced assignment gives.
- **Ranking** by the round's score (`mean` or `normalised`). Ties are broken by the other score, then the
  median, then the larger number of evaluations, then the proposal id (ascending); scores that agree to
  {TIE_DECIMALS} decimal places are a tie. Ranks are 1, 2, 3, … without gaps.
- `agreement.krippendorff_alpha_interval`: **Krippendorff's alpha** with the interval metric over the weighted
  totals; units are proposals, coders are evaluators, so evaluators may rate different subsets. Only
  proposals with at least two evaluations count. α = 1 − D_o/D_e, which for the interval metric is
  1 − (n − 1)·Σᵤ[mᵤ·SSᵤ/(mᵤ − 1)] / (n·SS), with mᵤ and SSᵤ the number of totals of proposal u and their sum of
  squared deviations from its mean, n and SS those of all these totals together. `null` when fewer than two
  proposals have two evaluations or all the totals are equal. 1 is perfect agreement, 0 what chance gives;
  α ≥ 0.8 is commonly taken as reliable, 0.667–0.8 as tentative.
- `evaluators[].leniency`: how many points higher (positive) or lower (negative) an evaluator scores than
  the rest of the panel: the mean, over their evaluations of proposals someone else evaluated too, of their
  weighted total minus the mean of the other evaluators' totals on that proposal. `null` when they share no
  proposal with another evaluator.
- `flagged`: proposals with at least two evaluations whose spread is greater than the disagreement
  threshold, a fraction of the width of the scale (by default {DEFAULT_DISAGREEMENT_THRESHOLD:g}: more than
  {DEFAULT_DISAGREEMENT_THRESHOLD * 9:g} points apart on a 1–10 scale); each needs another evaluator. Listed in
  ranking order.
"""
