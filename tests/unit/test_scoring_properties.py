"""Properties of the round statistics (services/evaluation/scoring.py) that must hold for any scores.

Each test draws many random rounds from a seeded generator (the same rounds on every run, so a failure
reproduces), with evaluators rating different subsets of the proposals and some proposals left unevaluated.
"""

from __future__ import annotations

import math
import random

import pytest

from services.evaluation.scoring import (
    Criterion,
    Evaluation,
    evaluator_leniency,
    krippendorff_alpha_interval,
    normalised_scores,
    round_results,
    weighted_total,
    weighted_totals,
)

CRITERIA = [
    Criterion("novelty", weight=2),
    Criterion("effectiveness"),
    Criterion("benefit", weight=1.5),
    Criterion("replicability", weight=0.5),
    Criterion("sustainability"),
    Criterion("presentation", informational=True),
]
ROUNDS = 60


def random_round(generator: random.Random) -> tuple[list[Evaluation], list[int]]:
    """A round: proposals of some quality, evaluators with a leniency of their own, each proposal rated by up
    to k of them (some by none), scores on the 1–10 scale in steps of 0.5."""
    proposals = list(range(generator.randint(1, 30)))
    evaluators = [f"e{index:02}" for index in range(generator.randint(1, 8))]
    leniency = {evaluator: generator.gauss(0, 1.5) for evaluator in evaluators}
    evaluations = []
    for proposal in proposals:
        quality = generator.uniform(2, 9)
        for evaluator in generator.sample(evaluators, generator.randint(0, min(3, len(evaluators)))):
            scores = {
                criterion.key: min(10, max(1, round(2 * (quality + leniency[evaluator] + generator.gauss(0, 1))) / 2))
                for criterion in CRITERIA
            }
            evaluations.append(Evaluation(proposal, evaluator, scores))
    return evaluations, proposals


def rounds(seed: int):
    generator = random.Random(seed)
    return [random_round(generator) for _ in range(ROUNDS)]


@pytest.mark.parametrize("ranking_by", ["mean", "normalised"])
def test_every_proposal_is_ranked_once_from_1_to_n_with_the_evaluated_ones_first(ranking_by):
    for evaluations, proposals in rounds(1):
        ranking = round_results(CRITERIA, evaluations, proposals, ranking_by=ranking_by).ranking
        assert sorted(entry.proposal_id for entry in ranking) == proposals
        assert [entry.rank for entry in ranking] == list(range(1, len(proposals) + 1))
        counts = [entry.evaluations for entry in ranking]
        assert counts == sorted(counts, key=lambda count: count == 0)  # no evaluated proposal after a null one
        scores = [getattr(entry, ranking_by) for entry in ranking if entry.evaluations]
        assert all(round(a, 9) >= round(b, 9) for a, b in zip(scores, scores[1:], strict=False))


def test_the_results_are_the_same_whatever_order_the_evaluations_are_loaded_in():
    generator = random.Random(2)
    for evaluations, proposals in rounds(2):
        shuffled = evaluations[:]
        generator.shuffle(shuffled)
        assert round_results(CRITERIA, shuffled, reversed(proposals)).to_dict() == (
            round_results(CRITERIA, evaluations, proposals).to_dict()
        )


def test_a_weighted_total_lies_within_the_lowest_and_highest_counted_score():
    for evaluations, _ in rounds(3):
        for evaluation in evaluations:
            counted = [evaluation.scores[c.key] for c in CRITERIA if not c.informational]
            assert min(counted) <= weighted_total(evaluation.scores, CRITERIA) <= max(counted)


def test_mean_median_and_spread_describe_each_proposal_s_totals():
    for evaluations, proposals in rounds(4):
        totals = weighted_totals(CRITERIA, evaluations)
        for entry in round_results(CRITERIA, evaluations, proposals).ranking:
            values = sorted(totals.get(entry.proposal_id, {}).values())
            assert entry.evaluations == len(values)
            if values:
                assert values[0] <= entry.median <= values[-1]
                assert values[0] <= entry.mean <= values[-1]
                assert entry.spread == pytest.approx(values[-1] - values[0])


def test_shifting_and_stretching_one_evaluator_s_scores_leaves_the_order_of_normalised_scores_unchanged():
    """Per-evaluator standardisation removes exactly what a lenient or strict evaluator adds: a·x + b, a > 0."""
    generator = random.Random(5)
    for evaluations, _ in rounds(5):
        totals = weighted_totals(CRITERIA, evaluations)
        evaluators = sorted({e for of_proposal in totals.values() for e in of_proposal})
        if not evaluators:
            continue
        chosen, stretch, shift = generator.choice(evaluators), generator.uniform(0.3, 3), generator.uniform(-4, 4)
        changed = {
            proposal: {e: (stretch * t + shift if e == chosen else t) for e, t in of_proposal.items()}
            for proposal, of_proposal in totals.items()
        }
        before, after = normalised_scores(totals), normalised_scores(changed)
        for first in before:
            for second in before:
                if abs(before[first] - before[second]) > 1e-9:
                    assert (before[first] > before[second]) == (after[first] > after[second])


def test_alpha_is_at_most_one_and_unchanged_by_rescaling_every_total_or_reordering_the_proposals():
    generator = random.Random(6)
    for evaluations, _ in rounds(6):
        units = [list(of_proposal.values()) for of_proposal in weighted_totals(CRITERIA, evaluations).values()]
        alpha = krippendorff_alpha_interval(units)
        if alpha is None:
            continue
        assert alpha <= 1 + 1e-12
        rescaled = [[10 * value - 3 for value in values] for values in units]
        generator.shuffle(rescaled)
        assert krippendorff_alpha_interval(rescaled) == pytest.approx(alpha, abs=1e-9)


def test_alpha_matches_the_krippendorff_package_on_random_rounds():
    krippendorff = pytest.importorskip("krippendorff")
    for evaluations, _ in rounds(7):
        results = round_results(CRITERIA, evaluations)
        totals = weighted_totals(CRITERIA, evaluations)
        evaluators = sorted({e for of_proposal in totals.values() for e in of_proposal})
        proposals = sorted(totals)
        pairable = sum(len(of_proposal) >= 2 for of_proposal in totals.values())
        ours = results.agreement.krippendorff_alpha_interval
        if pairable < 2 or len({t for p in totals.values() if len(p) >= 2 for t in p.values()}) < 2:
            assert ours is None
            continue
        matrix = [[totals[p].get(e, math.nan) for p in proposals] for e in evaluators]
        assert ours == pytest.approx(krippendorff.alpha(reliability_data=matrix, level_of_measurement="interval"))


def test_adding_points_to_every_total_of_an_evaluator_raises_their_leniency_by_as_many_points():
    for evaluations, _ in rounds(8):
        totals = weighted_totals(CRITERIA, evaluations)
        before = evaluator_leniency(totals)
        for evaluator, leniency in before.items():
            if leniency is None:
                continue
            raised = {
                proposal: {e: (t + 1.5 if e == evaluator else t) for e, t in of_proposal.items()}
                for proposal, of_proposal in totals.items()
            }
            assert evaluator_leniency(raised)[evaluator] == pytest.approx(leniency + 1.5)
