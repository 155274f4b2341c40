"""The outbox relay's own connections do not wait for the disk; every other writer's do (shared.messaging.outbox)."""

from __future__ import annotations

from sqlalchemy import text

from shared.db import create_database_engine
from shared.messaging.outbox import relay_engine


def _synchronous(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("PRAGMA synchronous")).scalar_one()


def test_on_a_sqlite_file_the_relay_commits_without_fsync_and_the_service_with_it(tmp_path):
    engine = create_database_engine(f"sqlite:///{tmp_path / 'notification.db'}")
    relays = relay_engine(engine)

    assert relays is not engine and relays.url.database == engine.url.database
    assert _synchronous(engine) == 2, "FULL: a service's commits (state, events, inbox rows) wait for the disk"
    assert _synchronous(relays) == 1, "NORMAL in WAL mode: a claim or a mark does not"
    with relays.begin() as connection:  # what the relay writes, the service reads at once
        connection.execute(text("CREATE TABLE marks (id INTEGER PRIMARY KEY)"))
        connection.execute(text("INSERT INTO marks VALUES (1)"))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM marks")).scalar_one() == 1


def test_a_database_in_memory_is_only_reachable_through_its_own_engine():
    engine = create_database_engine("sqlite://")
    assert relay_engine(engine) is engine
