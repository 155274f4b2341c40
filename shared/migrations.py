"""Alembic migrations, one history per service, run the same way by ``make run``, docker-compose and tests.

Each service keeps its revisions in ``services/<name>/migrations/``; its ``env.py`` is two lines that call
:func:`run_migrations_env`. :func:`upgrade` holds a PostgreSQL advisory lock, so several processes starting
at once (scaled-out web and worker containers) migrate one after the other instead of colliding.
"""

from __future__ import annotations

import zlib

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text

from shared.runtime import ServiceRuntime


def alembic_config(runtime: ServiceRuntime) -> Config:
    config = Config()
    config.set_main_option("script_location", str(runtime.migrations_dir))
    config.set_main_option("sqlalchemy.url", runtime.settings.database_url.replace("%", "%%"))
    config.attributes["runtime"] = runtime
    return config


def upgrade(runtime: ServiceRuntime, revision: str = "head") -> None:
    """Bring the service's database to ``revision``."""
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
