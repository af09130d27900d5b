"""The read path at scale: ``card_days`` keeps no zero rows, and transactions are indexed by
status then last change.

``card_days`` rows whose count fell to zero (a redated or reset row left its day) are deleted;
from now on the summaries delete such a row in the transaction that empties it, so counting the
distinct cards of a period reads ``pk_card_days`` alone. ``ix_transactions_status`` becomes
``ix_transactions_status_updated`` (``status``, ``updated_at``): every lookup by status still
seeks it, and "UNKNOWN since" counts from it without reading the rows.

Revision ID: v10_read_path
Revises: v9_programme_sums
"""

from alembic import op

revision = "v10_read_path"
down_revision = "v9_programme_sums"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM card_days WHERE rows = 0")
    op.create_index("ix_transactions_status_updated", "transactions", ["status", "updated_at"])
    op.drop_index("ix_transactions_status", table_name="transactions")


def downgrade() -> None:
    op.create_index("ix_transactions_status", "transactions", ["status"])
    op.drop_index("ix_transactions_status_updated", table_name="transactions")
