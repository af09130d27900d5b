"""Baseline: the schema Points Desk had at its ``schema_version`` 3.

Tables ``transactions`` (EnKash ids and codes in ``varchar(64)``, no ``claimed_by``),
``audit_events``, ``schema_version``, ``sign_in_attempts``, ``approvals`` and ``batches``, with the
``ix_transactions_card_latest`` and ``ix_transactions_history`` indexes. No database is ever built
by running this revision: a fresh one is created from ``schema.metadata`` and stamped at head, and
one written before Alembic is stamped here (or later) from its ``schema_version`` row.

Revision ID: v3
"""

revision = "v3"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass
