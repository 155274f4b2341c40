"""Alembic environment of the evaluation service (see shared/migrations.py)."""

from services.evaluation.tables import Base
from shared.migrations import run_migrations_env

run_migrations_env(Base.metadata)
