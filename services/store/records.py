"""What the store hands back (frozen records, amounts as ``Decimal``) and the errors it raises."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.errors import Conflict, NotFound
from services.models import AuditKind, BatchState, Kind, Status
from services.store.engine import from_cents


class DuplicateReference(Conflict):
    """The reference (or batch row) is already in the ledger; nothing was written."""

    def __init__(self, references: str | Iterable[str], message: str | None = None):
        self.references = [references] if isinstance(references, str) else list(references)
        self.reference = self.references[0] if self.references else ""
        shown = ", ".join(self.references[:5]) + (" ..." if len(self.references) > 5 else "")
        super().__init__(message or f"reference already in the ledger: {shown}")


class StatusConflict(Conflict):
    """A move that does not apply: forbidden by the table, or the row is not in a from-status."""


class UnknownReference(StatusConflict, NotFound):
    """No row has this reference (a ``StatusConflict`` too, so callers need only one except)."""


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
    reverses: str | None = None  # the reference this movement reverses (a reversal only)
    corrects: str | None = None  # the failed row this correction row pays instead
    programme: str | None = None  # its programme's code, when the query joined ``programmes``


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
    kind: AuditKind = AuditKind.NOTE


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
    state: BatchState
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


def batch_record(m: Any) -> BatchRecord:
    return BatchRecord(
        batch_id=m["batch_id"],
        file_name=m["file_name"],
        file_digest=m["file_digest"],
        operator=m["operator"],
        session_id=m["session_id"],
        state=BatchState(m["state"]),
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


def ledger_row(m: Any) -> LedgerRow:
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
        reverses=m.get("reverses"),
        corrects=m.get("corrects"),
        programme=m.get("programme_code"),
    )


def audit_event(m: Any) -> AuditEvent:
    return AuditEvent(
        id=m["id"],
        reference=m["reference"],
        at=m["at"],
        actor=m["actor"],
        from_status=Status(m["from_status"]) if m["from_status"] else None,
        to_status=Status(m["to_status"]),
        detail=m["detail"] or "",
        kind=AuditKind(m["event"]) if m["event"] else AuditKind.NOTE,
    )


class SchemaTooNew(RuntimeError):
    """The database was written by a newer Points Desk; opening it could damage it."""
