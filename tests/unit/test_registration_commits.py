"""Who commits: registration's domain operations only add to the caller's unit of work; the caller commits.

A view or command that leaves its unit of work without committing leaves nothing behind — no record and
no event — which is what lets a caller combine operations, or refuse after one, in a single transaction.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from services.cli import main
from services.registration import domain
from services.registration.tables import Account, LabSession, Registration
from shared.auth import Principal
from tests.support.runtimes import create_session_directly
from tests.support.suite import participant

ORGANISER = Principal("organiser-1", "panitia@kaltaraprov.go.id", "organiser")


@pytest.fixture
def runtime(runtime_for):
    return runtime_for("registration")


def _stored(runtime) -> dict[str, int]:
    with runtime.reading() as uow:
        return {
            "accounts": uow.session.scalar(select(func.count()).select_from(Account)),
            "sessions": uow.session.scalar(select(func.count()).select_from(LabSession)),
            "registrations": uow.session.scalar(select(func.count()).select_from(Registration)),
            "events": uow.session.scalar(select(func.count()).select_from(runtime.outbox)),
        }


def test_creating_an_account_without_committing_stores_nothing(runtime):
    with runtime.unit_of_work() as uow:
        account = domain.create_account(uow, "organiser", "panitia@kaltaraprov.go.id", "rahasia-panitia-2017")
        assert account.id  # flushed: the operation could learn its id
    assert _stored(runtime)["accounts"] == 0


def test_opening_a_session_without_committing_stores_neither_it_nor_its_event(runtime):
    fields = {
        "title": "Sosialisasi",
        "starts_at": datetime.fromisoformat("2027-03-01T09:00:00+08:00"),
        "ends_at": datetime.fromisoformat("2027-03-01T12:00:00+08:00"),
        "location": "Tanjung Selor",
        "capacity": 5,
    }
    with runtime.unit_of_work() as uow:
        domain.create_session(uow, fields, ORGANISER)
    assert _stored(runtime) == {"accounts": 0, "sessions": 0, "registrations": 0, "events": 0}


def test_registering_without_committing_stores_neither_the_registration_nor_its_event(runtime):
    lab_session = create_session_directly(runtime, capacity=5)
    with runtime.unit_of_work() as uow:
        assert domain.register_participant(uow, lab_session.id, participant(1)).status == "confirmed"
    assert _stored(runtime) == {"accounts": 0, "sessions": 1, "registrations": 0, "events": 1}  # session.created


def test_what_the_caller_commits_is_stored_with_its_event(runtime):
    lab_session = create_session_directly(runtime, capacity=5)
    with runtime.unit_of_work() as uow:
        domain.register_participant(uow, lab_session.id, participant(1))
        uow.commit()
    assert _stored(runtime) == {"accounts": 0, "sessions": 1, "registrations": 1, "events": 2}


def test_the_user_create_command_commits_the_account_it_creates(data_env, runtime_for):
    email, password = "penilai@kaltaraprov.go.id", "rahasia-penilai-2017"
    arguments = ["user", "create", "--role", "evaluator", "--email", email, "--password", password, "--create"]
    result = CliRunner().invoke(main, arguments, env=data_env)

    assert result.exit_code == 0, result.output
    with runtime_for("registration").reading() as uow:
        assert uow.session.scalar(select(Account.role).where(Account.email == email)) == "evaluator"
