"""Alembic migrations, one history per service, run the same way by ``make run``, docker-compose and tests.

Each service keeps its revisions in ``services/<name>/migrations/``; its ``env.py`` is two lines that call
:func:`run_migrations_env`. The bookkeeping tables (outbox, inbox, idempotency keys) are the same in every
service, so their changes are written once, in the ``bookkeeping`` branch under
``shared/bookkeeping_migrations/`` that every service's history includes: a service's database is at its newest
schema when both its own branch and that one are at their heads (``alembic upgrade heads``). The branch starts
after each service's revision ``0002``, the one that made the last of those tables. :func:`upgrade` holds a PostgreSQL advisory lock, so several processes starting
at once (scaled-out web and worker containers) migrate one after the other instead of colliding.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text

from shared.runtime import ServiceRuntime

#: The revisions of the bookkeeping tables, shared by every service's history.
BOOKKEEPING_VERSIONS = Path(__file__).parent / "bookkeeping_migrations"


def alembic_config(runtime: ServiceRuntime) -> Config:
    config = Config()
    config.set_main_option("script_location", str(runtime.migrations_dir))
    config.set_main_option("version_path_separator", "os")
    config.set_main_option(
        "version_locations", os.pathsep.join([str(runtime.migrations_dir / "versions"), str(BOOKKEEPING_VERSIONS)])
    )
    config.set_main_option("sqlalchemy.url", runtime.settings.database_url.replace("%", "%%"))
    config.attributes["runtime"] = runtime
    return config


def upgrade(runtime: ServiceRuntime, revision: str = "heads") -> None:
    """Bring the service's database to ``revision`` (default: the newest, of its own and the bookkeeping branch)."""
    config = alembic_config(runtime)
    with runtime.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": zlib.crc32(runtime.name.encode())})
            connection.commit()
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": zlib.crc32(runtime.name.encode())})
                connection.commit()


def run_migrations_env(target_metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py``."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        runtime: ServiceRuntime = context.config.attributes["runtime"]
        with runtime.engine.connect() as connection:
            _run(connection, target_metadata)
    else:
        _run(connection, target_metadata)


def _run(connection, target_metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.in_transaction():
        connection.commit()
