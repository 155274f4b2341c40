"""Alembic environment of the notification service (see shared/migrations.py)."""

from shared.migrations import run_migrations_env
from services.notification.tables import Base

run_migrations_env(Base.metadata)
