"""Alembic environment of the registration service (see shared/migrations.py)."""

from services.registration.tables import Base
from shared.migrations import run_migrations_env

run_migrations_env(Base.metadata)
