"""login attempts per account and client, and per client

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:00:00.000000

The counters were keyed by e-mail address alone, which let anyone lock an account's owner out. They are now
keyed by (scope, key): per account and client, and per client. The old rows cannot be split by client, and
they only ever held the current 15-minute windows, so the table is replaced rather than converted: an
upgrade starts every window afresh.
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import shared.clock  # noqa: F401  (custom column types)


# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.drop_table("login_attempts")
    op.create_table(
        "login_attempts",
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("window_started_at", shared.clock.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("login_attempts")
    op.create_table(
        "login_attempts",
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("window_started_at", shared.clock.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("email"),
    )
