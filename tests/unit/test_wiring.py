"""The suite's wiring: subscriptions match handlers, the broker routes as declared, services look alike."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from kombu import Connection
from sqlalchemy import inspect

from shared.config import SERVICES
from shared.events import CATALOGUE
from shared.messaging.topology import (
    DEAD_EXCHANGE,
    EVENTS_EXCHANGE,
    RETRY_EXCHANGE,
    SUBSCRIPTIONS,
    dead_queue,
    declare_topology,
    events_queue,
)

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
LAYOUT = [
    "app.py",
    "wsgi.py",
    "api.py",
    "pages.py",
    "schemas.py",
    "tables.py",
    "domain.py",
    "handlers.py",
    "worker.py",
    "bootstrap.py",
    "templates/",
    "migrations/env.py",
    "migrations/versions/",
]


def handlers_of(service: str) -> dict:
    return import_module(f"services.{service}.handlers").HANDLERS


@pytest.mark.parametrize("service", [s for s in SERVICES if handlers_of(s)])
def test_a_service_is_subscribed_to_exactly_the_events_it_handles(service):
    assert sorted(SUBSCRIPTIONS[service]) == sorted(handlers_of(service))
    assert len(set(SUBSCRIPTIONS[service])) == len(SUBSCRIPTIONS[service]), "an event type is listed twice"


def test_a_service_without_handlers_has_no_queue():
    assert handlers_of("registration") == {}
    assert "registration" not in SUBSCRIPTIONS


def test_only_known_services_are_subscribed():
    assert set(SUBSCRIPTIONS) <= set(SERVICES)


def test_every_subscribed_event_type_is_in_the_catalogue():
    subscribed = {event_type for types in SUBSCRIPTIONS.values() for event_type in types}
    assert subscribed - set(CATALOGUE) == set()


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_folder_has_the_same_layout(service):
    folder = SERVICES_DIR / service

    def present(item: str) -> bool:
        return (folder / item).is_dir() if item.endswith("/") else (folder / item).is_file()

    assert [item for item in LAYOUT if not present(item)] == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_declares_an_outbox_and_an_inbox(service):
    tables = import_module(f"services.{service}.tables").Base.metadata.tables
    assert {"outbox", "inbox"} <= set(tables)


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_build_exactly_the_tables_the_code_declares(runtime_for, service):
    runtime = runtime_for(service)
    assert {"outbox", "inbox"} <= set(inspect(runtime.engine).get_table_names())
    with runtime.engine.connect() as connection:
        drift = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), runtime.metadata)
    assert drift == [], "the tables differ from the newest migration; add a revision"


@pytest.fixture
def broker():
    """The declared topology on kombu's in-process broker, its queues emptied first."""
    with Connection("memory://") as connection:
        declare_topology(connection.default_channel)
        channel = connection.default_channel
        for service in SUBSCRIPTIONS:
            for queue in (events_queue(service, connection), dead_queue(service, connection)):
                queue(channel).purge()
        yield connection


def drain(connection: Connection, queue) -> list:
    bound, bodies = queue(connection.default_channel), []
    while (message := bound.get(no_ack=True)) is not None:
        bodies.append(message.payload)
    return bodies


def test_a_domain_event_reaches_every_subscribed_service_once(broker):
    broker.Producer().publish({"n": 1}, exchange=EVENTS_EXCHANGE, routing_key="registration.confirmed")
    for service in SUBSCRIPTIONS:
        expected = [{"n": 1}] if "registration.confirmed" in SUBSCRIPTIONS[service] else []
        assert drain(broker, events_queue(service, broker)) == expected, service


REGISTRATION_EVENTS = sorted(name for name in CATALOGUE if name.split(".")[0] in ("session", "registration"))


def test_the_catalogue_holds_every_event_registration_emits():
    assert set(REGISTRATION_EVENTS) >= {
        "session.created",
        "session.published",
        "session.changed",
        "session.cancelled",
        "registration.confirmed",
        "registration.waitlisted",
        "registration.promoted",
        "registration.cancelled",
    }


@pytest.mark.parametrize("event_type", REGISTRATION_EVENTS)
def test_every_event_registration_emits_reaches_exactly_the_services_subscribed_to_it(broker, event_type):
    broker.Producer().publish({"type": event_type}, exchange=EVENTS_EXCHANGE, routing_key=event_type)
    for service in SUBSCRIPTIONS:
        expected = [{"type": event_type}] if event_type in SUBSCRIPTIONS[service] else []
        assert drain(broker, events_queue(service, broker)) == expected, service


def test_a_retry_comes_back_to_one_service_only(broker):
    broker.Producer().publish({"n": 2}, exchange=RETRY_EXCHANGE, routing_key="notification-events")
    assert drain(broker, events_queue("notification", broker)) == [{"n": 2}]
    assert drain(broker, events_queue("evaluation", broker)) == []


def test_a_dead_letter_waits_in_its_service_dead_queue(broker):
    broker.Producer().publish({"n": 3}, exchange=DEAD_EXCHANGE, routing_key="evaluation")
    assert drain(broker, dead_queue("evaluation", broker)) == [{"n": 3}]
    assert drain(broker, dead_queue("notification", broker)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_runs_the_one_bookkeeping_branch_to_its_head(runtime_for, service):
    from alembic.script import ScriptDirectory

    from shared.migrations import alembic_config

    runtime = runtime_for(service)
    scripts = ScriptDirectory.from_config(alembic_config(runtime))
    bookkeeping_head = scripts.get_revision("bookkeeping@head")
    assert bookkeeping_head.module.__file__.startswith(str(Path(__file__).parents[2] / "shared")), (
        "the bookkeeping tables' revisions are written once, in shared/bookkeeping_migrations/"
    )
    with runtime.engine.connect() as connection:
        applied = set(MigrationContext.configure(connection).get_current_heads())
    every_revision = {script.revision for script in scripts.walk_revisions()}
    applied_or_below = {script.revision for script in scripts.iterate_revisions(tuple(applied), "base")}
    assert every_revision - applied_or_below == set(), "a revision is not applied"
    assert bookkeeping_head.revision in applied
