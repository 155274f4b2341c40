"""the session's extra questions and the registrants' answers

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:00:00.000000

Two nullable JSON columns, nothing else changes: ``lab_sessions.questions`` (the organiser's question
definitions, on the session row so that the statement locking it for a registration reads them) and
``registrations.answers`` (a registrant's answers, written by the registration's own INSERT). Existing
sessions ask nothing (``NULL``), existing registrations answered nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("lab_sessions") as batch:
        batch.add_column(
            sa.Column(
                "questions",
                sa.JSON(),
                nullable=True,
                comment="the organiser's extra questions (rules.Question); on this row so the lock reads them",
            )
        )
    with op.batch_alter_table("registrations") as batch:
        batch.add_column(
            sa.Column("answers", sa.JSON(), nullable=True, comment="answers to the session's questions, by key")
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("registrations") as batch:
        batch.drop_column("answers")
    with op.batch_alter_table("lab_sessions") as batch:
        batch.drop_column("questions")
