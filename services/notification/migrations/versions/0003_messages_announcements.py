"""messages in both languages, delivery attempts, announcements, opt-outs, the hourly cap, projections

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00

A delivery is now one per (cause, recipient, channel); "pending" is called "queued".
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import shared.clock  # noqa: F401  (custom column types)


revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient_name", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("language", sa.String(length=5), nullable=False, server_default="id"))
        batch_op.add_column(sa.Column("html_body", sa.Text(), nullable=True, comment="the HTML part"))
        batch_op.add_column(sa.Column("ics", sa.Text(), nullable=True, comment="a calendar entry to attach"))
        batch_op.add_column(
            sa.Column("ticket_code", sa.String(length=100), nullable=True, comment="shown as an inline QR code")
        )
        batch_op.add_column(sa.Column("announcement_id", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column(
                "public_cause",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
                comment="caused by what a stranger may type",
            )
        )
        batch_op.alter_column("body", existing_type=sa.Text(), comment="the plain-text part")
        batch_op.alter_column(
            "caused_by",
            existing_type=sa.String(length=64),
            comment="the event id or announcement id that asked for it",
        )
        batch_op.drop_constraint("uq_delivery_cause", type_="unique")
        batch_op.create_unique_constraint("uq_delivery_cause", ["caused_by", "recipient", "channel"])
        batch_op.create_index("ix_deliveries_announcement_status", ["announcement_id", "status"], unique=False)
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("language", server_default=None)
        batch_op.alter_column("public_cause", server_default=None)
    op.execute("UPDATE deliveries SET status = 'queued' WHERE status = 'pending'")

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False, comment="sent, retry, wait, failed, cancelled"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", shared.clock.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("delivery_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_attempts_delivery_id"), ["delivery_id"], unique=False)

    op.create_table(
        "announcements",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("channels", sa.String(length=200), nullable=False, comment="JSON list"),
        sa.Column("audience", sa.Text(), nullable=False, comment="JSON object"),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("send_at", sa.DateTime(), nullable=False, comment="naive UTC"),
        sa.Column("created_by", sa.String(length=254), nullable=False),
        sa.Column("correlation_id", sa.String(length=200), nullable=True),
        sa.Column("opted_out", sa.Integer(), nullable=False, comment="audience members who opted out"),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", shared.clock.UTCDateTime(), nullable=False),
        sa.Column("expanded_at", shared.clock.UTCDateTime(), nullable=True),
        sa.Column("cancelled_at", shared.clock.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("announcements", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_announcements_status"), ["status"], unique=False)

    op.create_table(
        "opt_outs",
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("created_at", shared.clock.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("email", "channel", name="pk_opt_outs"),
    )
    op.create_table(
        "flood_counters",
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False, comment="the hour's start, naive UTC"),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("email", "hour", name="pk_flood_counters"),
    )
    op.create_table(
        "registrations",
        sa.Column("registration_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("programme_id", sa.String(length=64), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("opd", sa.String(length=200), nullable=True),
        sa.Column("language", sa.String(length=5), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("checked_in_at", shared.clock.UTCDateTime(), nullable=True),
        sa.Column("event_time", shared.clock.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("registration_id"),
    )
    with op.batch_alter_table("registrations", schema=None) as batch_op:
        batch_op.create_index("ix_registrations_session_status", ["session_id", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_registrations_programme_id"), ["programme_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_registrations_opd"), ["opd"], unique=False)
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("programme_id", sa.String(length=64), nullable=True),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("starts_at", shared.clock.UTCDateTime(), nullable=True),
        sa.Column("ends_at", shared.clock.UTCDateTime(), nullable=True),
        sa.Column("location", sa.String(length=300), nullable=True),
        sa.Column("online_url", sa.String(length=500), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("event_time", shared.clock.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_id"),
    )


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("registrations")
    op.drop_table("flood_counters")
    op.drop_table("opt_outs")
    op.drop_table("announcements")
    op.drop_table("delivery_attempts")
    op.execute("UPDATE deliveries SET status = 'pending' WHERE status IN ('queued', 'sending')")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_announcement_status")
        batch_op.drop_constraint("uq_delivery_cause", type_="unique")
        batch_op.create_unique_constraint("uq_delivery_cause", ["caused_by", "template", "recipient"])
        for column in ("public_cause", "announcement_id", "ticket_code", "ics", "html_body", "language"):
            batch_op.drop_column(column)
        batch_op.drop_column("recipient_name")
