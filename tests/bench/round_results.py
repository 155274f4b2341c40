"""`make bench`, part ``results``: the time to compute an evaluation round's results, beside its ceiling.

The round is the issue's size: 3,000 proposals × 3 evaluators × the five national criteria, from a pool of
60 evaluators whose loads are balanced exactly (every block of 20 proposals deals out a fresh shuffle of the 60
evaluators, three to a proposal, so each evaluator rates 150 distinct proposals and the pairs vary), with
UUID ids as the evaluation service stores them. Scores are simulated: each proposal has a true quality, each
evaluator a leniency of their own, each score some noise, rounded to whole points on 1–10.

What is timed is :func:`services.evaluation.scoring.round_results` from plain values to the plain result —
weighted totals, per-proposal statistics, normalisation, ranking, Krippendorff's alpha, leniency and flags —
i.e. what the results endpoint computes once it has loaded the rows. Beside it, in the same run and the same
process, the ceiling: only the weighted totals (``weighted_totals``), the least any results computation must
do. On a shared, noisy machine the ratio of the two says more than either time alone. Each is repeated and
reported as the median and the best of the repeats; the data is built once, outside the timing.

The simulation also checks that the figures are worth computing: the rank correlation of the mean and of the
normalised score with the proposals' true quality, and of each evaluator's measured leniency with the one
simulated.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from services.evaluation.scoring import (
    Criterion,
    Evaluation,
    RoundResults,
    round_results,
    weighted_totals,
)

GOAL_SECONDS = 0.5
NATIONAL_CRITERIA = [
    Criterion(key) for key in ("novelty", "effectiveness", "benefit", "replicability", "sustainability")
]


@dataclass(frozen=True)
class SimulatedRound:
    criteria: list[Criterion]
    evaluations: list[Evaluation]
    proposal_ids: list[str]
    quality: dict[str, float]
    leniency: dict[str, float]


def simulated_round(proposals: int = 3000, evaluators: int = 60, per_proposal: int = 3, seed: int = 2017):
    """A round of ``proposals`` proposals, each rated by ``per_proposal`` distinct evaluators of the pool, with
    loads that differ by at most one (exactly equal when the numbers divide)."""
    if per_proposal > evaluators:
        raise ValueError("each proposal needs distinct evaluators: per_proposal must not exceed evaluators")
    generator = random.Random(seed)

    def new_id() -> str:
        return str(uuid.UUID(int=generator.getrandbits(128), version=4))

    pool = [new_id() for _ in range(evaluators)]
    leniency = {evaluator: generator.gauss(0, 0.8) for evaluator in pool}
    proposal_ids = [new_id() for _ in range(proposals)]
    quality = {proposal: generator.uniform(3, 8.5) for proposal in proposal_ids}
    deck: list[str] = []
    evaluations = []
    for proposal in proposal_ids:
        if len(deck) < per_proposal:  # a fresh shuffle of the whole pool once it is dealt out: balanced loads
            fresh = pool[:]
            generator.shuffle(fresh)
            fresh.sort(key=lambda evaluator: evaluator not in deck)  # the leftovers' second turn comes last
            deck = fresh + deck  # the leftovers of the last shuffle are dealt first (pop takes from the end)
        hand = [deck.pop() for _ in range(per_proposal)]
        for evaluator in hand:
            scores = {
                criterion.key: float(
                    min(10, max(1, round(quality[proposal] + leniency[evaluator] + generator.gauss(0, 1))))
                )
                for criterion in NATIONAL_CRITERIA
            }
            evaluations.append(Evaluation(proposal, evaluator, scores))
    return SimulatedRound(NATIONAL_CRITERIA, evaluations, proposal_ids, quality, leniency)


def timed(work: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def spearman(first: dict, second: dict) -> float:
    """Rank correlation of two scores of the same keys (ties get their mean rank)."""
    keys = sorted(first)
    return statistics.correlation(_ranks([first[k] for k in keys]), _ranks([second[k] for k in keys]))


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2
        start = end + 1
    return ranks


def measure(quick: bool = False, progress: Callable[[str], None] = print) -> list[str]:
    repeats = 3 if quick else 9
    simulated = simulated_round()
    evaluations = simulated.evaluations
    loads: dict[str, int] = {}
    for evaluation in evaluations:
        loads[evaluation.evaluator_id] = loads.get(evaluation.evaluator_id, 0) + 1
    progress(
        f"results of a round: {len(simulated.proposal_ids)} proposals, {len(evaluations)} evaluations, {repeats} repeats ..."
    )

    ceiling, _ = timed(lambda: weighted_totals(simulated.criteria, evaluations), repeats)
    full, results = timed(
        lambda: round_results(simulated.criteria, evaluations, simulated.proposal_ids, ranking_by="normalised"),
        repeats,
    )
    assert isinstance(results, RoundResults)
    assert len(results.ranking) == len(simulated.proposal_ids)
    median_full, median_ceiling = statistics.median(full), statistics.median(ceiling)
    by_proposal = {entry.proposal_id: entry for entry in results.ranking}
    measured_leniency = {entry.evaluator_id: entry.leniency for entry in results.evaluators}
    alpha = results.agreement.krippendorff_alpha_interval
    return [
        f"settings: {len(simulated.proposal_ids)} proposals × 3 evaluators × {len(simulated.criteria)} criteria "
        f"= {len(evaluations)} evaluations from {len(loads)} evaluators (loads {min(loads.values())}–"
        f"{max(loads.values())}), scores simulated (quality + evaluator leniency + noise); pure Python, one process; "
        f"{repeats} repeats",
        f"round_results (weighted totals, statistics, normalisation, ranking, alpha, leniency, flags): median "
        f"{median_full * 1000:.1f} ms, best {min(full) * 1000:.1f} ms",
        f"ceiling, weighted totals only: median {median_ceiling * 1000:.1f} ms, best {min(ceiling) * 1000:.1f} ms",
        f"round_results / ceiling (medians): {median_full / median_ceiling:.2f}",
        f"goal ≤ {GOAL_SECONDS} s: {'met' if median_full <= GOAL_SECONDS else 'NOT met'}",
        f"Krippendorff's alpha (interval): {alpha:.3f}; flagged for another evaluator: {len(results.flagged)}",
        "rank correlation with the simulated true quality: mean "
        f"{spearman({p: by_proposal[p].mean for p in simulated.quality}, simulated.quality):.3f}, normalised "
        f"{spearman({p: by_proposal[p].normalised for p in simulated.quality}, simulated.quality):.3f}",
        "rank correlation of measured with simulated evaluator leniency: "
        f"{spearman(measured_leniency, simulated.leniency):.3f}",
    ]


if __name__ == "__main__":
    print("\n".join(measure()))
