"""Registration tells the other services about the accounts it owns (evaluation keeps its evaluators so)."""

from __future__ import annotations

import json

from sqlalchemy import select

from services.registration import domain
from shared.events import parse_event


def test_a_new_account_is_announced_with_its_agency_and_never_its_password(runtime_for):
    runtime = runtime_for("registration")
    with runtime.unit_of_work() as uow:
        account = domain.create_account(
            uow, "evaluator", "Budi@Kaltaraprov.go.id", "rahasia-evaluator", "Budi", "Dinas Kesehatan"
        )
        uow.commit()

    with runtime.reading() as uow:
        [row] = uow.session.execute(select(runtime.outbox).where(runtime.outbox.c.event_type == "account.created"))
    event = parse_event(json.loads(row.payload))
    assert event.subject == account.id
    assert event.data == {
        "account_id": account.id,
        "email": "budi@kaltaraprov.go.id",
        "name": "Budi",
        "role": "evaluator",
        "opd": "Dinas Kesehatan",
        "active": True,
    }
    assert "rahasia" not in row.payload and "argon2" not in row.payload


def test_an_account_refused_is_announced_to_nobody(runtime_for):
    runtime = runtime_for("registration")
    with runtime.unit_of_work() as uow:
        domain.create_account(uow, "evaluator", "budi@kaltaraprov.go.id", "rahasia-evaluator")
        uow.commit()
    with runtime.unit_of_work() as uow:
        try:
            domain.create_account(uow, "evaluator", "budi@kaltaraprov.go.id", "rahasia-evaluator")
        except domain.Conflict:
            pass
    with runtime.reading() as uow:
        events = uow.session.scalars(select(runtime.outbox.c.event_type)).all()
    assert events.count("account.created") == 1
