"""Programme sums: ``daily_totals`` gains ``programme_id`` in its key (History and the Overview
total, chart and group by programme from the summaries), and ``operator_months`` holds each
operator's credits per programme and IST month (the monthly operator limit, checked and counted
in one statement).

``daily_totals`` is rebuilt: a primary key cannot be altered in SQLite, and every row gets its
programme from ``transactions``, so the table is dropped, created with the new key and filled
from the rows in this migration. ``operator_months`` is filled from the rows for the programmes
that have a monthly operator limit.

Revision ID: v9_programme_sums
Revises: v7_scale
"""

import sqlalchemy as sa
from alembic import op

revision = "v9_programme_sums"
down_revision = "v9_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("daily_totals")
    op.create_table(
        "daily_totals",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("programme_id", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "kind", "status", "operator", "programme_id", name="pk_daily_totals"
        ),
    )
    op.create_table(
        "operator_months",
        sa.Column("programme_id", sa.Integer, nullable=False),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("month", sa.Date, nullable=False),
        sa.Column("credited_cents", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("programme_id", "operator", "month", name="pk_operator_months"),
    )
    from services.store.programmes import rebuild_operator_months
    from services.store.summaries import rebuild_daily_in

    rebuild_daily_in(op.get_bind())
    rebuild_operator_months(op.get_bind())


def downgrade() -> None:
    op.drop_table("operator_months")
    op.drop_table("daily_totals")
    op.create_table(
        "daily_totals",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("operator", sa.String(200), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("day", "kind", "status", "operator", name="pk_daily_totals"),
    )
