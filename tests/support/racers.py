"""Work run in separate OS processes by the race tests (functions here must be importable by name)."""

from __future__ import annotations

from multiprocessing.synchronize import Barrier
from pathlib import Path

from shared.errors import Conflict


def register_many(data_dir: str, database_url: str | None, session_id: str, people: list[dict], barrier: Barrier):
    """Register ``people`` one after another once every racer is ready; returns the outcomes."""
    from services.registration import domain
    from services.registration.bootstrap import bootstrap
    from shared.config import load_settings

    env = {"LABINOV_DATA_DIR": data_dir}
    if database_url:
        env["LABINOV_REGISTRATION_DATABASE_URL"] = database_url
    runtime = bootstrap(load_settings("registration", env))
    barrier.wait(30)
    outcomes = []
    for person in people:
        try:
            with runtime.unit_of_work() as uow:
                registration = domain.register_participant(uow, session_id, person)
                uow.commit()
            outcomes.append(registration.status)
        except Conflict:
            outcomes.append("conflict")
    runtime.engine.dispose()
    return outcomes


def relay_until_empty(data_dir: str, database_url: str, broker_url: str, barrier: Barrier) -> int:
    """Run one outbox relay until no row is due; returns how many rows it published."""
    from shared.messaging.broker import connect
    from shared.messaging.outbox import OutboxRelay
    from shared.messaging.topology import declare_topology
    from tests.support.runtimes import migrated_runtime

    runtime = migrated_runtime("registration", Path(data_dir), database_url, broker_url)
    relay = OutboxRelay(runtime.engine, runtime.outbox, broker_url, "registration", batch_size=25)
    published = 0
    with connect(broker_url) as connection:
        declare_topology(connection.default_channel)
        barrier.wait(30)
        while (count := relay.relay_once(connection)) > 0:
            published += count
    return published
