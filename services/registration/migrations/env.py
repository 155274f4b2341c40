"""Alembic environment of the registration service (see shared/migrations.py)."""

from shared.migrations import run_migrations_env
from services.registration.tables import Base

run_migrations_env(Base.metadata)
