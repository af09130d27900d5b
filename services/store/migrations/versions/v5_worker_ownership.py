"""Worker ownership (was ``schema_version`` 5): ``transactions.claimed_by``, the ``workers`` table
and the index a worker picks a batch's next queued row with.

Revision ID: v5
Revises: v4
"""

import sqlalchemy as sa
from alembic import op

from services.store.engine import UTCDateTime

revision = "v5"
down_revision = "v4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    # Defensive: a database that went through an interrupted manual fix may have part of it.
    if "claimed_by" not in {c["name"] for c in inspector.get_columns("transactions")}:
        op.add_column("transactions", sa.Column("claimed_by", sa.String(64)))
    if not inspector.has_table("workers"):
        op.create_table(
            "workers",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer, nullable=False),
            sa.Column("started_at", UTCDateTime, nullable=False),
            sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        )
    if "ix_transactions_batch_status_row" not in {
        ix["name"] for ix in inspector.get_indexes("transactions")
    }:
        op.create_index(
            "ix_transactions_batch_status_row",
            "transactions",
            ["batch_id", "status", "row_number"],
        )
