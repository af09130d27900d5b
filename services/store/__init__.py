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

from services.store.alerts import AlertState, AlertStore, alert_states
from services.store.approvals import ApprovalStore
from services.store.batches import BatchStore
from services.store.bulk_rows import BulkRowStore, CorrectionRowsRefused, StoredRejectedRow
from services.store.corrections import CorrectionStore, ReversalRefused, ReversalRoom
from services.store.employees import EmployeeStore
from services.store.engine import CENT, UTCDateTime, from_cents, to_cents
from services.store.exchanges import ExchangeRecord, ExchangeStore
from services.store.migrate import current_revision, head, open_schema
from services.store.programmes import (
    BudgetExceeded,
    Programme,
    ProgrammeClosed,
    ProgrammeCodeTaken,
    ProgrammeEvent,
    ProgrammeStore,
    UnknownProgramme,
)
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
from services.store.schedules import (
    ScheduleEvent,
    ScheduleMoved,
    ScheduleRecord,
    ScheduleRow,
    ScheduleRun,
    ScheduleStore,
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
    GENERAL_CODE,
    approvals,
    audit_events,
    batch_rejected_rows,
    batches,
    exchanges,
    metadata,
    operator_months,
    programme_events,
    programmes,
    schedule_events,
    schedule_rows,
    schedule_runs,
    schedules,
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
    "GENERAL_CODE",
    "SCHEMA_HEAD",
    "WORKER_STALE_AFTER",
    "AlertState",
    "AuditEvent",
    "BatchRecord",
    "BudgetExceeded",
    "CorrectionRowsRefused",
    "DuplicateBatchFile",
    "DuplicateReference",
    "EmployeeSummary",
    "ExchangeRecord",
    "Ledger",
    "LedgerRow",
    "Move",
    "Programme",
    "ProgrammeClosed",
    "ProgrammeCodeTaken",
    "ProgrammeEvent",
    "ReversalRefused",
    "ReversalRoom",
    "ScheduleEvent",
    "ScheduleMoved",
    "ScheduleRecord",
    "ScheduleRow",
    "ScheduleRun",
    "SchemaTooNew",
    "StatusConflict",
    "StoredRejectedRow",
    "UTCDateTime",
    "UnknownProgramme",
    "UnknownReference",
    "alert_states",
    "approvals",
    "audit_event",
    "audit_events",
    "batch_record",
    "batch_rejected_rows",
    "batches",
    "card_balances",
    "card_days",
    "daily_totals",
    "exchanges",
    "from_cents",
    "ledger_row",
    "metadata",
    "operator_months",
    "programme_events",
    "programmes",
    "schedule_events",
    "schedule_rows",
    "schedule_runs",
    "schedules",
    "sign_in_attempts",
    "to_cents",
    "transactions",
    "workers",
]


class Ledger(
    BatchStore,
    EmployeeStore,
    ApprovalStore,
    SignInStore,
    WorkerStore,
    CorrectionStore,
    ExchangeStore,
    ProgrammeStore,
    BulkRowStore,
    SummaryStore,
    AlertStore,
    ScheduleStore,
):
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
            # Schedules go with the rows their runs became (a run names a batch deleted here).
            conn.execute(schedule_runs.delete())
            conn.execute(schedule_rows.delete())
            conn.execute(schedules.delete())
            conn.execute(schedule_events.delete())
            conn.execute(alert_states.delete())  # a reset sandbox starts with no alert history
            conn.execute(exchanges.delete())
            conn.execute(audit_events.delete())
            conn.execute(transactions.delete())
            conn.execute(batches.delete())
            conn.execute(batch_rejected_rows.delete())
            # Programmes stay (they are set-up, not movements); their counters follow the rows.
            conn.execute(
                programmes.update().values(reserved_cents=0, credited_cents=0, returned_cents=0)
            )
            conn.execute(operator_months.delete())
            conn.execute(daily_totals.delete())
            conn.execute(card_balances.delete())
            conn.execute(card_days.delete())
