"""The store's own rules: every write goes through its write helper, and every audit event says
what it records (``AuditKind``) so no code reads meaning out of the event's text."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from services import allocations
from services.models import Allocation, AuditKind, Kind, Status
from services.store import Ledger

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
