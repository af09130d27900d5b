"""A frozen copy of the ledger's schema at version 3 (commit 9271039, before Alembic), and a
ledger at that version with data in it: what a team upgrading Points Desk actually has on disk.

Never edit the tables below: they are what that version created, so the migration tests start
from the real thing, not from today's schema with parts removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

_TIME = sa.DateTime(timezone=True)


def _one_of(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


metadata = sa.MetaData()

transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("reference", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("transaction_type", sa.String(2), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("mobile", sa.String(20)),
    sa.Column("title", sa.String(8)),
    sa.Column("first_name", sa.String(100)),
    sa.Column("gender", sa.String(4)),
    sa.Column("card_id", sa.String(64), index=True),
    sa.Column("transaction_id", sa.String(64)),
    sa.Column("balance_after_cents", sa.BigInteger),
    sa.Column("enkash_code", sa.String(64)),
    sa.Column("enkash_message", sa.Text),
    sa.Column("operator", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("batch_id", sa.String(64), index=True),
    sa.Column("row_number", sa.Integer),
    sa.Column("session_id", sa.String(128)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("approved_by", sa.String(200)),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("updated_at", _TIME, nullable=False),
    sa.CheckConstraint(_one_of("kind", ["create", "credit", "debit"]), name="ck_transactions_kind"),
    sa.CheckConstraint(_one_of("transaction_type", ["CR", "DR"]), name="ck_transactions_type"),
    sa.CheckConstraint(
        _one_of("status", ["QUEUED", "SENDING", "SUCCEEDED", "FAILED", "UNKNOWN"]),
        name="ck_transactions_status",
    ),
    sa.CheckConstraint("amount_cents > 0", name="ck_transactions_amount_positive"),
    sa.UniqueConstraint("batch_id", "row_number", name="uq_transactions_batch_row"),
    sa.Index("ix_transactions_created_at", "created_at"),
    sa.Index("ix_transactions_status", "status"),
    sa.Index("ix_transactions_kind_created_at", "kind", "created_at"),
    sa.Index("ix_transactions_operator", "operator"),
    sa.Index("ix_transactions_email", "email"),
    sa.Index("ix_transactions_mobile", "mobile"),
    sa.Index("ix_transactions_batch_row", "batch_id", "row_number"),
    # Each card's latest succeeded row (known balances, History's balance per employee) is one
    # index seek per card instead of a sort of the whole table: 1.7 s -> 0.04 s at 1M rows.
    sa.Index(
        "ix_transactions_card_latest", "card_id", "status", "updated_at", "balance_after_cents"
    ),
    # History's aggregates over a period (totals, series, statuses, opening net, distinct cards)
    # read only these columns: a range scan of this index never touches the table.
    sa.Index(
        "ix_transactions_history",
        "created_at",
        "status",
        "kind",
        "amount_cents",
        "card_id",
        "operator",
    ),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "reference",
        sa.String(64),
        sa.ForeignKey("transactions.reference", name="fk_audit_events_reference"),
        nullable=False,
        index=True,
    ),
    sa.Column("at", _TIME, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("from_status", sa.String(16)),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

# Local sign-in attempts: the durable record behind the lockout (services/auth.py). Never a
# password; an unknown username is stored as "(unknown)", so a password typed into the username
# box is not kept either. New tables need no upgrade step: ``create_all`` adds them on open.
sign_in_attempts = sa.Table(
    "sign_in_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(200), nullable=False),
    sa.Column("at", _TIME, nullable=False),
    sa.Column("outcome", sa.String(8), nullable=False),
    sa.CheckConstraint(_one_of("outcome", ["ok", "bad", "locked"]), name="ck_sign_in_outcome"),
    sa.Index("ix_sign_in_attempts_username_at", "username", "at"),
)

# Maker-checker requests (services/approvals.py): one per debit reference or batch id.
approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject_kind", sa.String(8), nullable=False),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("maker", sa.String(200), nullable=False),
    sa.Column("requested_at", _TIME, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decided_at", _TIME),
    sa.Column("comment", sa.Text, nullable=False, default=""),
    # What was asked (JSON): for a debit the whole allocation, so the approved request can be
    # recorded and sent exactly as the maker saw it even if its ledger row was never written.
    sa.Column("request", sa.Text, nullable=False, default=""),
    sa.CheckConstraint(_one_of("subject_kind", ["debit", "batch"]), name="ck_approvals_kind"),
    sa.CheckConstraint(
        _one_of("status", ["pending", "approved", "rejected"]), name="ck_approvals_status"
    ),
    sa.UniqueConstraint("subject_kind", "subject", name="uq_approvals_subject"),
    sa.Index("ix_approvals_status", "status"),
)

# Bulk runs (services/bulk.py): one row per uploaded file that was confirmed. The rows themselves
# are ordinary ``transactions`` rows carrying the batch id; this table holds the run's settings,
# state and totals. ``file_digest`` is unique: the same file can never be queued twice.
BATCH_STATES = ("queued", "running", "paused", "cancelled", "finished")

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("file_digest", sa.String(64), nullable=False),
    sa.Column("operator", sa.String(200), nullable=False),
    sa.Column("session_id", sa.String(128)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("rate_limit", sa.Float),  # rows per second; NULL = no cap (not money: a float)
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("credit_rows", sa.Integer, nullable=False),
    sa.Column("credit_cents", sa.BigInteger, nullable=False),
    sa.Column("debit_rows", sa.Integer, nullable=False),
    sa.Column("debit_cents", sa.BigInteger, nullable=False),
    sa.Column("created_at", _TIME, nullable=False),
    sa.Column("updated_at", _TIME, nullable=False),
    sa.Column("started_at", _TIME),  # the latest start or resume
    sa.Column("finished_at", _TIME),
    sa.Column("heartbeat_at", _TIME),  # a worker is alive while this keeps moving
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.CheckConstraint(_one_of("state", BATCH_STATES), name="ck_batches_state"),
    sa.UniqueConstraint("file_digest", name="uq_batches_file_digest"),
    sa.Index("ix_batches_created_at", "created_at"),
)


# --- a version 3 ledger with data -----------------------------------------------------------------

T0 = datetime(2025, 11, 3, 4, 30, tzinfo=UTC)


def _at(minutes: int) -> datetime:
    # SQLite stored naive UTC at version 3; PostgreSQL a timestamptz.
    return T0 + timedelta(minutes=minutes)


def _row(reference: str, kind: str, status: str, cents: int, minutes: int, **extra: Any) -> dict:
    person = {
        "email": f"{reference.lower()}@example.com",
        "mobile": "9600098867",
        "title": "Mr",
        "first_name": "Ravi",
        "gender": "M",
    }
    values = {
        "reference": reference,
        "kind": kind,
        "transaction_type": "DR" if kind == "debit" else "CR",
        "status": status,
        "amount_cents": cents,
        **(person if kind == "create" else dict.fromkeys(person)),
        "card_id": None if kind == "create" and status != "SUCCEEDED" else "EKC0000001",
        "transaction_id": None,
        "balance_after_cents": None,
        "enkash_code": None,
        "enkash_message": None,
        "operator": "asha",
        "reason": "Diwali bonus",
        "batch_id": None,
        "row_number": None,
        "session_id": "tab-1",
        "attempts": 1,
        "approved_by": None,
        "created_at": _at(minutes),
        "updated_at": _at(minutes + 1),
    }
    values.update(extra)
    return values


#: (reference, from_status, to_status, detail, the kind the migration must give it)
EVENTS: list[tuple[str, str | None, str, str, str]] = [
    ("V3-OK", None, "SENDING", "intent recorded by asha", "INTENT"),
    ("V3-OK", "SENDING", "SUCCEEDED", "EnKash confirmed; reference matched", "OUTCOME"),
    ("V3-CREDIT", None, "SENDING", "intent recorded by asha", "INTENT"),
    ("V3-CREDIT", "SENDING", "SUCCEEDED", "EnKash confirmed; reference matched", "OUTCOME"),
    ("V3-REFUSED", None, "SENDING", "intent recorded by asha", "INTENT"),
    ("V3-REFUSED", "SENDING", "FAILED", "EnKash refused: INSUFFICIENT_BALANCE", "OUTCOME"),
    ("V3-LOST", None, "SENDING", "intent recorded by asha", "INTENT"),
    (
        "V3-LOST",
        "SENDING",
        "UNKNOWN",
        "interrupted: the process stopped while the call to EnKash was in flight, so the "
        "outcome must be settled by lookup",
        "RECOVERED",
    ),
    ("V3-ABSENT", None, "SENDING", "intent recorded by asha", "INTENT"),
    ("V3-ABSENT", "SENDING", "UNKNOWN", "no answer from EnKash within 15 s", "OUTCOME"),
    (
        "V3-ABSENT",
        "UNKNOWN",
        "UNKNOWN",
        "lookup: proved absent: EnKash has no transaction with this reference (40 s after the "
        "last attempt)",
        "LOOKUP_ABSENT",
    ),
    ("V3-ODD", None, "SENDING", "intent recorded by asha", "INTENT"),
    ("V3-ODD", "SENDING", "UNKNOWN", "no answer from EnKash within 15 s", "OUTCOME"),
    (
        "V3-ODD",
        "UNKNOWN",
        "UNKNOWN",
        "lookup: EnKash reports status PROCESSING; left unsettled",
        "LOOKUP_UNREADABLE",
    ),
    ("V3-SETTLED", None, "SENDING", "intent recorded by asha", "INTENT"),
    ("V3-SETTLED", "SENDING", "UNKNOWN", "no answer from EnKash within 15 s", "OUTCOME"),
    (
        "V3-SETTLED",
        "UNKNOWN",
        "SUCCEEDED",
        "settled by lookup: EnKash reports the transaction SUCCESS",
        "OUTCOME",
    ),
    ("V3-HELD", None, "QUEUED", "intent recorded by asha", "INTENT"),
    (
        "V3-HELD",
        "QUEUED",
        "QUEUED",
        "held for approval: above the debit approval threshold; nothing sent",
        "APPROVAL_REQUESTED",
    ),
    ("V3-APPROVED", None, "QUEUED", "intent recorded by asha", "INTENT"),
    (
        "V3-APPROVED",
        "QUEUED",
        "QUEUED",
        "held for approval: above the debit approval threshold; nothing sent",
        "APPROVAL_REQUESTED",
    ),
    ("V3-APPROVED", "QUEUED", "QUEUED", "approved by priya: checked", "APPROVED"),
    ("V3-APPROVED", "QUEUED", "SENDING", "claimed for sending", "CLAIM"),
    ("V3-APPROVED", "SENDING", "SUCCEEDED", "EnKash confirmed; reference matched", "OUTCOME"),
    ("V3-REJECTED", None, "QUEUED", "intent recorded by asha", "INTENT"),
    (
        "V3-REJECTED",
        "QUEUED",
        "FAILED",
        "rejected by priya: wrong card; nothing was sent",
        "REJECTED",
    ),
    ("V3-B1", None, "QUEUED", "queued by asha (batch B-V3 row 1)", "INTENT"),
    ("V3-B1", "QUEUED", "SENDING", "claimed for sending", "CLAIM"),
    ("V3-B1", "SENDING", "SUCCEEDED", "EnKash confirmed; reference matched", "OUTCOME"),
    ("V3-B2", None, "QUEUED", "queued by asha (batch B-V3 row 2)", "INTENT"),
    (
        "V3-B2",
        "QUEUED",
        "FAILED",
        "Cancelled before sending: nothing was sent and no points moved.",
        "CANCELLED",
    ),
    ("V3-B3", None, "QUEUED", "queued by asha (batch B-V3 row 3)", "INTENT"),
    ("V3-B3", "QUEUED", "QUEUED", "checked against EnKash: card found", "NOTE"),
]


def rows() -> list[dict[str, Any]]:
    """One transaction in every status and situation a version 3 ledger could hold."""
    ok = {"transaction_id": "ECTR000001", "balance_after_cents": 150050}
    return [
        _row("V3-OK", "create", "SUCCEEDED", 150050, 0, **ok),
        _row("V3-CREDIT", "credit", "SUCCEEDED", 2500, 5, transaction_id="ECTR000002"),
        _row(
            "V3-REFUSED",
            "debit",
            "FAILED",
            99900000,
            10,
            enkash_code="INSUFFICIENT_BALANCE",
            enkash_message="Card balance is low",
        ),
        _row("V3-LOST", "credit", "UNKNOWN", 1000, 15),
        _row("V3-ABSENT", "credit", "UNKNOWN", 1100, 20, attempts=2),
        _row("V3-ODD", "credit", "UNKNOWN", 1200, 25),
        _row("V3-SETTLED", "credit", "SUCCEEDED", 1300, 30, transaction_id="ECTR000003"),
        _row("V3-HELD", "debit", "QUEUED", 2000000, 35, attempts=0),
        _row(
            "V3-APPROVED",
            "debit",
            "SUCCEEDED",
            2100000,
            40,
            approved_by="priya",
            transaction_id="ECTR000004",
        ),
        _row(
            "V3-REJECTED",
            "debit",
            "FAILED",
            2200000,
            45,
            attempts=0,
            enkash_code="APPROVAL_REJECTED",
            enkash_message="Rejected by priya: wrong card",
        ),
        _row("V3-B1", "credit", "SUCCEEDED", 500, 50, batch_id="B-V3", row_number=1),
        _row(
            "V3-B2",
            "credit",
            "FAILED",
            600,
            50,
            batch_id="B-V3",
            row_number=2,
            attempts=0,
            enkash_code="CANCELLED",
            enkash_message="Cancelled before sending: nothing was sent and no points moved.",
        ),
        _row("V3-B3", "credit", "QUEUED", 700, 50, batch_id="B-V3", row_number=3, attempts=0),
        _row("V3-SENDING", "credit", "SENDING", 800, 55),
    ]


def build(conn: sa.Connection) -> None:
    """Create the version 3 tables on ``conn`` and fill them as Points Desk at version 3 did."""
    metadata.create_all(conn)
    conn.execute(schema_version.insert().values(version=3))
    conn.execute(transactions.insert(), rows())
    events = [
        {
            "reference": reference,
            "at": _at(n),
            "actor": "asha",
            "from_status": before,
            "to_status": after,
            "detail": detail,
        }
        for n, (reference, before, after, detail, _kind) in enumerate(EVENTS)
    ]
    events.append(
        {
            "reference": "V3-SENDING",
            "at": _at(60),
            "actor": "asha",
            "from_status": None,
            "to_status": "SENDING",
            "detail": "intent recorded by asha",
        }
    )
    conn.execute(audit_events.insert(), events)
    conn.execute(
        batches.insert().values(
            batch_id="B-V3",
            file_name="diwali.csv",
            file_digest="d" * 64,
            operator="asha",
            session_id="tab-1",
            state="cancelled",
            concurrency=8,
            rate_limit=None,
            row_count=3,
            credit_rows=3,
            credit_cents=1800,
            debit_rows=0,
            debit_cents=0,
            created_at=_at(50),
            updated_at=_at(52),
            started_at=_at(50),
            finished_at=_at(52),
            heartbeat_at=_at(51),
            note="cancelled by asha",
        )
    )
    conn.execute(
        approvals.insert(),
        [
            {
                "subject_kind": kind,
                "subject": subject,
                "amount_cents": cents,
                "maker": "asha",
                "requested_at": _at(35),
                "status": status,
                "decided_by": None if status == "pending" else "priya",
                "decided_at": None if status == "pending" else _at(41),
                "comment": comment,
                "request": "",
            }
            for kind, subject, cents, status, comment in [
                ("debit", "V3-HELD", 2000000, "pending", ""),
                ("debit", "V3-APPROVED", 2100000, "approved", "checked"),
                ("debit", "V3-REJECTED", 2200000, "rejected", "wrong card"),
                ("batch", "B-V3", 1800, "approved", ""),
            ]
        ],
    )
    conn.execute(
        sign_in_attempts.insert(),
        [
            {"username": "asha", "at": _at(0), "outcome": "ok"},
            {"username": "priya", "at": _at(1), "outcome": "bad"},
            {"username": "(unknown):ab12", "at": _at(2), "outcome": "locked"},
        ],
    )
