"""Scheduled and recurring allocations: ``schedules`` (the rule, state, maker and checker),
``schedule_rows`` (the rows of each version), ``schedule_runs`` (one per occurrence that came
due, unique per schedule and due time) and ``schedule_events`` (who changed what, when).

Revision ID: v9_schedules
Revises: v7_scale
"""

import sqlalchemy as sa
from alembic import op

from services.store.engine import UTCDateTime

revision = "v9_schedules"
down_revision = "v9_alerts"
branch_labels = None
depends_on = None

# As they were at this revision (schema.py holds the latest; a revision never follows it).
KINDS = ("create", "credit", "debit")
SCHEDULE_STATES = ("pending_approval", "active", "paused", "cancelled", "finished")
SCHEDULE_REPEATS = ("once", "monthly", "weekly")
SCHEDULE_RUN_STATES = ("sent", "waiting", "skipped", "refused")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("programme", sa.String(16), nullable=False),
        sa.Column("repeat", sa.String(8), nullable=False),
        sa.Column("day_of_month", sa.Integer),
        sa.Column("weekday", sa.Integer),
        sa.Column("time_of_day", sa.String(5), nullable=False),
        sa.Column("start_on", sa.Date, nullable=False),
        sa.Column("end_on", sa.Date),
        sa.Column("max_runs", sa.Integer),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("pending_version", sa.Integer),
        sa.Column("pending", sa.Text, nullable=False),
        sa.Column("maker", sa.String(200), nullable=False),
        sa.Column("checker", sa.String(200)),
        sa.Column("approved_at", UTCDateTime),
        sa.Column("next_due_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.CheckConstraint(_one_of("state", SCHEDULE_STATES), name="ck_schedules_state"),
        sa.CheckConstraint(_one_of("repeat", SCHEDULE_REPEATS), name="ck_schedules_repeat"),
    )
    op.create_index("ix_schedules_state_due", "schedules", ["state", "next_due_at"])
    op.create_table(
        "schedule_rows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("row_number", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("card_id", sa.String(64)),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("employee", sa.Text, nullable=False),
        sa.CheckConstraint(_one_of("kind", KINDS), name="ck_schedule_rows_kind"),
        sa.CheckConstraint("amount_cents > 0", name="ck_schedule_rows_amount_positive"),
        sa.UniqueConstraint(
            "schedule_id", "version", "row_number", name="uq_schedule_rows_version_row"
        ),
    )
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", sa.String(16), nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("batch_id", sa.String(64)),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("net_cents", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.CheckConstraint(_one_of("state", SCHEDULE_RUN_STATES), name="ck_schedule_runs_state"),
        sa.UniqueConstraint("schedule_id", "due_at", name="uq_schedule_runs_due"),
    )
    op.create_index("ix_schedule_runs_created_at", "schedule_runs", ["created_at"])
    op.create_table(
        "schedule_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", sa.String(16), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_schedule_events_schedule", "schedule_events", ["schedule_id", "id"])


def downgrade() -> None:
    op.drop_table("schedule_events")
    op.drop_table("schedule_runs")
    op.drop_table("schedule_rows")
    op.drop_index("ix_schedules_state_due", "schedules")
    op.drop_table("schedules")
