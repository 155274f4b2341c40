"""the mail sender's claim reads the due unfinished deliveries in due order from an index (a partial one: only
queued and sending rows), instead of scanning and sorting every delivery the service ever wrote

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:00:00
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

UNFINISHED = sa.text("status IN ('queued', 'sending')")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at", "id"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")
