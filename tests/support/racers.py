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


def register_and_cancel(
    data_dir: str, database_url: str | None, session_id: str, people: list[dict], barrier: Barrier, seed: int
) -> dict[str, int]:
    """A storm's share: register ``people`` and, at random moments, cancel some registrations made so far
    (this racer's own, as their participants would); returns how often each outcome happened."""
    import random
    from collections import Counter

    from services.registration import domain
    from services.registration.bootstrap import bootstrap
    from shared.config import load_settings
    from shared.tokens import Principal

    env = {"LABINOV_DATA_DIR": data_dir}
    if database_url:
        env["LABINOV_REGISTRATION_DATABASE_URL"] = database_url
    runtime = bootstrap(load_settings("registration", env))
    chance = random.Random(seed)
    mine: list[str] = []
    outcomes: Counter[str] = Counter()
    barrier.wait(30)
    for person in people:
        try:
            with runtime.unit_of_work() as uow:
                registration = domain.register_participant(uow, session_id, person)
                uow.commit()
            mine.append(registration.id)
            outcomes[registration.status] += 1
        except Conflict:
            outcomes["conflict"] += 1
        if mine and chance.random() < 0.4:
            registration_id = mine.pop(chance.randrange(len(mine)))
            with runtime.unit_of_work() as uow:
                _cancelled, promoted = domain.cancel_registration(
                    uow, registration_id, Principal(registration_id, "", "participant")
                )
                uow.commit()
            outcomes["cancelled"] += 1
            outcomes["promoted"] += len(promoted)
    runtime.engine.dispose()
    return dict(outcomes)


def register_over_http(url: str, people: list[dict], barrier: Barrier) -> list[tuple[int, str | None, int | None]]:
    """Send ``people`` as registrations to ``url`` from this process, several connections at once, once every
    racer is ready; returns ``(status code, registration status, position)`` per request."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=8))

    def send(person: dict) -> tuple[int, str | None, int | None]:
        response = session.post(url, json=person, timeout=60)
        body = response.json() if response.status_code == 201 else {}
        return response.status_code, body.get("status"), body.get("position")

    barrier.wait(60)
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(send, people))
