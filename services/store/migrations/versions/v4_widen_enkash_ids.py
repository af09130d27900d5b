"""Widen ``transaction_id`` and ``enkash_code`` to unbounded text (was ``schema_version`` 4).

EnKash does not document how long its transaction ids and error codes are; a longer one than
``varchar(64)`` made PostgreSQL refuse to record a confirmed success. On PostgreSQL varchar to text
is a catalogue change (no table rewrite). SQLite never enforced the length: nothing to do.

Revision ID: v4
Revises: v3
"""

import sqlalchemy as sa
from alembic import op

revision = "v4"
down_revision = "v3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("transactions", "transaction_id", type_=sa.Text())
        op.alter_column("transactions", "enkash_code", type_=sa.Text())
