"""Two organisers auto-assigning one round at the same moment on PostgreSQL: the round row's lock makes
them take turns, so every proposal ends with exactly k evaluators and nothing is assigned twice."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from services.evaluation import domain
from services.evaluation.tables import Assignment, Proposal
from shared.tokens import Principal
from tests.support.runtimes import migrated_runtime

pytestmark = pytest.mark.postgres

ORGANISERS = [Principal(f"organiser-{i}", f"panitia{i}@kaltaraprov.go.id", "organiser") for i in (1, 2)]


def seed(runtime, proposals: int, evaluators: int) -> str:
    with runtime.unit_of_work() as uow:
        now = datetime.now(UTC)
        for i in range(proposals):
            uow.session.add(
                Proposal(
                    id=f"p{i:03d}",
                    registration_id=f"r{i}",
                    programme_id="prog",
                    opd=f"OPD {i % 4}",
                    title=f"P{i}",
                    category="c",
                    started_on=None,
                    members=[],
                    sections={},
                    links=[],
                    status="submitted",
                    created_at=now,
                    updated_at=now,
                    submitted_at=now,
                )
            )
        for i in range(evaluators):
            domain.record_account(
                uow,
                {
                    "account_id": f"e{i:02d}",
                    "email": f"e{i}@kaltaraprov.go.id",
                    "role": "evaluator",
                    "opd": f"OPD {i % 5}",
                },
            )
        uow.flush()
        round_ = domain.create_round(
            uow, {"name": "Desk", "programme_id": "prog", "kind": "rubric", "evaluators_per_proposal": 3}
        )
        uow.commit()
        return round_.id


def test_two_organisers_auto_assigning_at_once_do_not_double_assign(tmp_path, postgres_url):
    runtime = migrated_runtime("evaluation", tmp_path, postgres_url)
    round_id = seed(runtime, proposals=40, evaluators=12)
    start = threading.Barrier(2)
    made: list[int] = []
    errors: list[BaseException] = []

    def organiser(principal):
        try:
            start.wait()
            with runtime.unit_of_work() as uow:
                made.append(len(domain.auto_assign(uow, principal, round_id)))
                uow.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=organiser, args=(p,)) for p in ORGANISERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(made) == [0, 120]  # one assigned everything, the other found nothing left
    with runtime.reading() as uow:
        pairs = list(uow.session.execute(select(Assignment.proposal_id, Assignment.evaluator_id)).tuples())
    assert len(pairs) == len(set(pairs)) == 120
    assert set(Counter(p for p, _ in pairs).values()) == {3}
    loads = Counter(e for _, e in pairs).values()
    assert max(loads) - min(loads) <= 1
    runtime.engine.dispose()
