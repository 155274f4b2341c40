"""check-ins at the door, bulk imports of an agency's CSV and their lines

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:00:00.000000

New tables only (nothing existing changes): ``check_ins`` (one row per registration: its primary key is
"a ticket is checked in once"), ``registration_imports`` (a work-queue row per import, with its progress
counters) and ``registration_import_lines`` (each data row of an imported file and what became of it).
Ticket codes are not stored: they are signed from the registration id (``rules.ticket_code``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.clock

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "check_ins",
        sa.Column("registration_id", sa.String(length=36), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("checked_in_at", shared.clock.UTCDateTime(), nullable=False),
        sa.Column("checked_in_by", sa.String(length=36), nullable=False, comment="the organiser's account id"),
        sa.Column("checked_in_by_name", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["registration_id"], ["registrations.id"]),
        sa.ForeignKeyConstraint(["session_id"], ["lab_sessions.id"]),
        sa.PrimaryKeyConstraint("registration_id"),
    )
    op.create_index("ix_check_ins_session_id", "check_ins", ["session_id"])
    op.create_table(
        "registration_imports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False, comment="queued, running or finished"),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("confirmed", sa.Integer(), nullable=False),
        sa.Column("waitlisted", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("invalid", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=False),
        sa.Column("created_at", shared.clock.UTCDateTime(), nullable=False),
        sa.Column("finished_at", shared.clock.UTCDateTime(), nullable=True),
        sa.Column("not_before", sa.DateTime(), nullable=False, comment="naive UTC"),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["lab_sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_registration_imports_session_id", "registration_imports", ["session_id"])
    op.create_table(
        "registration_import_lines",
        sa.Column("import_id", sa.String(length=36), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("nip", sa.String(length=40), nullable=True),
        sa.Column(
            "participant", sa.JSON(), nullable=True, comment="the checked fields, for register_participant"
        ),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=True, comment='[{"field": ..., "reason": ...}]'),
        sa.Column("registration_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(["import_id"], ["registration_imports.id"]),
        sa.PrimaryKeyConstraint("import_id", "line"),
    )
    op.create_index(
        "ix_registration_import_lines_pending", "registration_import_lines", ["import_id", "outcome", "line"]
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_registration_import_lines_pending", table_name="registration_import_lines")
    op.drop_table("registration_import_lines")
    op.drop_index("ix_registration_imports_session_id", table_name="registration_imports")
    op.drop_table("registration_imports")
    op.drop_index("ix_check_ins_session_id", table_name="check_ins")
    op.drop_table("check_ins")
