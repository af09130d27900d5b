"""Corrections and transparency: ``transactions.reverses`` (a reversal's original), the
``exchanges`` table (every call to EnKash kept with its transaction) and the approval subject
kind ``reversal``.

Revision ID: v7_corrections
Revises: v6
"""

import sqlalchemy as sa
from alembic import op

from services.store.engine import UTCDateTime

revision = "v7_corrections"
down_revision = "v6"
branch_labels = None
depends_on = None

_KINDS = "subject_kind IN ('debit', 'batch', 'reversal')"


def upgrade() -> None:
    op.add_column("transactions", sa.Column("reverses", sa.String(64)))
    op.create_index("ix_transactions_reverses", "transactions", ["reverses"])
    op.create_table(
        "exchanges",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("reply", sa.Text, nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("enkash_code", sa.Text),
        sa.Column("enkash_message", sa.Text),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("encrypted", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
    )
    op.create_index("ix_exchanges_reference_at", "exchanges", ["reference", "at"])
    op.create_index("ix_exchanges_at", "exchanges", ["at"])
    # The CHECK on approvals.subject_kind gains "reversal". SQLite cannot alter a constraint:
    # batch mode copies the table with the new one (named constraints are reflected).
    with op.batch_alter_table("approvals", recreate="auto") as batch:
        batch.drop_constraint("ck_approvals_kind", type_="check")
        batch.create_check_constraint("ck_approvals_kind", sa.text(_KINDS))
