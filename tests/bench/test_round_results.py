"""The results benchmark measures a round of the shape it claims: balanced loads, distinct evaluators per
proposal, every score on the scale, and a report with both timings and the verdict on the goal."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.bench.round_results import measure, simulated_round, spearman


@pytest.mark.parametrize("proposals, evaluators, per_proposal", [(3000, 60, 3), (100, 7, 3), (50, 4, 4), (10, 9, 2)])
def test_the_simulated_round_gives_each_proposal_distinct_evaluators_with_loads_differing_by_at_most_one(
    proposals, evaluators, per_proposal
):
    simulated = simulated_round(proposals, evaluators, per_proposal)
    hands: dict[str, list[str]] = {}
    for evaluation in simulated.evaluations:
        hands.setdefault(evaluation.proposal_id, []).append(evaluation.evaluator_id)
        assert all(1 <= score <= 10 for score in evaluation.scores.values())
    assert len(hands) == proposals
    assert all(len(hand) == len(set(hand)) == per_proposal for hand in hands.values())
    loads = Counter(evaluation.evaluator_id for evaluation in simulated.evaluations)
    assert len(loads) == evaluators
    assert max(loads.values()) - min(loads.values()) <= 1


def test_the_simulated_round_is_the_same_on_every_run():
    assert simulated_round(30, 9).evaluations == simulated_round(30, 9).evaluations


def test_rank_correlation_gives_tied_values_their_mean_rank():
    assert spearman({"a": 1, "b": 2, "c": 3}, {"a": 10, "b": 20, "c": 30}) == pytest.approx(1)
    assert spearman({"a": 1, "b": 1, "c": 3}, {"a": 5, "b": 5, "c": 0}) == pytest.approx(-1)


def test_the_report_gives_both_timings_their_ratio_and_the_verdict_on_the_goal():
    report = "\n".join(measure(quick=True, progress=lambda line: None))
    for expected in ("round_results", "ceiling, weighted totals only", "round_results / ceiling", "goal ≤ 0.5 s"):
        assert expected in report
