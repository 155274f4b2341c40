"""What a service process is made of, wired in one place for the web app, the worker and the tests.

Each service's ``bootstrap.py`` calls :func:`build_runtime` with its name and metadata; everything else —
the Flask app, the worker, a test — receives the :class:`ServiceRuntime` and never builds its own engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, MetaData, Table
from sqlalchemy.orm import sessionmaker

from shared.config import Settings, load_settings
from shared.db import UnitOfWork, create_database_engine, reading_engine


@dataclass
class ServiceRuntime:
    name: str
    settings: Settings
    engine: Engine
    session_factory: sessionmaker
    reading_session_factory: sessionmaker
    metadata: MetaData
    outbox: Table
    inbox: Table
    package_dir: Path

    def unit_of_work(self) -> UnitOfWork:
        """A transaction that changes state (and may publish events)."""
        return UnitOfWork(self.session_factory, self.outbox, source=f"/{self.name}")

    def reading(self) -> UnitOfWork:
        """A transaction that only reads: on SQLite it never waits behind a writer (see ``shared/db.py``)."""
        return UnitOfWork(self.reading_session_factory, self.outbox, source=f"/{self.name}")

    @property
    def migrations_dir(self) -> Path:
        return self.package_dir / "migrations"


def build_runtime(name: str, metadata: MetaData, package_dir: Path, settings: Settings | None = None) -> ServiceRuntime:
    settings = settings or load_settings(name)
    engine = create_database_engine(settings.database_url)
    return ServiceRuntime(
        name=name,
        settings=settings,
        engine=engine,
        session_factory=sessionmaker(engine, expire_on_commit=False),
        reading_session_factory=sessionmaker(reading_engine(engine), expire_on_commit=False),
        metadata=metadata,
        outbox=metadata.tables["outbox"],
        inbox=metadata.tables["inbox"],
        package_dir=package_dir,
    )
