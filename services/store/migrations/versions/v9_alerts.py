"""Alerts: ``alert_states``, one row per alert key with its episode and what was delivered.

Revision ID: v9_alerts
Revises: v7_scale
"""

import sqlalchemy as sa
from alembic import op

from services.store.engine import UTCDateTime

revision = "v9_alerts"
down_revision = "v7_scale"
branch_labels = None
depends_on = None


def upgrade() -> None:
    channels = []
    for channel in ("webhook", "email"):
        channels += [
            sa.Column(f"{channel}_sent_at", UTCDateTime),
            sa.Column(f"{channel}_attempts", sa.Integer, nullable=False),
            sa.Column(f"{channel}_next_at", UTCDateTime),
            sa.Column(f"{channel}_error", sa.Text, nullable=False),
        ]
    op.create_table(
        "alert_states",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("episode", sa.Integer, nullable=False),
        sa.Column("first_seen_at", UTCDateTime, nullable=False),
        sa.Column("last_seen_at", UTCDateTime, nullable=False),
        sa.Column("cleared_at", UTCDateTime),
        sa.Column("lease_until", UTCDateTime),
        *channels,
    )
    op.create_index("ix_alert_states_active", "alert_states", ["active"])


def downgrade() -> None:
    op.drop_table("alert_states")
