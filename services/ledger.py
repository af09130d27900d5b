"""The durable store: one row per reference with its status, plus an append-only audit trail.

SQLAlchemy Core over SQLite (the embedded default) or PostgreSQL (a shared team deployment). The
engine is thread-safe and shared; every public method runs in its own committed transaction, so
what a method returns is already on disk. Amounts are ``Decimal`` in the API and integer hundredths
(cents) in the database, never floats. Times are UTC and always come back timezone-aware.

Statuses only move forward (see ``ALLOWED_TRANSITIONS``); a move is a compare-and-set in the
database, so two workers (threads, processes or replicas sharing one PostgreSQL) can never both
claim the same row. Every change appends an audit event in the same transaction as the change.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from services.errors import Conflict, NotFound
from services.models import Allocation, AllocationResult, Kind, Status
from services.redact import redact

# --- statuses ------------------------------------------------------------------------------------

#: Every move a row may make. Anything else (a SUCCEEDED row going back, a FAILED row resent) is a
#: ``StatusConflict``: corrections are new transactions, never rewrites.
ALLOWED_TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.QUEUED, Status.SENDING),
        (Status.QUEUED, Status.FAILED),  # cancelled or rejected before anything was sent
        (Status.SENDING, Status.SUCCEEDED),
        (Status.SENDING, Status.FAILED),
        (Status.SENDING, Status.UNKNOWN),
        (Status.UNKNOWN, Status.SUCCEEDED),  # settled by lookup
        (Status.UNKNOWN, Status.FAILED),
        (Status.UNKNOWN, Status.SENDING),  # resend, same reference, after a lookup proved absence
    }
)


class DuplicateReference(Conflict):
    """The reference (or batch row) is already in the ledger; nothing was written."""

    def __init__(self, references: str | Iterable[str], message: str | None = None):
        self.references = [references] if isinstance(references, str) else list(references)
        self.reference = self.references[0] if self.references else ""
        shown = ", ".join(self.references[:5]) + (" ..." if len(self.references) > 5 else "")
        super().__init__(message or f"reference already in the ledger: {shown}")


# Connections kept per process: a batch runs up to 32 workers, plus the settle loop and the pages;
# with fewer, every extra checkout opens and closes a connection (or waits for one).
_POOL: dict[str, int] = {"pool_size": 24, "max_overflow": 24}


class StatusConflict(Conflict):
    """A move that does not apply: forbidden by the table, or the row is not in a from-status."""


class UnknownReference(StatusConflict, NotFound):
    """No row has this reference (a ``StatusConflict`` too, so callers need only one except)."""


# --- schema --------------------------------------------------------------------------------------


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive time is ambiguous (local? UTC?); refusing it keeps every stored time honest.
            raise ValueError("naive datetime given to the ledger; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
    # EnKash's own ids and codes: their length is not documented, so they are stored whole (v4).
    sa.Column("transaction_id", sa.Text),
    sa.Column("balance_after_cents", sa.BigInteger),
    sa.Column("enkash_code", sa.Text),
    sa.Column("enkash_message", sa.Text),
    sa.Column("operator", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("batch_id", sa.String(64), index=True),
    sa.Column("row_number", sa.Integer),
    sa.Column("session_id", sa.String(128)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("approved_by", sa.String(200)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The worker (``workers.id``) that last moved the row to SENDING: while that worker's
    # heartbeat is fresh, nobody else may call its in-flight row interrupted.
    sa.Column("claimed_by", sa.String(64)),
    sa.CheckConstraint(_one_of("kind", [k.value for k in Kind]), name="ck_transactions_kind"),
    sa.CheckConstraint(_one_of("transaction_type", ["CR", "DR"]), name="ck_transactions_type"),
    sa.CheckConstraint(_one_of("status", [s.value for s in Status]), name="ck_transactions_status"),
    sa.CheckConstraint("amount_cents > 0", name="ck_transactions_amount_positive"),
    sa.UniqueConstraint("batch_id", "row_number", name="uq_transactions_batch_row"),
    sa.Index("ix_transactions_created_at", "created_at"),
    sa.Index("ix_transactions_status", "status"),
    sa.Index("ix_transactions_kind_created_at", "kind", "created_at"),
    sa.Index("ix_transactions_operator", "operator"),
    sa.Index("ix_transactions_email", "email"),
    sa.Index("ix_transactions_mobile", "mobile"),
    sa.Index("ix_transactions_batch_row", "batch_id", "row_number"),
    # A worker picks a batch's next QUEUED row in row order without scanning the rows sent.
    sa.Index("ix_transactions_batch_status_row", "batch_id", "status", "row_number"),
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
    sa.Column("at", UTCDateTime, nullable=False),
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
# password; an unknown username is stored as "(unknown):" and a keyed hash of it, so a password
# typed into the username box is not kept either. New tables need no upgrade step: ``create_all``
# adds them on open.
sign_in_attempts = sa.Table(
    "sign_in_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(200), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
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
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decided_at", UTCDateTime),
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

# Every process that sends (a dashboard, a ``python -m services.worker``): it beats while alive.
# A SENDING row whose ``claimed_by`` names a worker with a stale heartbeat (or none) was left
# mid-call by a process that died; only such rows become UNKNOWN (``recover_interrupted``).
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
)

#: A worker whose heartbeat is older than this is taken for dead (its SENDING rows get settled).
WORKER_STALE_AFTER = timedelta(seconds=30)

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
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),  # the latest start or resume
    sa.Column("finished_at", UTCDateTime),
    sa.Column("heartbeat_at", UTCDateTime),  # a worker is alive while this keeps moving
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.CheckConstraint(_one_of("state", BATCH_STATES), name="ck_batches_state"),
    sa.UniqueConstraint("file_digest", name="uq_batches_file_digest"),
    sa.Index("ix_batches_created_at", "created_at"),
)

# _UPGRADES[i] takes a database at version i + 1 to version i + 2, inside the opening transaction.
# ``metadata`` above always describes the LATEST schema (a fresh database is created from it and
# stamped latest); an upgrade brings an older database to the same shape. Append, never edit, e.g.
#     def _v1_to_v2(conn): conn.execute(sa.text("ALTER TABLE transactions ADD COLUMN note TEXT"))
#     _UPGRADES.append(_v1_to_v2)
_UPGRADES: list[Callable[[Connection], None]] = []


def _v1_to_v2(conn: Connection) -> None:
    """Add ``ix_transactions_card_latest`` (``create_all`` adds no index to an existing table)."""
    conn.execute(
        sa.text(
            "CREATE INDEX IF NOT EXISTS ix_transactions_card_latest"
            " ON transactions (card_id, status, updated_at, balance_after_cents)"
        )
    )


_UPGRADES.append(_v1_to_v2)


def _v2_to_v3(conn: Connection) -> None:
    """Add ``ix_transactions_history``, the covering index of History's period aggregates."""
    conn.execute(
        sa.text(
            "CREATE INDEX IF NOT EXISTS ix_transactions_history"
            " ON transactions (created_at, status, kind, amount_cents, card_id, operator)"
        )
    )


_UPGRADES.append(_v2_to_v3)


def _v3_to_v4(conn: Connection) -> None:
    """Widen ``transaction_id`` and ``enkash_code`` to unbounded text.

    EnKash does not document how long its transaction ids and error codes are; a longer one than
    ``varchar(64)`` made PostgreSQL refuse to record a confirmed success. On PostgreSQL varchar to
    text is a catalogue change (no table rewrite). SQLite never enforced the length: nothing to do.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text(
                "ALTER TABLE transactions"
                " ALTER COLUMN transaction_id TYPE TEXT,"
                " ALTER COLUMN enkash_code TYPE TEXT"
            )
        )


_UPGRADES.append(_v3_to_v4)


def _add_worker_ownership(conn: Connection) -> None:
    """Add ``transactions.claimed_by``, the ``workers`` table and the index a worker picks the
    next queued row of a batch with. Safe to run on a database that already has any of them."""
    columns = {column["name"] for column in sa.inspect(conn).get_columns("transactions")}
    if "claimed_by" not in columns:
        conn.execute(sa.text("ALTER TABLE transactions ADD COLUMN claimed_by VARCHAR(64)"))
    workers.create(conn, checkfirst=True)
    conn.execute(
        sa.text(
            "CREATE INDEX IF NOT EXISTS ix_transactions_batch_status_row"
            " ON transactions (batch_id, status, row_number)"
        )
    )


_UPGRADES.append(_add_worker_ownership)


def schema_version_latest() -> int:
    """The schema version this code writes: 1 plus the number of upgrades it knows."""
    return 1 + len(_UPGRADES)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer Points Desk; opening it could damage it."""


# --- public records ------------------------------------------------------------------------------

CENT = Decimal("0.01")


def to_cents(amount: Decimal) -> int:
    """Exact integer hundredths of a Decimal with at most 2 places (anything else is refused)."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"amount must be a finite Decimal, not {amount!r}")
    if amount != amount.quantize(CENT):
        raise ValueError(f"amount {amount} has more than 2 decimal places")
    return int(amount.scaleb(2).to_integral_exact())


def from_cents(cents: int | None) -> Decimal | None:
    """``Decimal`` with exactly 2 places from integer hundredths (``None`` stays ``None``)."""
    return None if cents is None else Decimal(int(cents)).scaleb(-2)


@dataclass(frozen=True)
class LedgerRow:
    """One transaction as the ledger holds it."""

    id: int
    reference: str
    kind: Kind
    transaction_type: str
    status: Status
    amount: Decimal
    email: str | None
    mobile: str | None
    title: str | None
    first_name: str | None
    gender: str | None
    card_id: str | None
    transaction_id: str | None
    balance_after: Decimal | None
    enkash_code: str | None
    enkash_message: str | None
    operator: str
    reason: str
    batch_id: str | None
    row_number: int | None
    session_id: str | None
    attempts: int
    approved_by: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AuditEvent:
    """One change to one row: who, when, from which status to which, and why."""

    id: int
    reference: str
    at: datetime
    actor: str
    from_status: Status | None
    to_status: Status
    detail: str


@dataclass(frozen=True)
class EmployeeSummary:
    """A card the ledger knows (it has a SUCCEEDED row), with its latest employee details.

    ``last_activity`` is ``None`` only for a card found outside the ledger (EnKash's search).
    """

    card_id: str
    email: str | None
    mobile: str | None
    title: str | None
    first_name: str | None
    gender: str | None
    balance: Decimal | None
    last_activity: datetime | None


@dataclass(frozen=True)
class BatchRecord:
    """One bulk run as the ``batches`` table holds it (amounts as ``Decimal``)."""

    batch_id: str
    file_name: str
    file_digest: str
    operator: str
    session_id: str | None
    state: str
    concurrency: int
    rate_limit: float | None
    row_count: int
    credit_rows: int
    credit_points: Decimal
    debit_rows: int
    debit_points: Decimal
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    note: str


class DuplicateBatchFile(Conflict):
    """This file (same SHA-256) was already queued as ``existing``; nothing was written."""

    def __init__(self, existing: BatchRecord):
        self.existing = existing
        super().__init__(f"this file was already queued as batch {existing.batch_id}")


def _batch_record(m: Any) -> BatchRecord:
    return BatchRecord(
        batch_id=m["batch_id"],
        file_name=m["file_name"],
        file_digest=m["file_digest"],
        operator=m["operator"],
        session_id=m["session_id"],
        state=m["state"],
        concurrency=m["concurrency"],
        rate_limit=m["rate_limit"],
        row_count=m["row_count"],
        credit_rows=m["credit_rows"],
        credit_points=from_cents(m["credit_cents"]),  # type: ignore[arg-type]
        debit_rows=m["debit_rows"],
        debit_points=from_cents(m["debit_cents"]),  # type: ignore[arg-type]
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        heartbeat_at=m["heartbeat_at"],
        note=m["note"] or "",
    )


def _ledger_row(m: Any) -> LedgerRow:
    return LedgerRow(
        id=m["id"],
        reference=m["reference"],
        kind=Kind(m["kind"]),
        transaction_type=m["transaction_type"],
        status=Status(m["status"]),
        amount=from_cents(m["amount_cents"]),  # type: ignore[arg-type]
        email=m["email"],
        mobile=m["mobile"],
        title=m["title"],
        first_name=m["first_name"],
        gender=m["gender"],
        card_id=m["card_id"],
        transaction_id=m["transaction_id"],
        balance_after=from_cents(m["balance_after_cents"]),
        enkash_code=m["enkash_code"],
        enkash_message=m["enkash_message"],
        operator=m["operator"],
        reason=m["reason"] or "",
        batch_id=m["batch_id"],
        row_number=m["row_number"],
        session_id=m["session_id"],
        attempts=m["attempts"],
        approved_by=m["approved_by"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _audit_event(m: Any) -> AuditEvent:
    return AuditEvent(
        id=m["id"],
        reference=m["reference"],
        at=m["at"],
        actor=m["actor"],
        from_status=Status(m["from_status"]) if m["from_status"] else None,
        to_status=Status(m["to_status"]),
        detail=m["detail"] or "",
    )


def _audit(conn: Connection, events: list[dict[str, Any]]) -> None:
    """Append audit events: the only write to ``audit_events``, besides a sandbox reset."""
    if events:
        conn.execute(audit_events.insert(), events)


def _event(
    reference: str, at: datetime, actor: str, before: Status | None, after: Status, detail: str
) -> dict[str, Any]:
    return {
        "reference": reference,
        "at": at,
        "actor": actor,
        "from_status": before.value if before else None,
        "to_status": after.value,
        "detail": redact(detail),  # may quote EnKash, which may echo a secret back
    }


def _append_note(
    conn: Connection, reference: str, actor: str, status: Status, detail: str
) -> AuditEvent:
    """Append an event that leaves ``status`` as it is; return it as stored."""
    _audit(conn, [_event(reference, datetime.now(UTC), actor, status, status, detail)])
    latest = conn.execute(
        sa.select(audit_events)
        .where(audit_events.c.reference == reference)
        .order_by(audit_events.c.id.desc())
        .limit(1)
    )
    return _audit_event(latest.mappings().one())


def _batch_rows(
    allocations: Sequence[tuple[Allocation, int]],
    *,
    operator: str,
    status: Status,
    batch_id: str,
    session_id: str | None,
    approved_by: str | None,
    now: datetime,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``transactions`` rows of a batch and their first audit events ("queued by ...")."""
    rows = [
        _intent_values(
            allocation,
            operator=operator,
            status=status,
            batch_id=batch_id,
            row_number=number,
            session_id=session_id,
            approved_by=approved_by,
            now=now,
        )
        for allocation, number in allocations
    ]
    events = [
        _event(
            values["reference"],
            now,
            operator,
            None,
            status,
            f"queued by {operator} (batch {batch_id} row {values['row_number']})",
        )
        for values in rows
    ]
    return rows, events


def _intent_values(
    allocation: Allocation,
    *,
    operator: str,
    status: Status,
    batch_id: str | None,
    row_number: int | None,
    session_id: str | None,
    approved_by: str | None,
    now: datetime,
) -> dict[str, Any]:
    employee = allocation.employee
    return {
        "reference": allocation.reference,
        "kind": allocation.kind.value,
        "transaction_type": allocation.kind.transaction_type,
        "status": status.value,
        "amount_cents": to_cents(allocation.amount),
        "email": employee.email if employee else None,
        "mobile": employee.mobile if employee else None,
        "title": employee.title.value if employee else None,
        "first_name": employee.first_name if employee else None,
        "gender": employee.gender.value if employee else None,
        "card_id": allocation.card_id,
        "transaction_id": None,
        "balance_after_cents": None,
        "enkash_code": None,
        "enkash_message": None,
        "operator": operator,
        "reason": allocation.reason or "",
        "batch_id": batch_id,
        "row_number": row_number,
        "session_id": session_id,
        # The intent of a direct send is its first attempt; a queued row has not been tried yet.
        "attempts": 1 if status is Status.SENDING else 0,
        "approved_by": approved_by,
        "created_at": now,
        "updated_at": now,
    }


#: A query that is a phone number as people type it ("+91 96000-98867"): only then are its digits
#: matched against mobiles, so the digits inside a card id never pick another person's mobile.
_PHONE_TEXT = re.compile(r"[\d\s+().-]+")


def _like(text: str) -> str:
    """A case-insensitive substring pattern with LIKE's wildcards taken literally."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_ORDERS = {
    "created_at": (transactions.c.created_at.asc(), transactions.c.id.asc()),
    "-created_at": (transactions.c.created_at.desc(), transactions.c.id.desc()),
    "updated_at": (transactions.c.updated_at.asc(), transactions.c.id.asc()),
    "-updated_at": (transactions.c.updated_at.desc(), transactions.c.id.desc()),
    "row_number": (transactions.c.batch_id.asc(), transactions.c.row_number.asc()),
}


@dataclass
class Move:
    """One status move for ``Ledger.transition`` / ``Ledger.transition_many``."""

    reference: str
    to_status: Status
    actor: str
    from_statuses: tuple[Status, ...]
    detail: str = ""
    result: AllocationResult | None = None
    enkash_code: str | None = None
    enkash_message: str | None = None
    before: Status | None = None  # set once it moved: the status it left

    def values(self) -> dict[str, Any]:
        """The columns it sets besides the status; raises if the move itself is not allowed."""
        _check_allowed(self.from_statuses, self.to_status)
        result = self.result
        if result is not None and result.reference != self.reference:
            # A reply for another reference must never mark this one settled.
            raise ValueError(f"result is for {result.reference}, not {self.reference}")
        extra: dict[str, Any] = {}
        if result is not None:
            extra["card_id"] = result.card_id
            extra["transaction_id"] = result.transaction_id
            if result.balance_after is not None:
                extra["balance_after_cents"] = to_cents(result.balance_after)
        # EnKash's own words may echo a request back, secrets and all: never stored as they came.
        if self.enkash_code is not None:
            extra["enkash_code"] = redact(self.enkash_code)
        if self.enkash_message is not None:
            extra["enkash_message"] = redact(self.enkash_message)
        return extra


# --- the ledger ----------------------------------------------------------------------------------


class Ledger:
    """The store. Share one instance per process; it is thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        schema: str | None = None,
        connect_args: dict[str, Any] | None = None,
    ):
        """Open (creating or upgrading as needed) the ledger at ``url``.

        ``url`` is ``sqlite:////abs/path/ledger.db``, ``sqlite://`` (in memory, for tests) or
        ``postgresql+psycopg://...``. ``schema`` (PostgreSQL only) puts the tables in that schema,
        created if absent, so several ledgers (tests, environments) can share one database.
        """
        parsed = make_url(url)
        args = dict(connect_args or {})
        if parsed.get_backend_name() == "sqlite":
            if schema is not None:
                raise ValueError("schema is for PostgreSQL; a SQLite ledger is its own file")
            self.engine = self._sqlite_engine(parsed, echo, args)
        elif parsed.get_backend_name() == "postgresql":
            if schema is not None:
                if not _SCHEMA_NAME.fullmatch(schema):
                    raise ValueError(f"not a plain schema name: {schema!r}")
                args["options"] = f"{args.get('options', '')} -csearch_path={schema}".strip()
            self.engine = sa.create_engine(
                parsed, echo=echo, pool_pre_ping=True, connect_args=args, **_POOL
            )
        else:
            raise ValueError(f"the ledger runs on SQLite or PostgreSQL, not {parsed.drivername}")
        self.schema = schema
        #: This process's id in the ``workers`` table (``register_worker``): every row it moves to
        #: SENDING carries it in ``claimed_by``. ``None``: rows it sends carry no owner.
        self.worker_id: str | None = None
        # SQLite has one writer at a time. Threads of this process queue for it here, in order,
        # instead of in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) and
        # lets a batch's 16 workers spend most of their time asleep. Other processes still wait
        # through busy_timeout.
        self._write_lock: threading.RLock | None = (
            threading.RLock() if self.engine.dialect.name == "sqlite" else None
        )
        self._open_schema()

    # --- engine and transactions ----------------------------------------------------------------

    @staticmethod
    def _sqlite_engine(parsed: sa.URL, echo: bool, args: dict[str, Any]) -> Engine:
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        args.setdefault("check_same_thread", False)  # the pool hands connections between threads
        if in_memory:
            # One shared connection, or every checkout would see its own empty database. Meant for
            # tests: the single connection serialises nothing, so keep it to one thread.
            engine = sa.create_engine(parsed, echo=echo, poolclass=StaticPool, connect_args=args)
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(parsed, echo=echo, connect_args=args, **_POOL)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # SQLAlchemy, not the sqlite3 module, decides when a transaction begins (see _begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if not in_memory:
                # WAL: readers (the pages) never block the writer (a batch worker) and vice versa.
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=10000")  # wait for a busy writer, do not fail
            cursor.execute("PRAGMA synchronous=NORMAL")  # durable across crashes in WAL mode
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # A write transaction takes the write lock up front (BEGIN IMMEDIATE): a deferred one
            # that reads first and writes later can fail with SQLITE_BUSY without waiting for
            # busy_timeout. Readers stay deferred so they never queue behind a writer.
            immediate = conn.get_execution_options().get("ledger_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A committed write transaction (``engine.begin()``, taking SQLite's write lock first)."""
        with self._write_lock or nullcontext(), self.engine.connect() as conn:
            conn.execution_options(ledger_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot for everything a method reads."""
        with self.engine.begin() as conn:
            yield conn

    def _open_schema(self) -> None:
        """Create the tables if absent and upgrade an older schema; never a manual step."""
        with self._writing() as conn:
            if conn.dialect.name == "postgresql":
                if self.schema is not None:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                # Two replicas starting at once: one creates/upgrades, the other waits, then sees
                # the finished schema. (SQLite's BEGIN IMMEDIATE already serialises this.)
                key = zlib.crc32(f"points-desk-ledger:{self.schema or ''}".encode())
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            latest = schema_version_latest()
            fresh = not sa.inspect(conn).has_table("schema_version")
            metadata.create_all(conn, checkfirst=True)
            found = conn.execute(sa.select(schema_version.c.version)).scalars().all()
            if fresh or not found:
                conn.execute(schema_version.delete())
                conn.execute(schema_version.insert().values(version=latest))
                return
            current = max(found)
            if current > latest:
                raise SchemaTooNew(
                    f"the ledger's schema is version {current}; this Points Desk knows up to "
                    f"{latest}. Upgrade Points Desk before opening this database."
                )
            for version in range(current, latest):
                _UPGRADES[version - 1](conn)
            if current != latest or len(found) != 1:
                conn.execute(schema_version.delete())
                conn.execute(schema_version.insert().values(version=latest))

    def schema_version(self) -> int:
        """The version stamped in the database's ``schema_version`` row."""
        with self._reading() as conn:
            return int(conn.execute(sa.select(schema_version.c.version)).scalar_one())

    # --- writes ---------------------------------------------------------------------------------

    def record_intent(
        self,
        allocation: Allocation,
        *,
        operator: str,
        status: Status = Status.SENDING,
        batch_id: str | None = None,
        row_number: int | None = None,
        session_id: str | None = None,
        approved_by: str | None = None,
    ) -> LedgerRow:
        """Commit one intent (and its first audit event) before anything is sent.

        ``DuplicateReference`` if the reference is already in the ledger; nothing is written.
        """
        if status not in (Status.SENDING, Status.QUEUED):
            raise ValueError("an intent starts as SENDING (sent now) or QUEUED (a batch row)")
        now = datetime.now(UTC)
        values = _intent_values(
            allocation,
            operator=operator,
            status=status,
            batch_id=batch_id,
            row_number=row_number,
            session_id=session_id,
            approved_by=approved_by,
            now=now,
        )
        if status is Status.SENDING:
            values["claimed_by"] = self.worker_id
        detail = f"intent recorded by {operator}" + (
            f" (batch {batch_id} row {row_number})" if batch_id else ""
        )
        try:
            with self._writing() as conn:
                conn.execute(transactions.insert().values(values))
                _audit(conn, [_event(allocation.reference, now, operator, None, status, detail)])
                return self._fetch(conn, allocation.reference)
        except IntegrityError:
            # The unique constraint is the arbiter (two tabs inserting at once cannot both win).
            if self.get(allocation.reference) is not None:
                raise DuplicateReference(allocation.reference) from None
            if batch_id is not None:
                raise DuplicateReference(
                    allocation.reference, f"batch {batch_id} row {row_number} is already recorded"
                ) from None
            raise

    def record_intents(
        self,
        allocations: list[tuple[Allocation, int]],
        *,
        operator: str,
        batch_id: str,
        status: Status = Status.QUEUED,
        session_id: str | None = None,
        approved_by: str | None = None,
    ) -> int:
        """Queue a whole batch in one transaction: every row or none; returns the row count.

        ``allocations`` is ``[(allocation, row_number), ...]``. ``DuplicateReference`` (listing the
        references) if any reference is repeated or already in the ledger; nothing is written.
        """
        if status not in (Status.SENDING, Status.QUEUED):
            raise ValueError("an intent starts as SENDING or QUEUED")
        if not allocations:
            return 0
        references = [allocation.reference for allocation, _ in allocations]
        repeated = _repeats(references)
        if repeated:
            raise DuplicateReference(repeated)
        numbers = _repeats(str(number) for _, number in allocations)
        if numbers:
            raise DuplicateReference(
                [], f"batch {batch_id} repeats row numbers: {', '.join(numbers[:5])}"
            )
        rows, events = _batch_rows(
            allocations,
            operator=operator,
            status=status,
            batch_id=batch_id,
            session_id=session_id,
            approved_by=approved_by,
            now=datetime.now(UTC),
        )
        try:
            with self._writing() as conn:
                # executemany: one statement, many parameter sets; 50k rows take seconds.
                conn.execute(transactions.insert(), rows)
                _audit(conn, events)
        except IntegrityError:
            existing = self._existing(references)
            if existing:
                raise DuplicateReference(existing) from None
            raise DuplicateReference(
                [], f"batch {batch_id} already has some of these row numbers"
            ) from None
        return len(rows)

    def claim(
        self,
        reference: str,
        *,
        actor: str,
        from_statuses: tuple[Status, ...] = (Status.QUEUED,),
        to_status: Status = Status.SENDING,
    ) -> bool:
        """Atomically move a row from one of ``from_statuses`` to ``to_status``.

        ``True`` iff this caller moved it; of any number of racing callers exactly one wins.
        ``StatusConflict`` if a move asked for is not an allowed transition.
        """
        _check_allowed(from_statuses, to_status)
        with self._writing() as conn:
            before = self._cas(conn, reference, from_statuses, to_status)
            if before is None:
                return False
            detail = "claimed for sending" if to_status is Status.SENDING else "claimed"
            _audit(
                conn,
                [_event(reference, datetime.now(UTC), actor, before, to_status, detail)],
            )
            return True

    def transition(
        self,
        reference: str,
        to_status: Status,
        *,
        actor: str,
        from_statuses: tuple[Status, ...],
        detail: str = "",
        result: AllocationResult | None = None,
        enkash_code: str | None = None,
        enkash_message: str | None = None,
    ) -> LedgerRow:
        """Compare-and-set a row's status and record what EnKash said; returns the new row.

        ``result`` sets the card id, EnKash transaction id and balance after. ``StatusConflict`` if
        a move asked for is not allowed or the row is not in ``from_statuses`` (it is then left
        untouched); ``UnknownReference`` (also a ``StatusConflict``) if there is no such row.
        """
        move = Move(
            reference,
            to_status,
            actor=actor,
            from_statuses=from_statuses,
            detail=detail,
            result=result,
            enkash_code=enkash_code,
            enkash_message=enkash_message,
        )
        extra = move.values()
        with self._writing() as conn:
            conflict = self._move(conn, move, extra, datetime.now(UTC))
            if conflict is not None:
                raise conflict
            return self._fetch(conn, reference)

    def transition_many(self, moves: list[Move]) -> list[LedgerRow | StatusConflict]:
        """Several ``transition`` calls committed in one transaction (a group commit).

        Returns, in order, each move's new row, or the ``StatusConflict`` it met (that move
        changed nothing; the others still commit). A move that is not allowed or carries a result
        for another reference raises before anything is written. Any other error (the database
        refused a value, lost its connection) rolls the whole group back and raises: nothing of
        it is written, and each move can be retried on its own with ``transition``.
        """
        if not moves:
            return []
        values = [move.values() for move in moves]
        now = datetime.now(UTC)
        outcomes: list[LedgerRow | StatusConflict | None] = []
        with self._writing() as conn:
            for move, extra in zip(moves, values, strict=True):
                outcomes.append(self._move(conn, move, extra, now, audit=False))
            _audit(
                conn,
                [
                    _event(m.reference, now, m.actor, m.before, m.to_status, m.detail)
                    for m, o in zip(moves, outcomes, strict=True)
                    if o is None
                ],
            )
            moved = [m.reference for m, o in zip(moves, outcomes, strict=True) if o is None]
            rows: dict[str, LedgerRow] = {}
            for start in range(0, len(moved), 500):
                found = conn.execute(
                    sa.select(transactions).where(
                        transactions.c.reference.in_(moved[start : start + 500])
                    )
                )
                rows.update((r.reference, r) for r in map(_ledger_row, found.mappings()))
        return [rows[m.reference] if o is None else o for m, o in zip(moves, outcomes, strict=True)]

    def _move(
        self,
        conn: Connection,
        move: Move,
        extra: dict[str, Any],
        now: datetime,
        *,
        audit: bool = True,
    ) -> StatusConflict | None:
        """One move inside a write transaction: ``None`` when it moved (``move.before`` says
        from which status), else the conflict (nothing written)."""
        move.before = self._cas(
            conn, move.reference, move.from_statuses, move.to_status, extra, now
        )
        if move.before is None:
            current = self._status(conn, move.reference)
            if current is None:
                return UnknownReference(f"no ledger row with reference {move.reference}")
            return StatusConflict(
                f"{move.reference} is {current.value}, not "
                f"{' or '.join(s.value for s in move.from_statuses)}; it was not moved to "
                f"{move.to_status.value}"
            )
        if audit:
            _audit(
                conn,
                [_event(move.reference, now, move.actor, move.before, move.to_status, move.detail)],
            )
        return None

    def set_approved_by(
        self,
        approver: str,
        *,
        reference: str | None = None,
        batch_id: str | None = None,
        detail: str = "",
    ) -> int:
        """Record the second person who approved a row (or every row of a batch).

        Only rows with no approver yet change; each gets an audit event (actor: the approver) in
        the same transaction. Returns how many rows changed. Status is untouched.
        """
        if (reference is None) == (batch_id is None):
            raise ValueError("give a reference or a batch_id")
        t = transactions
        where = t.c.reference == reference if reference is not None else t.c.batch_id == batch_id
        now = datetime.now(UTC)
        with self._writing() as conn:
            found = conn.execute(
                sa.select(t.c.reference, t.c.status).where(where, t.c.approved_by.is_(None))
            ).all()
            if not found:
                return 0
            conn.execute(
                t.update()
                .where(where, t.c.approved_by.is_(None))
                .values(approved_by=approver, updated_at=now)
            )
            text = detail or f"approved by {approver}"
            _audit(
                conn,
                [_event(ref, now, approver, Status(st), Status(st), text) for ref, st in found],
            )
            return len(found)

    def note(self, reference: str, *, actor: str, detail: str) -> AuditEvent:
        """Append an audit event that changes nothing (e.g. "lookup: EnKash has no such ref")."""
        with self._writing() as conn:
            current = self._status(conn, reference)
            if current is None:
                raise UnknownReference(f"no ledger row with reference {reference}")
            return _append_note(conn, reference, actor, current, detail)

    def recover_interrupted(
        self,
        *,
        actor: str = "system",
        older_than: timedelta | None = None,
        stale_after: timedelta = WORKER_STALE_AFTER,
    ) -> int:
        """Mark ``SENDING`` rows ``UNKNOWN`` whose sender died mid-call. Returns the count.

        A row counts as interrupted when no live worker owns it: its ``claimed_by`` is empty
        (sent by a process that never registered) or names a worker whose heartbeat is older than
        ``stale_after`` (or that is gone from ``workers``). A live worker's in-flight rows are
        never touched. ``older_than`` also skips rows that changed more recently than that.
        Run at start-up and periodically by every worker.
        """
        now = datetime.now(UTC)
        t = transactions
        live = sa.select(workers.c.id).where(workers.c.heartbeat_at >= now - stale_after)
        query = sa.select(t.c.reference, t.c.claimed_by).where(
            t.c.status == Status.SENDING.value,
            sa.or_(t.c.claimed_by.is_(None), t.c.claimed_by.not_in(live)),
        )
        if older_than is not None:
            query = query.where(t.c.updated_at < now - older_than)
        with self._reading() as conn:  # most passes find nothing: no write lock for those
            found = conn.execute(query).all()
        if not found:
            return 0
        with self._writing() as conn:
            moved = []
            for reference, owner in found:
                # Still a CAS, on the status and on the owner seen: a row that finished, or that
                # a live worker claimed again meanwhile, keeps what it has.
                changed = conn.execute(
                    t.update()
                    .where(
                        t.c.reference == reference,
                        t.c.status == Status.SENDING.value,
                        t.c.claimed_by.is_(None) if owner is None else t.c.claimed_by == owner,
                    )
                    .values(status=Status.UNKNOWN.value, updated_at=now)
                )
                if changed.rowcount == 1:
                    moved.append(reference)
            _audit(
                conn,
                [
                    _event(
                        reference,
                        now,
                        actor,
                        Status.SENDING,
                        Status.UNKNOWN,
                        "interrupted: the process stopped while the call to EnKash was in "
                        "flight, so the outcome must be settled by lookup",
                    )
                    for reference in moved
                ],
            )
            return len(moved)

    # --- workers --------------------------------------------------------------------------------

    def register_worker(self, worker_id: str, *, host: str, pid: int) -> None:
        """Record this process as a live worker; rows it moves to SENDING carry ``worker_id``."""
        now = datetime.now(UTC)
        with self._writing() as conn:
            conn.execute(workers.delete().where(workers.c.id == worker_id))
            conn.execute(
                workers.insert().values(
                    id=worker_id, host=host[:255], pid=pid, started_at=now, heartbeat_at=now
                )
            )
        self.worker_id = worker_id

    def worker_heartbeat(self, worker_id: str, *, host: str, pid: int) -> None:
        """Say the worker is alive (registering it again if a peer removed it as dead)."""
        now = datetime.now(UTC)
        with self._writing() as conn:
            changed = conn.execute(
                workers.update().where(workers.c.id == worker_id).values(heartbeat_at=now)
            )
            if changed.rowcount == 0:
                conn.execute(
                    workers.insert().values(
                        id=worker_id, host=host[:255], pid=pid, started_at=now, heartbeat_at=now
                    )
                )

    def deregister_worker(self, worker_id: str) -> None:
        """A clean stop: the worker is gone (anything it still had in flight is then settled)."""
        with self._writing() as conn:
            conn.execute(workers.delete().where(workers.c.id == worker_id))

    def forget_dead_workers(self, older_than: timedelta) -> int:
        """Remove workers silent for longer than ``older_than`` that own no SENDING row."""
        t = transactions
        owning = sa.select(t.c.claimed_by).where(
            t.c.status == Status.SENDING.value, t.c.claimed_by.is_not(None)
        )
        with self._writing() as conn:
            return conn.execute(
                workers.delete().where(
                    workers.c.heartbeat_at < datetime.now(UTC) - older_than,
                    workers.c.id.not_in(owning),
                )
            ).rowcount

    def live_workers(self, stale_after: timedelta = WORKER_STALE_AFTER) -> list[dict[str, Any]]:
        """Workers whose heartbeat is fresh: id, host, pid, started_at, heartbeat_at."""
        query = (
            sa.select(workers)
            .where(workers.c.heartbeat_at >= datetime.now(UTC) - stale_after)
            .order_by(workers.c.started_at)
        )
        with self._reading() as conn:
            return [dict(m) for m in conn.execute(query).mappings()]

    def claimed_by(self, reference: str) -> str | None:
        """The worker that last moved this row to SENDING (``None`` if none recorded)."""
        with self._reading() as conn:
            return conn.execute(
                sa.select(transactions.c.claimed_by).where(transactions.c.reference == reference)
            ).scalar_one_or_none()

    def reset(self) -> None:
        """Delete every row and audit event. SANDBOX ONLY (the sandbox "reset" button).

        This is the single exception to the append-only audit trail; ``Desk.reset_sandbox``
        refuses to call it in live mode.
        """
        with self._writing() as conn:
            conn.execute(approvals.delete())  # requests about rows that no longer exist
            conn.execute(audit_events.delete())
            conn.execute(transactions.delete())
            conn.execute(batches.delete())

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, or before deleting the file)."""
        self.engine.dispose()

    # --- reads ----------------------------------------------------------------------------------

    def get(self, reference: str) -> LedgerRow | None:
        """The row with this reference, or ``None``."""
        with self._reading() as conn:
            found = conn.execute(
                sa.select(transactions).where(transactions.c.reference == reference)
            )
            mapping = found.mappings().one_or_none()
            return _ledger_row(mapping) if mapping is not None else None

    def audit_trail(self, reference: str) -> list[AuditEvent]:
        """Every audit event of a reference, oldest first."""
        with self._reading() as conn:
            found = conn.execute(
                sa.select(audit_events)
                .where(audit_events.c.reference == reference)
                .order_by(audit_events.c.at, audit_events.c.id)
            )
            return [_audit_event(m) for m in found.mappings()]

    def rows(
        self,
        *,
        statuses: Iterable[Status] | None = None,
        batch_id: str | None = None,
        limit: int | None = None,
        order: str = "created_at",
    ) -> list[LedgerRow]:
        """Rows, filtered by status and batch; ``order`` is ``created_at`` (oldest first),
        ``-created_at`` (newest first), ``updated_at``, ``-updated_at`` or ``row_number``."""
        if order not in _ORDERS:
            raise ValueError(f"order must be one of {', '.join(_ORDERS)}")
        query = sa.select(transactions).order_by(*_ORDERS[order])
        if statuses is not None:
            query = query.where(transactions.c.status.in_([Status(s).value for s in statuses]))
        if batch_id is not None:
            query = query.where(transactions.c.batch_id == batch_id)
        if limit is not None:
            query = query.limit(limit)
        with self._reading() as conn:
            return [_ledger_row(m) for m in conn.execute(query).mappings()]

    def count(self, statuses: Iterable[Status]) -> int:
        """How many rows are in any of ``statuses`` (an index lookup)."""
        with self._reading() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        transactions.c.status.in_([s.value for s in statuses])
                    )
                ).scalar_one()
            )

    def batch_counts(self, batch_id: str) -> dict[Status, int]:
        """How many rows of a batch are in each status (every status present, zero if none)."""
        counts = dict.fromkeys(Status, 0)
        with self._reading() as conn:
            found = conn.execute(
                sa.select(transactions.c.status, sa.func.count())
                .where(transactions.c.batch_id == batch_id)
                .group_by(transactions.c.status)
            )
            for status, count in found:
                counts[Status(status)] = int(count)
        return counts

    def next_queued(self, batch_id: str, limit: int) -> list[str]:
        """References of a batch's ``QUEUED`` rows, in row order (a worker then claims each)."""
        with self._reading() as conn:
            found = conn.execute(
                sa.select(transactions.c.reference)
                .where(
                    transactions.c.batch_id == batch_id,
                    transactions.c.status == Status.QUEUED.value,
                )
                .order_by(transactions.c.row_number, transactions.c.id)
                .limit(limit)
            )
            return list(found.scalars())

    def claim_next_queued(self, batch_id: str, *, actor: str) -> str | None:
        """Claim (``QUEUED`` -> ``SENDING``) the batch's next queued row in row order; its
        reference, or ``None`` when none is left.

        On PostgreSQL the row is picked with ``FOR UPDATE SKIP LOCKED``, so workers claiming at
        the same moment each get a different row instead of racing for the same one. On SQLite the
        write transaction already holds the database. Either way the move itself is the same CAS
        as ``claim``.
        """
        t = transactions
        query = (
            sa.select(t.c.reference)
            .where(t.c.batch_id == batch_id, t.c.status == Status.QUEUED.value)
            .order_by(t.c.row_number, t.c.id)
            .limit(1)
        )
        with self._writing() as conn:
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            for reference in conn.execute(query).scalars():
                before = self._cas(conn, reference, (Status.QUEUED,), Status.SENDING)
                if before is None:
                    return None
                now = datetime.now(UTC)
                _audit(
                    conn,
                    [_event(reference, now, actor, before, Status.SENDING, "claimed for sending")],
                )
                return reference
            return None

    def known_balance(self, card_id: str) -> Decimal | None:
        """The balance after the card's latest ``SUCCEEDED`` row (by update time, then id).

        ``None`` if the card has no succeeded row, or if that row's balance is not known (a
        lookup settled it without one): an older balance would be stale, so it is not offered.
        """
        with self._reading() as conn:
            found = conn.execute(
                sa.select(transactions.c.balance_after_cents)
                .where(
                    transactions.c.card_id == card_id,
                    transactions.c.status == Status.SUCCEEDED.value,
                )
                .order_by(transactions.c.updated_at.desc(), transactions.c.id.desc())
                .limit(1)
            ).first()
            return from_cents(found[0]) if found is not None else None

    def find_employees(self, query: str, limit: int = 20) -> list[EmployeeSummary]:
        """Cards whose email, mobile, card id or first name contains ``query`` (any case).

        One entry per card that exists (has a ``SUCCEEDED`` row), most recently active first,
        with the latest employee details and known balance.
        """
        text = " ".join(query.split())
        if not text:
            return []
        pattern = _like(text)
        t = transactions
        matches = [
            sa.func.lower(t.c.email).like(pattern, escape="\\"),
            sa.func.lower(t.c.mobile).like(pattern, escape="\\"),
            sa.func.lower(t.c.card_id).like(pattern, escape="\\"),
            sa.func.lower(t.c.first_name).like(pattern, escape="\\"),
        ]
        digits = re.sub(r"\D", "", text)
        if len(digits) >= 3 and digits != text and _PHONE_TEXT.fullmatch(text):
            # "96000 98867" or "+91 96000-98867" still finds the stored 10-digit number.
            national = digits[-10:] if len(digits) > 10 else digits
            matches.append(t.c.mobile.like(f"%{national}%"))
        card_ids = (
            sa.select(t.c.card_id)
            .where(t.c.status == Status.SUCCEEDED.value, t.c.card_id.is_not(None), sa.or_(*matches))
            .distinct()
        )
        return self._summaries(card_ids, limit)

    def cards_by_contact(
        self, *, emails: Iterable[str] = (), mobiles: Iterable[str] = ()
    ) -> dict[tuple[str, str], set[str]]:
        """Cards that exist (a ``SUCCEEDED`` row) per exact contact: ``("email", e)`` (any case)
        or ``("mobile", m)`` (10 digits) -> card ids. Any row of a card counts, not only its
        latest, so a card once recorded with this email or mobile is never missed."""
        t = transactions
        wanted = {
            "email": sorted({e.strip().lower() for e in emails if e and e.strip()}),
            "mobile": sorted({m.strip() for m in mobiles if m and m.strip()}),
        }
        columns = {"email": sa.func.lower(t.c.email), "mobile": t.c.mobile}
        found: dict[tuple[str, str], set[str]] = {}
        with self._reading() as conn:
            for name, values in wanted.items():
                for start in range(0, len(values), 500):
                    chunk = values[start : start + 500]
                    rows = conn.execute(
                        sa.select(columns[name].label("key"), t.c.card_id)
                        .where(
                            t.c.status == Status.SUCCEEDED.value,
                            t.c.card_id.is_not(None),
                            columns[name].in_(chunk),
                        )
                        .distinct()
                    )
                    for key, card in rows:
                        found.setdefault((name, key), set()).add(card)
        return found

    def employees_by_cards(self, card_ids: Iterable[str]) -> list[EmployeeSummary]:
        """The summaries of the given cards that exist, most recently active first."""
        keys = sorted({card.strip().upper() for card in card_ids if card and card.strip()})
        return self._summaries(keys, max(1, len(keys))) if keys else []

    def employee_by_card(self, card_id: str) -> EmployeeSummary | None:
        """The card's latest employee details and known balance, if the card exists."""
        key = card_id.strip().upper()
        found = self._summaries([key], 1)
        return found[0] if found else None

    def card_totals(self) -> dict[str, Decimal]:
        """Per card: succeeded credits (create + credit) minus succeeded debits (drift checks)."""
        t = transactions
        signed = sa.case((t.c.kind == Kind.DEBIT.value, -t.c.amount_cents), else_=t.c.amount_cents)
        with self._reading() as conn:
            found = conn.execute(
                sa.select(t.c.card_id, sa.func.sum(signed))
                .where(t.c.status == Status.SUCCEEDED.value, t.c.card_id.is_not(None))
                .group_by(t.c.card_id)
            )
            return {card: from_cents(int(total)) for card, total in found}  # type: ignore[misc]

    def totals(self) -> dict[str, Any]:
        """Headline figures, computed in SQL: ``credited``, ``debited``, ``net`` (Decimal,
        succeeded rows only), ``employees`` (distinct cards) and ``transactions`` (all rows)."""
        t = transactions
        succeeded = t.c.status == Status.SUCCEEDED.value
        debit = t.c.kind == Kind.DEBIT.value
        credited = sa.func.coalesce(
            sa.func.sum(sa.case((sa.and_(succeeded, ~debit), t.c.amount_cents), else_=0)), 0
        )
        debited = sa.func.coalesce(
            sa.func.sum(sa.case((sa.and_(succeeded, debit), t.c.amount_cents), else_=0)), 0
        )
        employees = sa.func.count(sa.distinct(sa.case((succeeded, t.c.card_id), else_=None)))
        with self._reading() as conn:
            row = conn.execute(sa.select(credited, debited, employees, sa.func.count())).one()
        credited_cents, debited_cents = int(row[0]), int(row[1])
        return {
            "credited": from_cents(credited_cents),
            "debited": from_cents(debited_cents),
            "net": from_cents(credited_cents - debited_cents),
            "employees": int(row[2]),
            "transactions": int(row[3]),
        }

    # --- batches (services/bulk.py) -------------------------------------------------------------

    def create_batch(
        self,
        *,
        batch_id: str,
        file_name: str,
        file_digest: str,
        operator: str,
        allocations: list[tuple[Allocation, int]],
        concurrency: int,
        rate_limit: float | None = None,
        session_id: str | None = None,
        state: str = "queued",
        note: str = "",
        row_notes: Mapping[int, str] | None = None,
    ) -> BatchRecord:
        """Record a batch and queue all its rows (``QUEUED``) in ONE transaction: all or nothing.

        ``note`` is the batch's first note; ``row_notes`` (row number -> text) are added to those
        rows' first audit events. ``DuplicateBatchFile`` if a batch with this file digest exists;
        ``DuplicateReference`` if a reference is already in the ledger. Nothing is written in
        either case.
        """
        if state not in BATCH_STATES:
            raise ValueError(f"state must be one of {', '.join(BATCH_STATES)}")
        references = [allocation.reference for allocation, _ in allocations]
        if _repeats(references) or _repeats(str(number) for _, number in allocations):
            raise DuplicateReference(_repeats(references), "a batch repeats a reference or row")
        now = datetime.now(UTC)
        debits = [a.amount for a, _ in allocations if a.kind is Kind.DEBIT]
        credits = [a.amount for a, _ in allocations if a.kind is not Kind.DEBIT]
        record = {
            "batch_id": batch_id,
            "file_name": file_name[:255],
            "file_digest": file_digest,
            "operator": operator,
            "session_id": session_id,
            "state": state,
            "concurrency": concurrency,
            "rate_limit": rate_limit,
            "row_count": len(allocations),
            "credit_rows": len(credits),
            "credit_cents": sum(to_cents(a) for a in credits),
            "debit_rows": len(debits),
            "debit_cents": sum(to_cents(a) for a in debits),
            "created_at": now,
            "updated_at": now,
            "note": note,
        }
        rows, events = _batch_rows(
            allocations,
            operator=operator,
            status=Status.QUEUED,
            batch_id=batch_id,
            session_id=session_id,
            approved_by=None,
            now=now,
        )
        for values, first in zip(rows, events, strict=True):
            extra = (row_notes or {}).get(values["row_number"])
            if extra:
                first["detail"] += f"; {extra}"
        try:
            with self._writing() as conn:
                conn.execute(batches.insert().values(record))
                if rows:
                    conn.execute(transactions.insert(), rows)
                    _audit(conn, events)
        except IntegrityError:
            existing = self.batch_by_digest(file_digest)
            if existing is not None:
                raise DuplicateBatchFile(existing) from None
            raise DuplicateReference(self._existing(references) or [batch_id]) from None
        found = self.get_batch(batch_id)
        assert found is not None
        return found

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        """The batch with this id, or ``None``."""
        with self._reading() as conn:
            found = conn.execute(sa.select(batches).where(batches.c.batch_id == batch_id))
            mapping = found.mappings().one_or_none()
            return _batch_record(mapping) if mapping is not None else None

    def batch_by_digest(self, file_digest: str) -> BatchRecord | None:
        """The batch queued from a file with this SHA-256, or ``None``."""
        with self._reading() as conn:
            found = conn.execute(sa.select(batches).where(batches.c.file_digest == file_digest))
            mapping = found.mappings().one_or_none()
            return _batch_record(mapping) if mapping is not None else None

    def list_batches(
        self, limit: int = 20, states: Iterable[str] | None = None
    ) -> list[BatchRecord]:
        """The most recent batches first (optionally only those in ``states``)."""
        query = sa.select(batches).order_by(batches.c.created_at.desc()).limit(limit)
        if states is not None:
            query = query.where(batches.c.state.in_(list(states)))
        with self._reading() as conn:
            return [_batch_record(m) for m in conn.execute(query).mappings()]

    def update_batch(
        self, batch_id: str, *, from_states: Iterable[str] | None = None, **values: Any
    ) -> bool:
        """Set columns of a batch; with ``from_states`` only if its state is one of them (a CAS).

        Returns whether the batch changed. ``updated_at`` is set unless only the heartbeat moves.
        """
        unknown = set(values) - set(batches.c.keys())
        if unknown or "batch_id" in values:
            raise ValueError(f"not batch columns: {', '.join(sorted(unknown)) or 'batch_id'}")
        if isinstance(values.get("note"), str):
            values["note"] = redact(values["note"])
        if values.get("state") is not None and values["state"] not in BATCH_STATES:
            raise ValueError(f"state must be one of {', '.join(BATCH_STATES)}")
        if set(values) != {"heartbeat_at"}:
            values.setdefault("updated_at", datetime.now(UTC))
        query = batches.update().where(batches.c.batch_id == batch_id).values(values)
        if from_states is not None:
            query = query.where(batches.c.state.in_(list(from_states)))
        with self._writing() as conn:
            return conn.execute(query).rowcount == 1

    def cancel_queued(self, batch_id: str, *, actor: str, code: str, message: str) -> int:
        """Move every still-``QUEUED`` row of a batch to ``FAILED`` (never sent); one transaction.

        Rows a worker claimed meanwhile are not touched (the CAS is on ``QUEUED``). Returns the
        number of rows moved; each gets an audit event.
        """
        t = transactions
        now = datetime.now(UTC)
        message = redact(message)
        queued = sa.and_(t.c.batch_id == batch_id, t.c.status == Status.QUEUED.value)
        with self._writing() as conn:
            references = conn.execute(sa.select(t.c.reference).where(queued)).scalars().all()
            if not references:
                return 0
            conn.execute(
                t.update()
                .where(queued)
                .values(
                    status=Status.FAILED.value,
                    enkash_code=code,
                    enkash_message=message,
                    updated_at=now,
                )
            )
            _audit(
                conn,
                [
                    _event(reference, now, actor, Status.QUEUED, Status.FAILED, message)
                    for reference in references
                ],
            )
            return len(references)

    def batch_settled_since(self, batch_id: str, since: datetime) -> int:
        """Rows of a batch that reached an outcome (succeeded, failed, unknown) since ``since``."""
        t = transactions
        done = (Status.SUCCEEDED.value, Status.FAILED.value, Status.UNKNOWN.value)
        with self._reading() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        t.c.batch_id == batch_id, t.c.status.in_(done), t.c.updated_at >= since
                    )
                ).scalar_one()
            )

    # --- reconciliation (services/allocations.py settle/resend, services/reconcile.py) ----------

    def latest_events(self, references: Iterable[str]) -> dict[str, AuditEvent]:
        """The latest audit event (highest id) of each reference that has one."""
        wanted = list(dict.fromkeys(references))
        latest: dict[str, AuditEvent] = {}
        with self._reading() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                newest = (
                    sa.select(sa.func.max(audit_events.c.id))
                    .where(audit_events.c.reference.in_(chunk))
                    .group_by(audit_events.c.reference)
                )
                found = conn.execute(sa.select(audit_events).where(audit_events.c.id.in_(newest)))
                for m in found.mappings():
                    latest[m["reference"]] = _audit_event(m)
        return latest

    def note_if_latest(
        self, reference: str, *, actor: str, detail: str, expected_event_id: int | None
    ) -> AuditEvent | None:
        """Append a note only if the reference's latest audit event is still ``expected_event_id``.

        The note and the check are one transaction (the row is locked first on PostgreSQL), so a
        lookup's verdict is recorded only when nothing happened to the row while EnKash was being
        asked. Returns the new event, or ``None`` (nothing written) if something did.
        """
        with self._writing() as conn:
            current = self._locked_status(conn, reference)
            if current is None:
                raise UnknownReference(f"no ledger row with reference {reference}")
            if self._latest_event_id(conn, reference) != expected_event_id:
                return None
            return _append_note(conn, reference, actor, current, detail)

    def claim_if_latest(
        self, reference: str, *, actor: str, expected_event_id: int, detail: str
    ) -> bool:
        """``UNKNOWN`` -> ``SENDING`` only if the latest audit event is ``expected_event_id``.

        A resend claims its row this way: the event is the lookup that proved the reference absent,
        so the claim fails if anything (another lookup, resend or settlement) happened since.
        """
        with self._writing() as conn:
            if self._locked_status(conn, reference) is not Status.UNKNOWN:
                return False
            if self._latest_event_id(conn, reference) != expected_event_id:
                return False
            now = datetime.now(UTC)
            if self._cas(conn, reference, (Status.UNKNOWN,), Status.SENDING, now=now) is None:
                return False
            _audit(conn, [_event(reference, now, actor, Status.UNKNOWN, Status.SENDING, detail)])
            return True

    def rows_with_code(
        self,
        enkash_code: str,
        *,
        statuses: Iterable[Status] | None = None,
        limit: int | None = None,
    ) -> list[LedgerRow]:
        """Rows carrying this ``enkash_code`` (e.g. ``REFERENCE_MISMATCH``), newest change first."""
        query = (
            sa.select(transactions)
            .where(transactions.c.enkash_code == enkash_code)
            .order_by(*_ORDERS["-updated_at"])
        )
        if statuses is not None:
            query = query.where(transactions.c.status.in_([Status(s).value for s in statuses]))
        if limit is not None:
            query = query.limit(limit)
        with self._reading() as conn:
            return [_ledger_row(m) for m in conn.execute(query).mappings()]

    @staticmethod
    def _locked_status(conn: Connection, reference: str) -> Status | None:
        """The row's status, locking the row until commit on PostgreSQL (SQLite's write
        transaction already holds the whole database)."""
        query = sa.select(transactions.c.status).where(transactions.c.reference == reference)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found = conn.execute(query).scalar_one_or_none()
        return Status(found) if found is not None else None

    @staticmethod
    def _latest_event_id(conn: Connection, reference: str) -> int | None:
        return conn.execute(
            sa.select(sa.func.max(audit_events.c.id)).where(audit_events.c.reference == reference)
        ).scalar_one_or_none()

    # --- internals ------------------------------------------------------------------------------

    def _cas(
        self,
        conn: Connection,
        reference: str,
        from_statuses: tuple[Status, ...],
        to_status: Status,
        extra: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Status | None:
        """The compare-and-set itself; returns the status it moved from, or ``None`` if it did not.

        One UPDATE per from-status, so the audit event can name the exact status it left (the row
        lock of the first matching UPDATE makes the answer exact on PostgreSQL too).
        """
        values: dict[str, Any] = {"status": to_status.value, "updated_at": now or datetime.now(UTC)}
        values.update(extra or {})
        if to_status is Status.SENDING:
            values["attempts"] = transactions.c.attempts + 1
            values["claimed_by"] = self.worker_id
        for before in dict.fromkeys(from_statuses):
            changed = conn.execute(
                transactions.update()
                .where(
                    transactions.c.reference == reference,
                    transactions.c.status == before.value,
                )
                .values(values)
            )
            if changed.rowcount == 1:
                return before
        return None

    @staticmethod
    def _status(conn: Connection, reference: str) -> Status | None:
        found = conn.execute(
            sa.select(transactions.c.status).where(transactions.c.reference == reference)
        ).scalar_one_or_none()
        return Status(found) if found is not None else None

    @staticmethod
    def _fetch(conn: Connection, reference: str) -> LedgerRow:
        found = conn.execute(sa.select(transactions).where(transactions.c.reference == reference))
        return _ledger_row(found.mappings().one())

    def _existing(self, references: list[str]) -> list[str]:
        found: list[str] = []
        with self._reading() as conn:
            for start in range(0, len(references), 500):
                chunk = references[start : start + 500]
                found.extend(
                    conn.execute(
                        sa.select(transactions.c.reference).where(
                            transactions.c.reference.in_(chunk)
                        )
                    ).scalars()
                )
        return found

    def _summaries(self, card_ids: Any, limit: int) -> list[EmployeeSummary]:
        """Summaries of the given cards (a subquery or a list), most recently active first."""
        t = transactions
        succeeded = t.c.status == Status.SUCCEEDED.value
        with self._reading() as conn:
            active = conn.execute(
                sa.select(t.c.card_id, sa.func.max(t.c.updated_at).label("last"))
                .where(succeeded, t.c.card_id.in_(card_ids))
                .group_by(t.c.card_id)
                .order_by(sa.desc("last"), t.c.card_id)
                .limit(limit)
            ).all()
            if not active:
                return []
            chosen = [card for card, _ in active]
            history = conn.execute(
                sa.select(t)
                .where(succeeded, t.c.card_id.in_(chosen))
                .order_by(t.c.updated_at, t.c.id)
            ).mappings()
            latest_row: dict[str, Any] = {}
            latest_person: dict[str, Any] = {}
            for m in history:  # ascending, so the last one seen per card is the latest
                latest_row[m["card_id"]] = m
                if m["email"] or m["mobile"] or m["first_name"]:
                    latest_person[m["card_id"]] = m
        summaries = []
        for card, last in active:
            person = latest_person.get(card, {})
            summaries.append(
                EmployeeSummary(
                    card_id=card,
                    email=person.get("email"),
                    mobile=person.get("mobile"),
                    title=person.get("title"),
                    first_name=person.get("first_name"),
                    gender=person.get("gender"),
                    balance=from_cents(latest_row[card]["balance_after_cents"]),
                    last_activity=last,
                )
            )
        return summaries


def _check_allowed(from_statuses: tuple[Status, ...], to_status: Status) -> None:
    if not from_statuses:
        raise StatusConflict("no from-status given")
    forbidden = [
        s for s in from_statuses if (Status(s), Status(to_status)) not in ALLOWED_TRANSITIONS
    ]
    if forbidden:
        raise StatusConflict(
            "statuses only move forward; not allowed: "
            + ", ".join(f"{s.value} -> {to_status.value}" for s in forbidden)
        )


def _repeats(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for value in values:
        if value in seen:
            repeated[value] = None
        seen.add(value)
    return list(repeated)
