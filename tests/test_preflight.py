"""Pre-flight (services/preflight.py): duration at the measured rate, pool and budgets after,
rows that need approval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import time_machine

from services import preflight
from services.config import load_settings
from services.models import Allocation, AllocationResult, BatchState, Kind, Status
from services.preflight import PlannedRow

D = Decimal
T0 = datetime(2026, 1, 20, 6, 30, tzinfo=UTC)


def settings(tmp_path):
    return load_settings(
        None,
        points_desk_data_dir=tmp_path,
        points_desk_approval_debit_threshold=D("500"),
        points_desk_approval_batch_threshold=D("100000"),
    )


ROWS = [
    PlannedRow(2, Kind.CREDIT, D("1000")),
    PlannedRow(3, Kind.CREATE, D("250.50")),
    PlannedRow(4, Kind.DEBIT, D("600")),  # above the 500 debit limit
    PlannedRow(5, Kind.DEBIT, D("100"), "Q1"),
]


def test_with_no_batch_measured_the_duration_is_an_estimate_and_says_so(ledger, tmp_path):
    found = preflight.preflight(
        ledger, settings(tmp_path), ROWS * 16, pool_balance=D("5000"), concurrency=8, now=T0
    )
    # 8 at a time at the assumed 250 ms a call: 32 rows a second; 64 rows take 2 s.
    assert found.rate.rows_per_second == 32.0
    assert not found.rate.measured and found.rate.note.startswith("estimate")
    assert found.expected_seconds == 2.0
    assert preflight.duration_words(found.expected_seconds) == "about 2 s"
    capped = preflight.send_rate(ledger, concurrency=8, rate_limit=5, now=T0)
    assert capped.rows_per_second == 5 and "capped" in capped.note


def test_pool_and_budgets_after_and_the_rows_that_need_approval(ledger, tmp_path):
    ledger.create_programme(code="Q1", name="Q1 bonus", budget=D("5000"), actor="asha")
    found = preflight.preflight(
        ledger, settings(tmp_path), ROWS, pool_balance=D("5000"), concurrency=4, now=T0
    )
    assert (found.credit_points, found.debit_points) == (D("1250.50"), D("700"))
    assert found.pool_after == D("5000") - D("1250.50") + D("700")
    by_code = {p.code: p for p in found.programmes}
    assert by_code["GENERAL"].remaining_after is None
    assert (by_code["Q1"].remaining, by_code["Q1"].debits) == (D("5000"), D("100"))
    # The 600 debit is above the limit: the whole batch waits, so every row does.
    assert found.approval_rows == [4]
    assert found.batch_reasons and "row 4" in found.batch_reasons[0]
    assert found.rows_needing_approval == 4
    small = preflight.preflight(
        ledger, settings(tmp_path), ROWS[:2], pool_balance=None, concurrency=4, now=T0
    )
    assert small.rows_needing_approval == 0 and small.pool_after is None


def test_the_rate_is_measured_from_recent_finished_batches(ledger, tmp_path):
    allocations = [
        (Allocation(kind=Kind.CREDIT, reference=f"PF{n:04d}", amount=D("1"), card_id="EKC1"), n)
        for n in range(1, 22)
    ]
    with time_machine.travel(T0 - timedelta(hours=1), tick=False):
        ledger.create_batch(
            batch_id="B-PF",
            file_name="f.csv",
            file_digest="d" * 64,
            operator="asha",
            allocations=allocations,
            concurrency=4,
            state=BatchState.RUNNING,
        )
    # 21 outcomes half a second apart: 20 intervals over 10 s = 2 rows a second at 4 at a time.
    for i, (allocation, _) in enumerate(allocations):
        at = T0 - timedelta(minutes=30) + timedelta(seconds=i / 2)
        with time_machine.travel(at, tick=False):
            ledger.claim(allocation.reference, actor="w")
            ledger.transition(
                allocation.reference,
                Status.SUCCEEDED,
                actor="w",
                from_statuses=(Status.SENDING,),
                result=AllocationResult(
                    reference=allocation.reference,
                    card_id="EKC1",
                    transaction_id=f"T{i}",
                    balance_after=D(i),
                ),
            )
    ledger.update_batch(
        "B-PF", state=BatchState.FINISHED.value, finished_at=T0 - timedelta(minutes=29)
    )
    rate = preflight.send_rate(ledger, concurrency=8, rate_limit=None, now=T0)
    assert rate.measured and rate.note.startswith("measured: 1 recent batch")
    assert rate.rows_per_second == 4.0  # 0.5 a second per slot, 8 at a time
