"""Failed-rows round trip and per-row batch reports: ``transactions.corrects`` (the reference of
the failed row a correction row pays instead) and ``batch_rejected_rows`` (the rows of a file
refused at preview, kept with their batch so its report covers every input row).

Revision ID: v8_corr_rest
Revises: v7_programmes
"""

import sqlalchemy as sa
from alembic import op

revision = "v8_corr_rest"
down_revision = "v7_programmes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("transactions", sa.Column("corrects", sa.String(64)))
    op.create_index("ix_transactions_corrects", "transactions", ["corrects"])
    op.create_table(
        "batch_rejected_rows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("row_number", sa.Integer, nullable=False),
        sa.Column("row_values", sa.Text, nullable=False),
        sa.Column("problem", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_batch_rejected_rows_batch", "batch_rejected_rows", ["batch_id", "row_number"]
    )
