"""Reversing a batch: one reversal batch for every succeeded row, through a second person's
approval, each row capped like a single reversal (partial when the card was spent), the rows that
cannot be reversed reported with why; counted at the sandbox over loopback."""

from __future__ import annotations

import csv
import io
import threading
from decimal import Decimal

import pytest

from services import allocations, approvals, bulk, corrections
from services.approvals import SelfApproval
from services.config import load_settings
from services.corrections import ReversalInvalid, ReversalRefused
from services.models import Allocation, AllocationResult, Status
from services.store import Ledger
from tests.fault_support import debit
from tests.pg_support import PG_URL, postgres_schema
from tests.test_bulk import creates, desk, run  # noqa: F401  (the desk fixture)


def test_a_batch_reversal_with_cards_already_spent_reverses_what_it_can_and_reports_the_rest(
    desk,  # noqa: F811
):
    ledger, store = desk.ledger, desk.sandbox.store
    _, batch = run(desk, creates(4))  # rows 2..5: 100, 101, 102, 103 points on four new cards
    full, part, done, spent = ledger.rows(batch_id=batch.batch_id, order="row_number")
    with desk.client() as client:
        # The second card spent 61 of its 101 points; the fourth spent everything.
        for card, amount in ((part.card_id, "61"), (spent.card_id, "103")):
            outcome = allocations.submit(
                ledger, client, debit(card, amount), operator="asha", settings=desk.settings
            )
            assert outcome.status is Status.SUCCEEDED
        # The third was already reversed in full, one by one.
        single = corrections.request_reversal(
            ledger, done.reference, "102", maker="asha", reason="Wrong person"
        )
        request = approvals.for_subject(ledger, "reversal", single.reference)
        approvals.approve(ledger, request.id, approver="vikram", client=client)
    assert ledger.get(single.reference).status is Status.SUCCEEDED

    preview = corrections.preview_batch_reversal(ledger, batch.batch_id)
    assert [(line.reference, line.reversible) for line in preview.lines] == [
        (full.reference, Decimal("100")),
        (part.reference, Decimal("40")),
        (done.reference, Decimal("0")),
        (spent.reference, Decimal("0")),
    ]
    assert [line.reference for line in preview.short] == [
        part.reference,
        done.reference,
        spent.reference,
    ]
    assert "holds 40" in preview.short[0].why
    assert "already reversed in full" in preview.short[1].why
    assert "holds 0" in preview.short[2].why
    assert preview.total == Decimal("140")

    with pytest.raises(ReversalInvalid):
        corrections.request_batch_reversal(
            ledger, desk.settings, batch.batch_id, maker="asha", reason="  "
        )
    commits = store.commit_count()
    asked = corrections.request_batch_reversal(
        ledger, desk.settings, batch.batch_id, maker="asha", reason="Paid the wrong team"
    )
    reversal = asked.batch
    assert asked.awaiting_approval  # small as it is, a reversal waits for a second person
    assert reversal.row_count == 2 and reversal.debit_points == Decimal("140")
    with pytest.raises(bulk.AwaitingApproval):
        bulk.start_batch(ledger, desk.settings, reversal.batch_id, actor="asha")
    request = approvals.for_subject(ledger, "batch", reversal.batch_id)
    assert request is not None and request.pending
    with pytest.raises(SelfApproval):
        approvals.approve(ledger, request.id, approver="asha")
    assert store.commit_count() == commits  # nothing sent before the approval
    # Asking again while the first waits finds nothing left to reverse: nothing written.
    with pytest.raises(ReversalRefused, match="Nothing in batch"):
        corrections.request_batch_reversal(
            ledger, desk.settings, batch.batch_id, maker="asha", reason="Again"
        )

    approvals.approve(ledger, request.id, approver="vikram")
    bulk.start_batch(ledger, desk.settings, reversal.batch_id, actor="vikram", wake=desk.pick_up)
    assert desk.runner.wait(reversal.batch_id, timeout=60)
    assert store.commit_count() == commits + 2  # counted at the sandbox: two reversals sent
    rows = ledger.rows(batch_id=reversal.batch_id, order="row_number")
    assert [(r.reverses, r.amount, r.status) for r in rows] == [
        (full.reference, Decimal("100.00"), Status.SUCCEEDED),
        (part.reference, Decimal("40.00"), Status.SUCCEEDED),
    ]
    assert {r.approved_by for r in rows} == {"vikram"}
    for original in (full, part, spent, done):
        assert store.card_balance(original.card_id) == Decimal("0.00")
    assert [r.reference for r in ledger.reversed_by(part.reference)] == [rows[1].reference]

    report = list(
        csv.DictReader(io.StringIO(bulk.report_csv(ledger, reversal.batch_id).decode("utf-8-sig")))
    )
    assert [(line["row"], line["status"]) for line in report] == [
        ("2", "SUCCEEDED"),
        ("3", "SUCCEEDED"),
        ("4", "REJECTED"),
        ("5", "REJECTED"),
    ]
    assert f"reverses {part.reference}: 40.00 of its 101.00 points" in report[1]["message"]
    assert "already reversed in full" in report[2]["message"]
    assert "holds 0" in report[3]["message"]


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}", None
        return
    with postgres_schema() as schema:
        yield PG_URL, schema


def settled_batch(ledger: Ledger, amounts: list[str]) -> str:
    """A batch of credits EnKash confirmed, each on its own card holding just that credit."""
    batch_id = bulk.new_batch_id()
    rows = [
        (
            Allocation(
                reference=allocations.batch_reference(batch_id, n),
                kind="credit",
                amount=amount,
                card_id=f"EKC0RACE{n:02d}",
            ),
            n,
        )
        for n, amount in enumerate(amounts, start=2)
    ]
    ledger.create_batch(
        batch_id=batch_id,
        file_name="race.csv",
        file_digest=batch_id.ljust(64, "0"),
        operator="asha",
        allocations=rows,
        concurrency=1,
    )
    for allocation, _ in rows:
        ledger.claim(allocation.reference, actor="asha")
        ledger.transition(
            allocation.reference,
            Status.SUCCEEDED,
            actor="asha",
            from_statuses=(Status.SENDING,),
            result=AllocationResult(
                reference=allocation.reference,
                card_id=allocation.card_id,
                transaction_id="ECT" + allocation.reference[-8:],
                balance_after=allocation.amount,
            ),
        )
    return batch_id


def test_concurrent_batch_reversals_never_exceed_the_originals(place):
    """Six people (own connection pools) reverse the same batch at once: one reversal batch is
    recorded, the others find nothing left; no original is reversed beyond its amount."""
    url, schema = place
    setup = Ledger(url, schema=schema)
    settings = load_settings(secrets_file=None)
    try:
        batch_id = settled_batch(setup, ["100", "250", "75"])
        people = [Ledger(url, schema=schema) for _ in range(6)]
        start = threading.Barrier(len(people))
        outcomes: list[str] = []

        def reverse(ledger: Ledger, n: int) -> None:
            start.wait()
            try:
                corrections.request_batch_reversal(
                    ledger, settings, batch_id, maker=f"maker{n}", reason="race"
                )
                outcomes.append("recorded")
            except ReversalRefused:
                outcomes.append("refused")

        threads = [threading.Thread(target=reverse, args=(p, n)) for n, p in enumerate(people)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for person in people:
            person.dispose()
        assert sorted(outcomes) == ["recorded"] + ["refused"] * 5
        for original in setup.rows(batch_id=batch_id):
            reversed_total = sum(r.amount for r in setup.reversed_by(original.reference))
            assert reversed_total == original.amount
    finally:
        setup.dispose()
