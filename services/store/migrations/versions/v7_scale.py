"""Summaries: daily totals per IST day x kind x status x operator, card balances, card days.

History and Overview read their totals, series and status breakdowns from ``daily_totals``, each
card's latest known balance from ``card_balances`` and the distinct employees of a period from
``card_days`` (services/store/summaries.py keeps them in the same transaction as every write).
This revision creates the three tables and fills them from the rows already in the ledger.

Revision ID: v7_scale
Revises: v8_corr_rest
"""

import sqlalchemy as sa
from alembic import op

from services.store.engine import UTCDateTime

revision = "v7_scale"
down_revision = "v8_corr_rest"
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
    op.create_table(
        "card_balances",
        sa.Column("card_id", sa.String(64), primary_key=True),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("last_id", sa.Integer, nullable=False),
        sa.Column("balance_after_cents", sa.BigInteger),
    )
    op.create_index("ix_card_balances_balance", "card_balances", ["balance_after_cents"])
    op.create_table(
        "card_days",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("card_id", sa.String(64), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("day", "card_id", name="pk_card_days"),
    )
    # The card tables are filled here; ``daily_totals`` by v9_programme_sums, which rebuilds it
    # with its programme key (today's code fills the table as v9 shapes it, not as this one).
    from services.store.summaries import rebuild_cards_in

    rebuild_cards_in(op.get_bind())


def downgrade() -> None:
    op.drop_table("card_days")
    op.drop_table("card_balances")
    op.drop_table("daily_totals")
