"""programmes, session states and windows, seat counters, per-OPD seats, the waiting-list order

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00.000000

Sessions gain a programme, a stage, a state, a registration window, a waiting-list switch and the counters
the seat decision reads under the session row's lock (``confirmed_count``, ``waitlisted_count``,
``waitlist_sequence``). Registrations gain a language, a place in the waiting-list order and a cancellation
time; the participant's job title, stored as ``position`` so far, becomes ``job_title`` (the API's
``position`` is now the waiting-list place). Existing data is carried over: counters are counted once here,
and the registrations already waiting get sequence numbers in the order they registered.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.clock

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "programmes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("opds", sa.JSON(), nullable=False),
        sa.Column("opd_quota", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("created_at", shared.clock.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Columns are added in place, never by batch mode's copy-and-swap: on SQLite that drops lab_sessions,
    # which the registrations of a live database still reference (the drop fails with FOREIGN KEY).
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE lab_sessions ADD COLUMN programme_id VARCHAR(36) REFERENCES programmes (id)")
    else:
        op.add_column("lab_sessions", sa.Column("programme_id", sa.String(length=36), nullable=True))
        op.create_foreign_key("fk_lab_sessions_programme_id", "lab_sessions", "programmes", ["programme_id"], ["id"])
    for column in (
        sa.Column("stage", sa.String(length=20), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("online_url", sa.String(length=500), nullable=True),
        sa.Column("waitlist", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("registration_opens_at", shared.clock.UTCDateTime(), nullable=True),
        sa.Column("registration_closes_at", shared.clock.UTCDateTime(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False, server_default="published"),
        sa.Column("record", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("confirmed_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("waitlisted_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("waitlist_sequence", sa.Integer(), nullable=False, server_default="0"),
    ):
        op.add_column("lab_sessions", column)
    op.create_index("ix_lab_sessions_programme_id", "lab_sessions", ["programme_id"])
    op.create_table(
        "opd_seats",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("opd", sa.String(length=200), nullable=False),
        sa.Column("confirmed", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["lab_sessions.id"]),
        sa.PrimaryKeyConstraint("session_id", "opd"),
    )
    with op.batch_alter_table("registrations") as batch:
        batch.alter_column("position", new_column_name="job_title", existing_type=sa.String(length=200))
        batch.add_column(sa.Column("language", sa.String(length=5), nullable=False, server_default="id"))
        batch.add_column(sa.Column("waitlist_sequence", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cancelled_at", shared.clock.UTCDateTime(), nullable=True))
        batch.create_index("ix_registrations_waiting_order", ["session_id", "status", "waitlist_sequence"])
    _carry_over_counters()


def _carry_over_counters() -> None:
    """Count what the foundation stored, once, so the counters start equal to the rows."""
    bind = op.get_bind()
    bind.execute(
        sa.text(
            "UPDATE lab_sessions SET confirmed_count = (SELECT count(*) FROM registrations r "
            "WHERE r.session_id = lab_sessions.id AND r.status = 'confirmed')"
        )
    )
    waiting = bind.execute(
        sa.text(
            "SELECT id, session_id FROM registrations WHERE status = 'waitlisted' ORDER BY session_id, created_at, id"
        )
    ).all()
    last: dict[str, int] = {}
    for registration_id, session_id in waiting:
        last[session_id] = last.get(session_id, 0) + 1
        bind.execute(
            sa.text("UPDATE registrations SET waitlist_sequence = :n WHERE id = :id"),
            {"n": last[session_id], "id": registration_id},
        )
    for session_id, count in last.items():
        bind.execute(
            sa.text("UPDATE lab_sessions SET waitlisted_count = :n, waitlist_sequence = :n WHERE id = :id"),
            {"n": count, "id": session_id},
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("registrations") as batch:
        batch.drop_index("ix_registrations_waiting_order")
        batch.drop_column("cancelled_at")
        batch.drop_column("waitlist_sequence")
        batch.drop_column("language")
        batch.alter_column("job_title", new_column_name="position", existing_type=sa.String(length=200))
    op.drop_table("opd_seats")
    op.drop_index("ix_lab_sessions_programme_id", table_name="lab_sessions")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_lab_sessions_programme_id", "lab_sessions", type_="foreignkey")
    for column in (
        "waitlist_sequence",
        "waitlisted_count",
        "confirmed_count",
        "record",
        "state",
        "registration_closes_at",
        "registration_opens_at",
        "waitlist",
        "online_url",
        "description",
        "stage",
        "programme_id",
    ):
        if op.get_bind().dialect.name == "sqlite":  # a column with a REFERENCES clause: copy-and-swap
            with op.batch_alter_table("lab_sessions") as batch:
                batch.drop_column(column)
        else:
            op.drop_column("lab_sessions", column)
    op.drop_table("programmes")
