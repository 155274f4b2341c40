"""Alembic environment of the notification service (see shared/migrations.py)."""

from services.notification.tables import Base
from shared.migrations import run_migrations_env

run_migrations_env(Base.metadata)
