"""Alembic environment of the evaluation service (see shared/migrations.py)."""

from shared.migrations import run_migrations_env
from services.evaluation.tables import Base

run_migrations_env(Base.metadata)
