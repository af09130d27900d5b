"""The store's own rules: every write goes through its write helper, every audit event says
what it records (``AuditKind``) so no code reads meaning out of the event's text, and only a write
PostgreSQL rolled back on its own (a deadlock, a serialization failure) is written again."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from services import allocations
from services.models import Allocation, AuditKind, Kind, Status
from services.store import Ledger
from services.store.transactions import WRITE_RETRIES, write_again_if_rolled_back

ROOT = Path(__file__).resolve().parent.parent

#: A write to the database: SQLAlchemy Core's insert/update/delete or a transaction opened on the
#: engine itself (which on SQLite skips the write lock and BEGIN IMMEDIATE).
_WRITE = re.compile(r"\.(insert|update|delete)\(\)|engine\.begin\(\)")


def test_no_code_outside_the_store_writes_to_the_database_around_its_write_helper():
    offenders = []
    for folder in ("services", "ui", "pages"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(("services/store/", "services/sandbox/")):
                continue  # the store itself; the sandbox is a separate program with its own file
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if _WRITE.search(line):
                    offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []


def credit(reference: str) -> Allocation:
    return Allocation(
        kind=Kind.CREDIT, reference=reference, amount=Decimal("10"), card_id="EKC0000001"
    )


def test_each_writer_records_the_kind_of_its_audit_event(ledger: Ledger):
    ledger.record_intent(credit("KIND0001"), operator="asha", status=Status.QUEUED)
    ledger.note("KIND0001", actor="asha", detail="looked at", kind=AuditKind.APPROVAL_REQUESTED)
    ledger.set_approved_by("priya", reference="KIND0001")
    assert ledger.claim("KIND0001", actor="w1")
    ledger.transition("KIND0001", Status.UNKNOWN, actor="w1", from_statuses=(Status.SENDING,))
    latest = ledger.latest_events(["KIND0001"])["KIND0001"]
    ledger.note_if_latest(
        "KIND0001",
        actor="settle",
        detail="no such reference",
        expected_event_id=latest.id,
        kind=AuditKind.LOOKUP_ABSENT,
    )
    ledger.record_intent(credit("KIND0002"), operator="asha", status=Status.QUEUED)
    ledger.transition("KIND0002", Status.FAILED, actor="asha", from_statuses=(Status.QUEUED,))
    ledger.record_intent(credit("KIND0003"), operator="asha")
    assert ledger.recover_interrupted(actor="startup") == 1

    assert [e.kind for e in ledger.audit_trail("KIND0001")] == [
        AuditKind.INTENT,
        AuditKind.APPROVAL_REQUESTED,
        AuditKind.APPROVED,
        AuditKind.CLAIM,
        AuditKind.OUTCOME,
        AuditKind.LOOKUP_ABSENT,
    ]
    assert [e.kind for e in ledger.audit_trail("KIND0002")] == [
        AuditKind.INTENT,
        AuditKind.CANCELLED,
    ]
    assert [e.kind for e in ledger.audit_trail("KIND0003")] == [
        AuditKind.INTENT,
        AuditKind.RECOVERED,
    ]


def test_proof_of_absence_is_read_from_the_kind_not_from_the_words(ledger: Ledger):
    ledger.record_intent(credit("WORDS001"), operator="asha")
    ledger.transition("WORDS001", Status.UNKNOWN, actor="w1", from_statuses=(Status.SENDING,))
    # A note that merely quotes the words of a proof proves nothing.
    ledger.note("WORDS001", actor="asha", detail=f"{allocations.PROVED_ABSENT}? asked EnKash")
    assert allocations.proof_of_absence(ledger, "WORDS001") is None
    ledger.note("WORDS001", actor="settle", detail="no such ref", kind=AuditKind.LOOKUP_ABSENT)
    assert allocations.proof_of_absence(ledger, "WORDS001") is not None


class _ServerError(Exception):
    """A driver error carrying a PostgreSQL SQLSTATE, as psycopg's do."""

    def __init__(self, sqlstate: str):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _failing(sqlstates: list[str]):
    """A write that fails with these SQLSTATEs in turn, then succeeds; counts its calls."""
    calls = []

    def write() -> str:
        calls.append(1)
        if len(calls) <= len(sqlstates):
            raise OperationalError("UPDATE ...", {}, _ServerError(sqlstates[len(calls) - 1]))
        return "written"

    return write, calls


def test_only_a_write_the_server_rolled_back_on_its_own_is_written_again(caplog):
    # A deadlock, then a serialization failure: both rolled everything back, so written again.
    write, calls = _failing(["40P01", "40001"])
    assert write_again_if_rolled_back("the move", write) == "written"
    assert len(calls) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "the move was rolled back by a deadlock; writing it again",
        "the move was rolled back by a serialization failure; writing it again",
    ]
    # Anything else (a lost connection: it may have committed) is raised at once.
    write, calls = _failing(["08006"])
    with pytest.raises(OperationalError):
        write_again_if_rolled_back("the move", write)
    assert len(calls) == 1
    # And a deadlock that keeps coming back is raised in the end.
    write, calls = _failing(["40P01"] * (WRITE_RETRIES + 1))
    with pytest.raises(OperationalError):
        write_again_if_rolled_back("the move", write)
    assert len(calls) == WRITE_RETRIES + 1
