"""The statistics of an evaluation round (services/evaluation/scoring.py) against values computed by hand.

No database, no app: criteria and evaluations in, the results body out. Each scenario's arithmetic is written
beside it so a reader can check it with a pencil.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from services.evaluation.scoring import (
    DEFAULT_DISAGREEMENT_THRESHOLD,
    METHOD_DESCRIPTION,
    Criterion,
    Evaluation,
    MissingScoreError,
    ScoringError,
    evaluator_leniency,
    krippendorff_alpha_interval,
    normalised_scores,
    round_results,
    score_problems,
    total_scale,
    weighted_total,
)

ROOT = Path(__file__).resolve().parents[2]
NATIONAL = [Criterion(key) for key in ("novelty", "effectiveness", "benefit", "replicability", "sustainability")]
ONE = [Criterion("overall")]


def scored(proposal_id, evaluator_id, total: float) -> Evaluation:
    """An evaluation of the one-criterion rubric whose weighted total is ``total``."""
    return Evaluation(proposal_id, evaluator_id, {"overall": total})


def by_proposal(results) -> dict:
    return {entry.proposal_id: entry for entry in results.ranking}


def order_of(results) -> list:
    return [entry.proposal_id for entry in results.ranking]


# --- one evaluation ----------------------------------------------------------------------------------------------

WEIGHTED = [
    Criterion("novelty", weight=2),
    Criterion("effectiveness", weight=1),
    Criterion("benefit", weight=1),
    Criterion("presentation", informational=True),
]


def test_the_weighted_total_is_the_weighted_mean_of_the_counted_criteria_on_their_scale():
    # (2·8 + 1·6 + 1·4) / (2 + 1 + 1) = 26 / 4
    assert weighted_total({"novelty": 8, "effectiveness": 6, "benefit": 4, "presentation": 1}, WEIGHTED) == 6.5


def test_equal_weights_give_the_plain_mean_of_the_five_national_criteria():
    assert weighted_total(dict(zip([c.key for c in NATIONAL], [7, 8, 9, 6, 5], strict=True)), NATIONAL) == 7


def test_an_informational_criterion_is_not_counted_and_may_be_left_out():
    low = weighted_total({"novelty": 8, "effectiveness": 6, "benefit": 4, "presentation": 1}, WEIGHTED)
    high = weighted_total({"novelty": 8, "effectiveness": 6, "benefit": 4, "presentation": 10}, WEIGHTED)
    left_out = weighted_total({"novelty": 8, "effectiveness": 6, "benefit": 4}, WEIGHTED)
    assert low == high == left_out == 6.5


def test_a_missing_counted_criterion_is_an_error_naming_it():
    with pytest.raises(MissingScoreError, match="'benefit'") as raised:
        weighted_total({"novelty": 8, "effectiveness": 6}, WEIGHTED)
    assert raised.value.key == "benefit"


def test_a_rubric_with_nothing_counted_is_refused():
    with pytest.raises(ScoringError, match="at least one counted criterion"):
        weighted_total({"presentation": 5}, [Criterion("presentation", informational=True)])


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"weight": -1}, "must not be negative"),
        ({"min": 10, "max": 1}, "min < max"),
        ({"min": 5, "max": 5}, "min < max"),
        ({"weight": math.nan}, "finite"),
    ],
)
def test_a_criterion_with_an_impossible_weight_or_scale_is_refused(arguments, message):
    with pytest.raises(ScoringError, match=message):
        Criterion("novelty", **arguments)


def test_the_scale_of_the_totals_is_the_weighted_mean_of_the_criteria_scales():
    assert total_scale(NATIONAL) == (1, 10)
    # (3·0 + 1·1) / 4 .. (3·4 + 1·10) / 4
    assert total_scale([Criterion("a", 3, 0, 4), Criterion("b", 1, 1, 10), Criterion("c", 5, 0, 100, True)]) == (
        0.25,
        5.5,
    )


def test_submitted_scores_are_checked_by_criterion_naming_each_problem():
    problems = score_problems(
        {"novelty": 11, "effectiveness": "7", "benefit": True, "colour": 3, "presentation": 0}, WEIGHTED
    )
    assert problems == {
        "novelty": "must be between 1 and 10",
        "effectiveness": "must be a number",
        "benefit": "must be a number",
        "colour": "unknown criterion",
        "presentation": "must be between 1 and 10",
    }
    assert score_problems({"novelty": 1, "effectiveness": 10}, WEIGHTED) == {
        "benefit": "missing: a score is required for this criterion"
    }
    assert score_problems({"novelty": 1, "effectiveness": 10.0, "benefit": 5.5}, WEIGHTED) == {}


# --- per proposal ------------------------------------------------------------------------------------------------


def test_a_proposal_reports_the_mean_median_range_and_count_of_its_weighted_totals():
    results = round_results(ONE, [scored("p", "x", 5), scored("p", "y", 6), scored("p", "z", 9)])
    (entry,) = results.ranking
    assert entry.mean == pytest.approx(20 / 3)
    assert entry.median == 6
    assert entry.spread == 4  # 9 − 5: the range
    assert entry.evaluations == 3
    assert entry.rank == 1


def test_the_weighted_totals_of_the_whole_rubric_are_what_is_aggregated():
    evaluations = [
        Evaluation("p", "x", {"novelty": 8, "effectiveness": 6, "benefit": 4, "presentation": 1}),  # 6.5
        Evaluation("p", "y", {"novelty": 4, "effectiveness": 6, "benefit": 8}),  # 5.5
    ]
    (entry,) = round_results(WEIGHTED, evaluations).ranking
    assert (entry.mean, entry.median, entry.spread) == (6, 6, 1)


def test_proposals_nobody_evaluated_are_listed_last_with_nulls_by_id():
    results = round_results(ONE, [scored("m", "x", 3), scored("k", "x", 4)], proposal_ids=["z", "a", "m", "k"])
    assert order_of(results) == ["k", "m", "a", "z"]
    assert [entry.rank for entry in results.ranking] == [1, 2, 3, 4]
    nobody = by_proposal(results)["a"]
    assert (nobody.mean, nobody.median, nobody.spread, nobody.normalised, nobody.evaluations) == (
        None,
        None,
        None,
        None,
        0,
    )


def test_a_round_without_any_evaluation_lists_every_proposal_and_computes_nothing():
    results = round_results(NATIONAL, [], proposal_ids=[3, 1, 2])
    assert results.to_dict() == {
        "ranking": [
            {
                "proposal_id": proposal_id,
                "rank": proposal_id,
                "mean": None,
                "median": None,
                "spread": None,
                "normalised": None,
                "evaluations": 0,
            }
            for proposal_id in (1, 2, 3)
        ],
        "agreement": {"krippendorff_alpha_interval": None},
        "evaluators": [],
        "flagged": [],
    }


def test_an_evaluator_who_evaluates_a_proposal_twice_is_refused():
    with pytest.raises(ScoringError, match="evaluator x evaluated proposal p twice"):
        round_results(ONE, [scored("p", "x", 5), scored("p", "x", 6)])


def test_an_evaluation_missing_a_counted_criterion_names_the_proposal_the_evaluator_and_the_criterion():
    with pytest.raises(
        MissingScoreError, match="proposal p by evaluator y: no score for the counted criterion 'benefit'"
    ):
        round_results(
            WEIGHTED,
            [
                Evaluation("p", "x", {"novelty": 8, "effectiveness": 6, "benefit": 4}),
                Evaluation("p", "y", {"novelty": 8, "effectiveness": 6}),
            ],
        )


def test_an_unknown_ranked_score_or_a_threshold_outside_the_scale_is_refused():
    with pytest.raises(ScoringError, match="ranking_by"):
        round_results(ONE, [], ranking_by="median")
    with pytest.raises(ScoringError, match="disagreement_threshold"):
        round_results(ONE, [], disagreement_threshold=1.5)


# --- normalisation and ranking -----------------------------------------------------------------------------------

# A lenient evaluator L rated p1 and p2, a strict one S rated p3 and p4:
#   L: p1 9, p2 7  → μ 8, σ 1 → z p1 +1, p2 −1
#   S: p3 6, p4 4  → μ 5, σ 1 → z p3 +1, p4 −1
# all totals 9, 7, 6, 4: μ 6.5, σ √((2.5² + 0.5² + 0.5² + 2.5²)/4) = √3.25
LENIENT_AND_STRICT = [scored("p1", "L", 9), scored("p2", "L", 7), scored("p3", "S", 6), scored("p4", "S", 4)]


def test_normalised_scores_are_the_mean_z_score_of_each_evaluator_mapped_onto_the_scale():
    normalised = by_proposal(round_results(ONE, LENIENT_AND_STRICT))
    assert normalised["p1"].normalised == pytest.approx(6.5 + math.sqrt(3.25))
    assert normalised["p3"].normalised == pytest.approx(6.5 + math.sqrt(3.25))
    assert normalised["p2"].normalised == pytest.approx(6.5 - math.sqrt(3.25))
    assert normalised["p4"].normalised == pytest.approx(6.5 - math.sqrt(3.25))


def test_a_lenient_evaluator_s_normalised_scores_change_the_ranking_compared_with_the_mean():
    assert order_of(round_results(ONE, LENIENT_AND_STRICT, ranking_by="mean")) == ["p1", "p2", "p3", "p4"]
    # p1 and p3 tie on the normalised score (each its evaluator's best): the mean breaks the tie, and the strict
    # evaluator's best proposal p3 now ranks above the lenient evaluator's second best p2.
    assert order_of(round_results(ONE, LENIENT_AND_STRICT, ranking_by="normalised")) == ["p1", "p3", "p2", "p4"]


def test_the_normalised_score_averages_the_z_scores_of_every_evaluator_of_a_proposal():
    # X: a 8, b 6, c 4 → μ 6, σ √(8/3), z a +√1.5, b 0, c −√1.5;  Y: a 5, b 7 → μ 6, σ 1, z a −1, b +1
    # all totals 8, 6, 4, 5, 7: μ 6, σ √2
    evaluations = [scored("a", "X", 8), scored("b", "X", 6), scored("c", "X", 4), scored("a", "Y", 5)]
    evaluations.append(scored("b", "Y", 7))
    normalised = normalised_scores({"a": {"X": 8, "Y": 5}, "b": {"X": 6, "Y": 7}, "c": {"X": 4}})
    assert normalised["a"] == pytest.approx(6 + math.sqrt(2) * (math.sqrt(1.5) - 1) / 2)
    assert normalised["b"] == pytest.approx(6 + math.sqrt(2) * (0 + 1) / 2)
    assert normalised["c"] == pytest.approx(6 - math.sqrt(2) * math.sqrt(1.5))
    assert {entry.proposal_id: entry.normalised for entry in round_results(ONE, evaluations).ranking} == normalised


def test_an_evaluator_with_one_evaluation_or_one_total_everywhere_moves_no_proposal():
    # X has one evaluation, Y gave 7 everywhere: every z is 0, so every normalised score is the round's mean (7).
    normalised = normalised_scores({"a": {"X": 9, "Y": 7}, "b": {"Y": 7}, "c": {"Y": 7}})
    assert normalised == {"a": pytest.approx(7.5), "b": pytest.approx(7.5), "c": pytest.approx(7.5)}


def test_with_a_single_evaluator_the_normalised_score_is_the_weighted_total_itself():
    results = round_results(ONE, [scored("a", "X", 8), scored("b", "X", 6), scored("c", "X", 7)])
    for entry in results.ranking:
        assert entry.normalised == pytest.approx(entry.mean)
    assert order_of(results) == ["a", "c", "b"]


def test_ties_are_broken_by_the_other_score_the_median_the_number_of_evaluations_then_the_id():
    # Every evaluator evaluates once, so every z is 0 and every normalised score ties: ranked by mean, every
    # proposal's mean is 6, and what decides is the median, then more evaluations, then the id.
    totals = {"P": [5, 5, 8], "Q": [4, 7, 7], "R": [6, 6], "S": [6, 6, 6], "T": [6, 6]}
    evaluations = [
        scored(proposal_id, f"{proposal_id}{index}", total)
        for proposal_id, values in totals.items()
        for index, total in enumerate(values)
    ]
    results = round_results(ONE, evaluations, ranking_by="mean")
    assert order_of(results) == ["Q", "S", "R", "T", "P"]
    assert [entry.rank for entry in results.ranking] == [1, 2, 3, 4, 5]
    assert {entry.mean for entry in results.ranking} == {6}


def test_scores_that_agree_to_nine_decimals_tie_and_go_to_the_next_rule():
    evaluations = [scored("b", "X", 7 + 1e-12), scored("a", "Y", 7)]
    assert order_of(round_results(ONE, evaluations, ranking_by="mean")) == ["a", "b"]
    evaluations = [scored("b", "X", 7 + 1e-6), scored("a", "Y", 7)]
    assert order_of(round_results(ONE, evaluations, ranking_by="mean")) == ["b", "a"]


def test_the_ranking_does_not_depend_on_the_order_the_evaluations_arrive_in():
    evaluations = [
        scored(p, e, 1 + (3 * i + 7 * j) % 10 * 0.9) for i, p in enumerate("abcdef") for j, e in enumerate("XYZ")
    ]
    forwards = round_results(ONE, evaluations).to_dict()
    assert round_results(ONE, list(reversed(evaluations))).to_dict() == forwards


# --- fairness evidence -------------------------------------------------------------------------------------------

# A: X 8, Y 6, Z 7;  B: X 9, Y 5;  C: Y 4 (only Y);  D: W 6 (only W)
PANEL = [
    scored("A", "X", 8),
    scored("A", "Y", 6),
    scored("A", "Z", 7),
    scored("B", "X", 9),
    scored("B", "Y", 5),
    scored("C", "Y", 4),
    scored("D", "W", 6),
]


def test_leniency_is_the_mean_difference_from_the_other_evaluators_on_shared_proposals():
    leniency = {entry.evaluator_id: entry.leniency for entry in round_results(ONE, PANEL).evaluators}
    assert leniency == {
        "W": None,  # shares no proposal
        "X": pytest.approx(((8 - 6.5) + (9 - 5)) / 2),  # 2.75
        "Y": pytest.approx(((6 - 7.5) + (5 - 9)) / 2),  # −2.75; C, rated by Y alone, does not count
        "Z": pytest.approx(7 - 7),
    }
    assert [entry.evaluator_id for entry in round_results(ONE, PANEL).evaluators] == ["W", "X", "Y", "Z"]


def test_proposals_whose_totals_lie_further_apart_than_the_threshold_are_flagged():
    # spreads: A 2, B 4, C and D one evaluation each; the default flags more than 0.25 · 9 = 2.25 points
    assert round_results(ONE, PANEL).flagged == ["B"]
    assert round_results(ONE, PANEL, disagreement_threshold=0.2).flagged == ["B", "A"]  # ranking order
    assert round_results(ONE, PANEL, disagreement_threshold=0.5).flagged == []


def test_a_spread_exactly_at_the_threshold_is_not_flagged_despite_rounding_errors():
    # 0.25 · (10 − 1) = 2.25; 8.3 − 6.05 is 2.250000000000001 in binary floating point
    assert round_results(ONE, [scored("a", "X", 8.3), scored("a", "Y", 6.05)]).flagged == []
    assert DEFAULT_DISAGREEMENT_THRESHOLD == 0.25


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: 4 coders × 12 units with
# missing values (None); the paper gives α_interval = 0.849 (951/1120 exactly).
KRIPPENDORFF_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def test_alpha_reproduces_krippendorff_s_own_worked_example():
    units = [[row[u] for row in KRIPPENDORFF_2011.values() if row[u] is not None] for u in range(12)]
    alpha = krippendorff_alpha_interval(units)
    assert alpha == pytest.approx(951 / 1120, abs=1e-12)
    assert round(alpha, 3) == 0.849


def test_alpha_over_a_round_treats_proposals_as_units_and_evaluators_as_coders():
    evaluations = [
        scored(unit, coder, value)
        for coder, row in KRIPPENDORFF_2011.items()
        for unit, value in enumerate(row)
        if value is not None
    ]
    results = round_results(ONE, evaluations)
    assert results.agreement.krippendorff_alpha_interval == pytest.approx(951 / 1120, abs=1e-12)


def test_alpha_matches_the_krippendorff_package_on_random_subsets_with_missing_values():
    krippendorff = pytest.importorskip("krippendorff")
    import random

    generator = random.Random(7)
    compared = 0
    for _ in range(200):
        coders, units = generator.randint(2, 8), generator.randint(2, 40)
        quality = [generator.uniform(1, 10) for _ in range(units)]
        noise = generator.choice([0.2, 1, 3])
        matrix = [
            [
                None if generator.random() < 0.4 else min(10, max(1, quality[u] + generator.gauss(0, noise)))
                for u in range(units)
            ]
            for _ in range(coders)
        ]
        values = [[row[u] for row in matrix if row[u] is not None] for u in range(units)]
        ours = krippendorff_alpha_interval(values)
        if sum(len(found) >= 2 for found in values) < 2:
            assert ours is None
            continue
        theirs = krippendorff.alpha(
            reliability_data=[[math.nan if value is None else value for value in row] for row in matrix],
            level_of_measurement="interval",
        )
        assert ours == pytest.approx(theirs, abs=1e-9)
        compared += 1
    assert compared > 150


def test_alpha_is_none_without_two_units_evaluated_twice_or_without_any_variation():
    assert krippendorff_alpha_interval([]) is None
    assert krippendorff_alpha_interval([[5, 6, 7], [4], [9]]) is None  # one pairable unit
    assert krippendorff_alpha_interval([[5, 5], [5, 5, 5], [3]]) is None  # pairable values all equal
    assert krippendorff_alpha_interval([[5, 5], [7, 7]]) == 1.0
    assert krippendorff_alpha_interval([[1, 10], [10, 1]]) < 0  # systematic disagreement


def test_one_evaluator_gives_no_agreement_and_no_leniency():
    results = round_results(ONE, [scored("a", "X", 8), scored("b", "X", 6)])
    assert results.agreement.krippendorff_alpha_interval is None
    assert [(entry.evaluator_id, entry.leniency) for entry in results.evaluators] == [("X", None)]
    assert results.flagged == []


def test_identical_scores_everywhere_give_no_alpha_no_leniency_no_flags_and_a_tie_broken_by_id():
    evaluations = [Evaluation(p, e, dict.fromkeys((c.key for c in NATIONAL), 7)) for p in "cab" for e in "XYZ"]
    results = round_results(NATIONAL, evaluations)
    assert order_of(results) == ["a", "b", "c"]
    assert all((e.mean, e.median, e.spread, e.normalised) == (7, 7, 0, 7) for e in results.ranking)
    assert results.agreement.krippendorff_alpha_interval is None
    assert [entry.leniency for entry in results.evaluators] == [0, 0, 0]
    assert results.flagged == []


def test_leniency_in_a_fully_crossed_panel_is_the_evaluator_s_mean_above_the_grand_mean_scaled_by_k_over_k_minus_1():
    totals = {"a": {"X": 9, "Y": 6, "Z": 6}, "b": {"X": 8, "Y": 4, "Z": 6}}
    # X's mean 8.5, grand mean 6.5: 3/2 · 2 = 3
    assert evaluator_leniency(totals)["X"] == pytest.approx(3)


# --- the interface -----------------------------------------------------------------------------------------------


def test_the_result_has_exactly_the_shape_of_the_results_endpoint():
    body = round_results(ONE, PANEL, proposal_ids=["A", "B", "C", "D", "E"]).to_dict()
    assert set(body) == {"ranking", "agreement", "evaluators", "flagged"}
    assert all(
        set(entry) == {"proposal_id", "rank", "mean", "median", "spread", "normalised", "evaluations"}
        for entry in body["ranking"]
    )
    assert set(body["agreement"]) == {"krippendorff_alpha_interval"}
    assert all(set(entry) == {"evaluator_id", "leniency"} for entry in body["evaluators"])
    assert body["flagged"] == ["B"]


def test_the_method_description_states_every_rule_a_reader_needs_to_recompute_the_results():
    for rule in ("Σ wᵢ·sᵢ / Σ wᵢ", "range", "population standard deviation", "z = 0", "μ + σ·z̄", "median",
                 "proposal id", "Krippendorff", "interval", "leniency", "0.25", "`null`"):  # fmt: skip
        assert rule in METHOD_DESCRIPTION, rule


def test_the_scoring_module_loads_nothing_but_the_standard_library():
    program = (
        "import sys, services.evaluation.scoring\n"
        "print(' '.join(sorted(name for name in ('sqlalchemy', 'flask', 'smtplib', 'kombu', 'numpy', 'marshmallow')"
        " if name in sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert loaded == []
