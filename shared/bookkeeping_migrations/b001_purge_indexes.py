"""indexes that let housekeeping purge the bookkeeping tables without scanning them

Revision ID: b001
Revises: (the bookkeeping branch starts here, after each service's 0002)
Create Date: 2026-12-01

Part of the ``bookkeeping`` branch that every service's migrations run (see ``shared/migrations.py``): the
outbox, inbox and idempotency keys are the same tables in every service, so their changes are written once.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("bookkeeping",)
# every service's revision 0002 has created the idempotency keys: the last bookkeeping table made per service
depends_on: str | Sequence[str] | None = "0002"


def upgrade() -> None:
    op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"])
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_index("ix_inbox_handled_at", table_name="inbox")
