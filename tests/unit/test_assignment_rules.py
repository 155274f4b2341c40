"""Automatic assignment (``rules.plan_assignments``): k evaluators per proposal, loads within one, nobody of
the proposal's OPD or with a declared conflict — over random instances — and an honest all-or-nothing refusal."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from services.evaluation.rules import EvaluatorSlot, ProposalSlot, plan_assignments

OPDS = ["Dinkes", "Disdik", "Dishub", "Diskominfo", "Bappeda"]


def check_plan(proposals, evaluators, k, conflicts, existing, plan):
    pairs = list(plan.pairs) + [pair for pair in existing]
    assert len(set(plan.pairs)) == len(plan.pairs), "a pair twice"
    assert not set(plan.pairs) & set(existing), "an existing pair again"
    per_proposal = Counter(p for p, _ in pairs)
    assert all(per_proposal[p.id] == k for p in proposals)
    loads = Counter(e for _, e in pairs)
    spread = [loads[e.id] for e in evaluators]
    assert max(spread) - min(spread) <= 1
    opd_of = {p.id: p.opd for p in proposals}
    evaluator_opd = {e.id: e.opd for e in evaluators}
    for proposal_id, evaluator_id in plan.pairs:
        assert evaluator_opd[evaluator_id] != opd_of[proposal_id]
        assert (evaluator_id, proposal_id) not in conflicts


@st.composite
def instances(draw):
    proposals = [ProposalSlot(f"p{i:03d}", draw(st.sampled_from(OPDS))) for i in range(draw(st.integers(1, 25)))]
    evaluators = [
        EvaluatorSlot(f"e{i:02d}", draw(st.sampled_from([*OPDS, None]))) for i in range(draw(st.integers(1, 10)))
    ]
    k = draw(st.integers(1, 3))
    pairs = [(e.id, p.id) for e in evaluators for p in proposals]
    conflicts = set(draw(st.lists(st.sampled_from(pairs), max_size=8))) if pairs else set()
    return proposals, evaluators, k, conflicts


@settings(max_examples=300, deadline=None)
@given(instances())
def test_a_feasible_plan_meets_every_constraint_and_an_infeasible_one_assigns_nothing(instance):
    proposals, evaluators, k, conflicts = instance
    plan = plan_assignments(proposals, evaluators, k, conflicts)
    if plan.feasible:
        check_plan(proposals, evaluators, k, conflicts, set(), plan)
    else:
        assert plan.pairs == []
        assert plan.shortfalls or plan.evaluator_problems


@settings(max_examples=200, deadline=None)
@given(instances())
def test_a_plan_is_found_whenever_a_brute_force_search_finds_one(instance):
    """On small instances, compare with an exhaustive search: the flow misses no feasible assignment."""
    proposals, evaluators, k, conflicts = instance
    proposals, evaluators = proposals[:4], evaluators[:4]
    plan = plan_assignments(proposals, evaluators, k, conflicts)
    assert plan.feasible == brute_force_feasible(proposals, evaluators, k, conflicts)


def brute_force_feasible(proposals, evaluators, k, conflicts) -> bool:
    from itertools import combinations

    options = []
    for p in proposals:
        allowed = [e.id for e in evaluators if e.opd != p.opd and (e.id, p.id) not in conflicts]
        options.append(list(combinations(allowed, k)))

    def search(index, loads):
        if index == len(proposals):
            values = [loads.get(e.id, 0) for e in evaluators]
            return max(values) - min(values) <= 1
        for chosen in options[index]:
            for e in chosen:
                loads[e] = loads.get(e, 0) + 1
            if search(index + 1, loads):
                return True
            for e in chosen:
                loads[e] -= 1
        return False

    return search(0, {})


def test_existing_assignments_count_towards_k_and_the_loads():
    proposals = [ProposalSlot(f"p{i}", "Dinkes") for i in range(4)]
    evaluators = [EvaluatorSlot(f"e{i}", "Disdik") for i in range(4)]
    existing = {("p0", "e0"), ("p1", "e0")}
    plan = plan_assignments(proposals, evaluators, 2, set(), existing)
    assert plan.feasible
    check_plan(proposals, evaluators, 2, set(), existing, plan)
    assert len(plan.pairs) == 6


def test_a_round_already_assigned_needs_nothing_more():
    proposals = [ProposalSlot("p0", "Dinkes")]
    evaluators = [EvaluatorSlot("e0", "Disdik"), EvaluatorSlot("e1", "Disdik")]
    plan = plan_assignments(proposals, evaluators, 2, set(), {("p0", "e0"), ("p0", "e1")})
    assert plan.feasible and plan.pairs == []


def test_a_proposal_its_own_opd_s_evaluators_cannot_take_is_named_with_why():
    proposals = [ProposalSlot("p0", "Dinkes"), ProposalSlot("p1", "Disdik")]
    evaluators = [EvaluatorSlot("e0", "Dinkes"), EvaluatorSlot("e1", "Dinkes"), EvaluatorSlot("e2", "Disdik")]
    plan = plan_assignments(proposals, evaluators, 2, {("e0", "p1")})
    assert plan.pairs == []
    by_proposal = {s.proposal_id: s for s in plan.shortfalls}
    assert by_proposal["p0"].missing == 1
    assert by_proposal["p0"].reason == (
        "Only 1 of 3 evaluators may take it, 2 are needed: 2 are of its OPD, 0 declared a conflict, 0 have it already."
    )
    assert "1 declared a conflict" in by_proposal["p1"].reason


def test_an_evaluator_who_may_take_too_few_proposals_is_named_when_the_loads_cannot_balance():
    # three proposals of Dinkes; e0 is of Dinkes too, so the others would carry 3 while e0 carries 0
    proposals = [ProposalSlot(f"p{i}", "Dinkes") for i in range(3)]
    evaluators = [EvaluatorSlot("e0", "Dinkes"), EvaluatorSlot("e1", "Disdik"), EvaluatorSlot("e2", "Dishub")]
    plan = plan_assignments(proposals, evaluators, 2, set())
    assert plan.pairs == [] and not plan.feasible
    assert list(plan.evaluator_problems) == ["e0"]
    assert "leave them out" in plan.evaluator_problems["e0"]
    # without e0 in the pool it works
    assert plan_assignments(proposals, evaluators[1:], 2, set()).feasible


def test_no_evaluators_at_all_is_said_for_every_proposal():
    plan = plan_assignments([ProposalSlot("p0", "Dinkes")], [], 1)
    assert [s.reason for s in plan.shortfalls] == ["No evaluator is known to this service."]


def test_a_large_round_is_planned_quickly():
    import time

    proposals = [ProposalSlot(f"p{i:04d}", OPDS[i % 5]) for i in range(3000)]
    evaluators = [EvaluatorSlot(f"e{i:02d}", OPDS[i % 5]) for i in range(60)]
    started = time.perf_counter()
    plan = plan_assignments(proposals, evaluators, 3)
    assert time.perf_counter() - started < 10
    check_plan(proposals, evaluators, 3, set(), set(), plan)
