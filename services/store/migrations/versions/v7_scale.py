"""Daily totals: per IST day x kind x status x operator, the rows and points of the ledger.

History and Overview read their totals, series and status breakdowns from ``daily_totals``
(services/store/summaries.py keeps it in the same transaction as every write). This revision
creates the table and fills it from the rows already in the ledger.

Revision ID: v7_scale
Revises: v6
"""

import sqlalchemy as sa
from alembic import op

revision = "v7_scale"
down_revision = "v6"
branch_labels = None
depends_on = None


def upgrade() -> None:
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
    from services.store.summaries import rebuild_in

    rebuild_in(op.get_bind())


def downgrade() -> None:
    op.drop_table("daily_totals")
