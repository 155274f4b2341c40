"""the other channels: SMS and WhatsApp through a gateway (with a rate bucket per channel), the in-app inbox,
outgoing webhooks and their deliveries

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:00:00
"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import shared.clock  # noqa: F401  (custom column types)


revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "channel_rate_buckets",
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("refilled_at", sa.DateTime(), nullable=False, comment="naive UTC"),
        sa.PrimaryKeyConstraint("channel"),
    )
    op.create_table(
        "gateway_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False, comment="E.164"),
        sa.Column("template", sa.String(length=80), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("caused_by", sa.String(length=64), nullable=False),
        sa.Column("announcement_id", sa.String(length=36), nullable=True),
        sa.Column("correlation_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False, comment="naive UTC"),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("gateway_id", sa.String(length=200), nullable=True, comment="the gateway's own id, if it gave one"),
        sa.Column("created_at", shared.clock.UTCDateTime(), nullable=False),
        sa.Column("sent_at", shared.clock.UTCDateTime(), nullable=True),
        sa.Column("delivered_at", shared.clock.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("caused_by", "recipient", "channel", name="uq_gateway_delivery_cause"),
    )
    with op.batch_alter_table("gateway_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_gateway_deliveries_announcement_status", ["announcement_id", "status"], unique=False)
        batch_op.create_index("ix_gateway_deliveries_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_gateway_deliveries_recipient"), ["recipient"], unique=False)

    op.create_table(
        "inbox_messages",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("registration_id", sa.String(length=64), nullable=False),
        sa.Column("caused_by", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=80), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", shared.clock.UTCDateTime(), nullable=False),
        sa.Column("read_at", shared.clock.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("caused_by", "registration_id", name="uq_inbox_message_cause"),
    )
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.create_index("ix_inbox_messages_registration_created", ["registration_id", "created_at"], unique=False)

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("webhook_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=80), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False, comment="the JSON body, exactly as signed"),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False, comment="naive UTC"),
        sa.Column("claim_token", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", shared.clock.UTCDateTime(), nullable=False),
        sa.Column("sent_at", shared.clock.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id", "webhook_id", name="uq_webhook_delivery_event"),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_deliveries_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_webhook_deliveries_webhook_created", ["webhook_id", "created_at"], unique=False)

    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("event_types", sa.Text(), nullable=False, comment="JSON list"),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("failing_since", shared.clock.UTCDateTime(), nullable=True),
        sa.Column("disabled_at", shared.clock.UTCDateTime(), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=254), nullable=False),
        sa.Column("created_at", shared.clock.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("webhooks")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_webhook_created")
        batch_op.drop_index("ix_webhook_deliveries_due")

    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_messages_registration_created")

    op.drop_table("inbox_messages")
    with op.batch_alter_table("gateway_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gateway_deliveries_recipient"))
        batch_op.drop_index("ix_gateway_deliveries_due")
        batch_op.drop_index("ix_gateway_deliveries_announcement_status")

    op.drop_table("gateway_deliveries")
    op.drop_table("channel_rate_buckets")
