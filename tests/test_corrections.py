"""Reversals: the opposite movement for the same card, linked both ways, always through a second
person's approval, capped so that reversals never add up to more than the original (under
concurrent requests too, on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from services import allocations, approvals, corrections
from services.allocations import new_reference
from services.approvals import SelfApproval
from services.config import load_settings
from services.corrections import ReversalInvalid, ReversalRefused
from services.models import Allocation, AllocationResult, Kind, Status
from services.store import Ledger
from tests.fault_support import client_for, create
from tests.pg_support import PG_URL, postgres_schema

CARD = "EKC0TEST01"


def settled(ledger: Ledger, kind: str, amount: str, balance: str | None) -> str:
    """A movement EnKash confirmed (written straight to the ledger, no EnKash needed)."""
    allocation = Allocation(reference=new_reference(), kind=kind, amount=amount, card_id=CARD)
    ledger.record_intent(allocation, operator="asha")
    ledger.transition(
        allocation.reference,
        Status.SUCCEEDED,
        actor="asha",
        from_statuses=(Status.SENDING,),
        result=AllocationResult(
            reference=allocation.reference,
            card_id=CARD,
            transaction_id="ECT" + allocation.reference[-8:],
            balance_after=Decimal(balance) if balance is not None else None,
        ),
    )
    return allocation.reference


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}", None
        return
    with postgres_schema() as schema:
        yield PG_URL, schema


def test_a_reversal_waits_for_a_second_person_then_debits_the_same_card_linked_both_ways(
    sandbox, ledger
):
    original = create("1000")
    settings = load_settings(secrets_file=None)
    with client_for(sandbox) as client:
        allocations.submit(ledger, client, original, operator="asha", settings=settings)
        row = corrections.request_reversal(
            ledger, original.reference, "400", maker="asha", reason="Paid the wrong person"
        )
        assert row.status is Status.QUEUED and row.kind is Kind.DEBIT
        assert (
            row.reverses == original.reference
            and row.card_id == ledger.get(original.reference).card_id
        )
        assert approvals.status_word(row) == "Awaiting approval"
        request = approvals.for_subject(ledger, "reversal", row.reference)
        assert request is not None and request.pending and request.amount == Decimal("400")
        with pytest.raises(SelfApproval):
            approvals.approve(ledger, request.id, approver="asha", client=client)
        assert ledger.get(row.reference).status is Status.QUEUED  # nothing sent
        decision = approvals.approve(ledger, request.id, approver="vikram", client=client)
    done = decision.outcome.row
    assert done.status is Status.SUCCEEDED and done.approved_by == "vikram"
    assert done.balance_after == Decimal("600.00")
    assert [r.reference for r in ledger.reversed_by(original.reference)] == [row.reference]
    # EnKash has it: the card holds 600 now.
    with client_for(sandbox) as client:
        [holder] = client.search_users(card_id=done.card_id)
    assert holder.balance == Decimal("600")


def test_partial_reversals_add_up_and_never_exceed_the_original(ledger):
    reference = settled(ledger, "credit", "1000", "5000")
    first = corrections.request_reversal(ledger, reference, "600", maker="asha", reason="a")
    with pytest.raises(ReversalRefused, match="At most 400"):
        corrections.request_reversal(ledger, reference, "500", maker="asha", reason="b")
    second = corrections.request_reversal(ledger, reference, "400", maker="asha", reason="c")
    assert corrections.room(ledger, reference).cap == 0
    with pytest.raises(ReversalRefused, match="already reversed in full"):
        corrections.request_reversal(ledger, reference, "1", maker="asha", reason="d")
    # A rejected reversal gives its room back.
    request = approvals.for_subject(ledger, "reversal", second.reference)
    approvals.reject(ledger, request.id, approver="vikram", comment="not needed")
    assert corrections.room(ledger, reference).cap == Decimal("400")
    assert [r.reference for r in ledger.reversed_by(reference)] == [
        first.reference,
        second.reference,
    ]


def test_a_credit_reversal_is_capped_at_what_the_card_holds(ledger):
    reference = settled(ledger, "credit", "1000", "1000")
    settled(ledger, "debit", "700", "300")  # the employee spent 700 since
    room = corrections.room(ledger, reference)
    assert room.left == Decimal("1000") and room.cap == Decimal("300")
    assert "holds 300" in room.why
    with pytest.raises(ReversalRefused, match="At most 300"):
        corrections.request_reversal(ledger, reference, "301", maker="asha", reason="x")
    corrections.request_reversal(ledger, reference, "300", maker="asha", reason="x")


def test_a_debit_is_reversed_by_a_credit_and_a_reversal_cannot_be_reversed(ledger):
    debit = settled(ledger, "debit", "250", "0")
    row = corrections.request_reversal(ledger, debit, "250", maker="asha", reason="wrong card")
    assert row.kind is Kind.CREDIT and approvals.status_word(row) == "Awaiting approval"
    with pytest.raises(ReversalRefused):
        corrections.request_reversal(ledger, row.reference, "1", maker="asha", reason="x")


def test_a_reversal_needs_a_reason_and_a_readable_amount(ledger):
    reference = settled(ledger, "credit", "100", "100")
    with pytest.raises(ReversalInvalid, match="Say why"):
        corrections.request_reversal(ledger, reference, "10", maker="asha", reason="  ")
    with pytest.raises(ReversalInvalid):
        corrections.request_reversal(ledger, reference, "-5", maker="asha", reason="x")
    assert ledger.reversed_by(reference) == []


def test_concurrent_partial_reversals_never_exceed_the_original(place):
    """Eight people (each with their own connection pool, as separate processes would be)
    reverse 300 of the same 1,000-point credit at once: three get through, five are refused."""
    url, schema = place
    setup = Ledger(url, schema=schema)
    try:
        reference = settled(setup, "credit", "1000", "1000")
        people = [Ledger(url, schema=schema) for _ in range(8)]
        start = threading.Barrier(len(people))
        outcomes: list[str] = []

        def reverse(ledger: Ledger, n: int) -> None:
            start.wait()
            try:
                corrections.request_reversal(
                    ledger, reference, "300", maker=f"maker{n}", reason="race"
                )
                outcomes.append("recorded")
            except ReversalRefused:
                outcomes.append("refused")

        threads = [
            threading.Thread(target=reverse, args=(person, n)) for n, person in enumerate(people)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for person in people:
            person.dispose()
        reversed_total = sum(r.amount for r in setup.reversed_by(reference))
        assert sorted(outcomes) == ["recorded"] * 3 + ["refused"] * 5
        assert reversed_total == Decimal("900") <= Decimal("1000")
    finally:
        setup.dispose()
