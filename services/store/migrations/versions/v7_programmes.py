"""Programmes and budgets: the ``programmes`` and ``programme_events`` tables,
``transactions.programme_id``, and approvals about a credit or a budget raise.

Every existing row goes to a "General" programme with no limit (created here), so nothing is
lost and every total stays as it was; General's counters are computed from those rows. The
approvals' subject check gains ``credit`` and ``budget``, keeping ``reversal`` (PostgreSQL: the
constraint is replaced; SQLite cannot alter a CHECK, so the small ``approvals`` table is rebuilt
with every row).

Revision ID: v7_programmes
Revises: v7_corrections
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from services.store.engine import UTCDateTime

revision = "v7_programmes"
down_revision = "v7_corrections"
branch_labels = None
depends_on = None

_SUBJECTS = "subject_kind IN ('debit', 'batch', 'reversal', 'credit', 'budget')"
_APPROVAL_COLUMNS = (
    "id, subject_kind, subject, amount_cents, maker, requested_at, status, decided_by, "
    "decided_at, comment, request"
)


def _programmes_tables() -> None:
    op.create_table(
        "programmes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("budget_cents", sa.BigInteger),
        sa.Column("starts_on", sa.Date),
        sa.Column("ends_on", sa.Date),
        sa.Column("owner", sa.String(200), nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("monthly_operator_limit_cents", sa.BigInteger),
        sa.Column("debit_threshold_cents", sa.BigInteger),
        sa.Column("state", sa.String(8), nullable=False, server_default="active"),
        sa.Column("reserved_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("credited_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("returned_cents", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("state IN ('active', 'closed')", name="ck_programmes_state"),
        sa.CheckConstraint(
            "budget_cents IS NULL OR budget_cents >= 0", name="ck_programmes_budget_positive"
        ),
        sa.UniqueConstraint("code", name="uq_programmes_code"),
    )
    op.create_table(
        "programme_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("programme_id", sa.Integer, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_programme_events_programme", "programme_events", ["programme_id", "id"])


def _general() -> None:
    """General takes every existing row; its counters are those rows' totals."""
    now = datetime.now(UTC)
    programmes = sa.table(
        "programmes",
        sa.column("id", sa.Integer),
        sa.column("code", sa.String),
        sa.column("name", sa.String),
        sa.column("budget_cents", sa.BigInteger),
        sa.column("description", sa.Text),
        sa.column("created_by", sa.String),
        sa.column("created_at", UTCDateTime),
        sa.column("updated_at", UTCDateTime),
    )
    op.execute(
        programmes.insert().values(
            code="GENERAL",
            name="General",
            budget_cents=None,
            description="Movements not tied to a programme (and every one from before programmes)",
            created_by="migration v7",
            created_at=now,
            updated_at=now,
        )
    )
    general = "(SELECT id FROM programmes WHERE code = 'GENERAL')"
    op.execute(f"UPDATE transactions SET programme_id = {general}")  # noqa: S608 (fixed text)
    total = (
        "(SELECT COALESCE(SUM(amount_cents), 0) FROM transactions "
        "WHERE programme_id = programmes.id AND transaction_type = '{t}' AND status {s})"
    )
    in_flight = total.format(t="CR", s="IN ('QUEUED', 'SENDING', 'UNKNOWN')")
    credited = total.format(t="CR", s="= 'SUCCEEDED'")
    returned = total.format(t="DR", s="= 'SUCCEEDED'")
    op.execute(
        f"UPDATE programmes SET reserved_cents = {in_flight}, "  # noqa: S608 (fixed text)
        f"credited_cents = {credited}, returned_cents = {returned}"
    )
    op.execute(
        "INSERT INTO programme_events (programme_id, at, actor, action, detail) "
        "SELECT id, updated_at, 'migration v7', 'created', "
        "'General: every movement from before programmes, no limit' FROM programmes"
    )


def _approval_subjects() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("ck_approvals_kind", "approvals", type_="check")
        op.create_check_constraint("ck_approvals_kind", "approvals", _SUBJECTS)
        return
    # SQLite: a CHECK cannot be altered; rebuild the table (a few rows) with every row kept.
    op.execute("ALTER TABLE approvals RENAME TO approvals_v6")
    op.execute("DROP INDEX IF EXISTS ix_approvals_status")
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject_kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("maker", sa.String(200), nullable=False),
        sa.Column("requested_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("decided_at", UTCDateTime),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.CheckConstraint(_SUBJECTS, name="ck_approvals_kind"),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected')", name="ck_approvals_status"
        ),
        sa.UniqueConstraint("subject_kind", "subject", name="uq_approvals_subject"),
    )
    op.create_index("ix_approvals_status", "approvals", ["status"])
    op.execute(
        f"INSERT INTO approvals ({_APPROVAL_COLUMNS}) "  # noqa: S608 (fixed text)
        f"SELECT {_APPROVAL_COLUMNS} FROM approvals_v6"
    )
    op.execute("DROP TABLE approvals_v6")


def upgrade() -> None:
    _programmes_tables()
    op.add_column("transactions", sa.Column("programme_id", sa.Integer))
    _general()
    op.create_index(
        "ix_transactions_programme", "transactions", ["programme_id", "status", "created_at"]
    )
    _approval_subjects()
