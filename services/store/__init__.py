"""The durable store: one row per reference with its status, plus an append-only audit trail.

SQLAlchemy Core over SQLite (the embedded default) or PostgreSQL (a shared team deployment),
split by concern:

* ``engine``: the engine, the ONE write helper (``writing()``) and the read helper, cents, UTC;
* ``schema``: every table; ``migrate`` and ``migrations/``: Alembic, applied on every open;
* ``transactions``: intents, claims, transitions, audit events, recovery, lookups;
* ``employees``: cards the ledger knows, their details and balances, and the totals;
* ``batches``, ``approvals``, ``sign_in``, ``workers``: one table's queries each;
* ``records``: what the store hands back, and the errors it raises.

Callers hold one ``Ledger``: the concerns composed over one engine. Every public method runs in
its own committed transaction, so what a method returns is already on disk.
"""

from __future__ import annotations

from typing import Any

from services.store.approvals import ApprovalStore
from services.store.batches import BatchStore
from services.store.employees import EmployeeStore
from services.store.engine import CENT, UTCDateTime, from_cents, to_cents
from services.store.migrate import current_revision, head, open_schema
from services.store.records import (
    AuditEvent,
    BatchRecord,
    DuplicateBatchFile,
    DuplicateReference,
    EmployeeSummary,
    LedgerRow,
    SchemaTooNew,
    StatusConflict,
    UnknownReference,
    audit_event,
    batch_record,
    ledger_row,
)
from services.store.sign_in import SignInStore
from services.store.summaries import SummaryStore, card_balances, card_days, daily_totals
from services.store.transactions import ALLOWED_TRANSITIONS, WORKER_STALE_AFTER, Move
from services.store.workers import WorkerStore

# isort: split
# Last, on purpose: the tables ``transactions``, ``approvals`` and ``workers`` share their names
# with modules of this package, and importing a module binds its name here. Every module is
# loaded above, so these names stay the tables. (``importlib.import_module`` gets a module.)
from services.store.schema import (
    BATCH_STATES,
    approvals,
    audit_events,
    batches,
    metadata,
    sign_in_attempts,
    transactions,
    workers,
)

#: The newest schema revision this code knows (``Ledger.schema_revision()`` after opening).
SCHEMA_HEAD = head()

__all__ = [
    "ALLOWED_TRANSITIONS",
    "BATCH_STATES",
    "CENT",
    "SCHEMA_HEAD",
    "WORKER_STALE_AFTER",
    "AuditEvent",
    "BatchRecord",
    "DuplicateBatchFile",
    "DuplicateReference",
    "EmployeeSummary",
    "Ledger",
    "LedgerRow",
    "Move",
    "SchemaTooNew",
    "StatusConflict",
    "UTCDateTime",
    "UnknownReference",
    "approvals",
    "audit_event",
    "audit_events",
    "batch_record",
    "batches",
    "card_balances",
    "card_days",
    "daily_totals",
    "from_cents",
    "ledger_row",
    "metadata",
    "sign_in_attempts",
    "to_cents",
    "transactions",
    "workers",
]


class Ledger(BatchStore, EmployeeStore, ApprovalStore, SignInStore, WorkerStore, SummaryStore):
    """The store callers hold: every concern over one engine. Share one instance per process;
    it is thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        schema: str | None = None,
        connect_args: dict[str, Any] | None = None,
    ):
        """Open (creating or migrating as needed) the ledger at ``url``.

        ``url`` is ``sqlite:////abs/path/ledger.db``, ``sqlite://`` (in memory, for tests) or
        ``postgresql+psycopg://...``. ``schema`` (PostgreSQL only) puts the tables in that schema,
        created if absent, so several ledgers (tests, environments) can share one database.
        """
        super().__init__(url, echo=echo, schema=schema, connect_args=connect_args)
        open_schema(self)

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (``head()`` once opened)."""
        with self.reading() as conn:
            return current_revision(conn)

    def reset(self) -> None:
        """Delete every row and audit event. SANDBOX ONLY (the sandbox "reset" button).

        This is the single exception to the append-only audit trail; ``Desk.reset_sandbox``
        refuses to call it in live mode.
        """
        with self.writing() as conn:
            conn.execute(approvals.delete())  # requests about rows that no longer exist
            conn.execute(audit_events.delete())
            conn.execute(transactions.delete())
            conn.execute(batches.delete())
            conn.execute(daily_totals.delete())
            conn.execute(card_balances.delete())
            conn.execute(card_days.delete())
