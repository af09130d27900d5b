"""Money rules that live in services, so no caller can skip them (sandbox over loopback HTTP).

* A debit above the approval threshold is never sent without a second person's approval, by the
  form's use case or by a script calling the services directly.
* A batch holding any debit above the debit threshold waits for approval, whatever its total.
* A file whose rows repeat rows of a recent batch (however its bytes differ) is flagged row by
  row and refused until someone acknowledges paying those rows again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services import allocations, approvals, bulk, movements
from services.allocations import ApprovalRequired, new_reference
from services.config import load_settings
from services.desk import Desk
from services.models import Allocation, Status

HEADER = "kind,first_name,title,gender,email,mobile,card_id,amount,reason"
EMPLOYEE = {
    "email": "ravi@example.com",
    "mobile": "9600098867",
    "title": "Mr",
    "first_name": "Ravi",
    "gender": "M",
}


@pytest.fixture
def desk(tmp_path: Path):
    the_desk = Desk(
        load_settings(
            secrets_file=None,
            points_desk_data_dir=tmp_path,
            points_desk_settle_interval_seconds=0,
        )
    )
    the_desk.runner.absence_grace = timedelta(seconds=0.3)
    yield the_desk
    the_desk.close()


def open_card(desk: Desk, amount: str = "150000") -> str:
    allocation = Allocation.model_validate(
        {"reference": new_reference(), "kind": "create", "amount": amount, "employee": EMPLOYEE}
    )
    with desk.client() as client:
        outcome = movements.request(desk.ledger, client, allocation, desk.settings, operator="asha")
    assert outcome.status is Status.SUCCEEDED
    return outcome.row.card_id


def debit(card_id: str, amount: str) -> Allocation:
    return Allocation.model_validate(
        {
            "reference": new_reference(),
            "kind": "debit",
            "amount": amount,
            "card_id": card_id,
            "reason": "Reversal of duplicate award",
        }
    )


def file_of(*lines: str) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def run_batch(desk: Desk, record) -> None:
    bulk.start_batch(desk.ledger, desk.settings, record.batch_id, actor="asha", wake=desk.pick_up)
    assert desk.runner.wait(record.batch_id, timeout=60)


# --- one debit -----------------------------------------------------------------------------------


def test_a_script_calling_services_directly_cannot_send_a_debit_above_the_threshold(desk):
    card = open_card(desk)
    store = desk.sandbox.store
    sent_before = store.allocate_requests()
    large = debit(card, "99999")
    with desk.client() as client:
        # With the configured settings, and without any: refused before anything is written.
        with pytest.raises(ApprovalRequired, match="99,999 points, above the 10,000 debit limit"):
            allocations.submit(
                desk.ledger, client, large, operator="script", settings=desk.settings
            )
        with pytest.raises(ApprovalRequired):
            allocations.submit(desk.ledger, client, large, operator="script")
    assert desk.ledger.get(large.reference) is None
    assert store.allocate_requests() == sent_before
    assert store.card_balance(card) == Decimal("150000.00")


def test_a_debit_within_the_threshold_is_sent_and_a_larger_one_waits(desk):
    card = open_card(desk)
    store = desk.sandbox.store
    with desk.client() as client:
        small = movements.request(
            desk.ledger, client, debit(card, "10000"), desk.settings, operator="asha"
        )
        held = movements.request(
            desk.ledger, client, debit(card, "10000.01"), desk.settings, operator="asha"
        )
    assert small.status is Status.SUCCEEDED
    assert held.status is Status.QUEUED
    assert held.headline == "Waiting for approval by a second person"
    assert store.card_balance(card) == Decimal("140000.00")
    # Only the approved path sends it, once, with the reference the maker's request carried.
    request = approvals.for_subject(desk.ledger, "debit", held.row.reference)
    with desk.client() as client:
        decision = approvals.approve(desk.ledger, request.id, approver="vikram", client=client)
    assert decision.outcome.status is Status.SUCCEEDED
    assert decision.outcome.row.approved_by == "vikram"
    assert store.card_balance(card) == Decimal("129999.99")


# --- a batch holding a large debit ---------------------------------------------------------------


def test_a_one_row_file_debiting_99999_points_waits_for_approval(desk):
    card = open_card(desk)
    store = desk.sandbox.store
    preview = bulk.preview_upload(
        desk.ledger,
        desk.client,
        desk.settings,
        "one.csv",
        file_of(f"debit,,,,,,{card},99999,Recovery"),
    )
    assert len(preview.valid) == 1
    record = bulk.queue_batch(desk.ledger, preview, operator="asha")
    assert bulk.batch_total(record) < desk.settings.points_desk_approval_batch_threshold

    assert (
        bulk.start_or_ask_approval(
            desk.ledger, desk.settings, record.batch_id, actor="asha", wake=desk.pick_up
        )
        is True
    )
    request = approvals.for_subject(desk.ledger, "batch", record.batch_id)
    assert request.pending
    assert request.reasons == [
        "holds a debit of 99,999 points (row 2), above the 10,000 debit limit"
    ]
    with pytest.raises(bulk.AwaitingApproval, match="holds a debit of 99,999 points"):
        bulk.start_batch(
            desk.ledger, desk.settings, record.batch_id, actor="asha", wake=desk.pick_up
        )
    assert store.card_balance(card) == Decimal("150000.00")
    assert desk.ledger.get_batch(record.batch_id).state == "queued"

    approvals.approve(desk.ledger, request.id, approver="vikram")
    run_batch(desk, record)
    assert store.card_balance(card) == Decimal("50001.00")


def test_a_batch_of_small_debits_under_both_limits_starts_at_once(desk):
    card = open_card(desk)
    preview = bulk.preview_upload(
        desk.ledger,
        desk.client,
        desk.settings,
        "small.csv",
        file_of(f"debit,,,,,,{card},10000,A", f"debit,,,,,,{card},500,B"),
    )
    record = bulk.queue_batch(desk.ledger, preview, operator="asha")
    assert bulk.approval_reasons(desk.ledger, desk.settings, record) == []
    assert (
        bulk.start_or_ask_approval(
            desk.ledger, desk.settings, record.batch_id, actor="asha", wake=desk.pick_up
        )
        is False
    )
    assert desk.runner.wait(record.batch_id, timeout=60)
    assert desk.sandbox.store.card_balance(card) == Decimal("139500.00")


def test_a_batch_says_each_reason_it_waits():
    settings = load_settings(secrets_file=None)
    assert approvals.batch_approval_reasons(Decimal("150000"), (7, Decimal("20000")), settings) == [
        "moves 1,50,000 points, above the 1,00,000 batch limit",
        "holds a debit of 20,000 points (row 7), above the 10,000 debit limit",
    ]
    assert (
        approvals.batch_approval_reasons(Decimal("100000"), (1, Decimal("10000")), settings) == []
    )


# --- a file repeating a recent batch ------------------------------------------------------------


def _three_rows(card: str) -> list[str]:
    return [
        f"credit,,,,,,{card},250,October bonus",
        "create,Meera,Ms,F,meera@example.com,9800000001,,500,Welcome",
        f"credit,,,,,,{card},75,Referral",
    ]


def test_a_repeat_file_with_one_changed_space_is_flagged_row_by_row_and_needs_acknowledgement(
    desk,
):
    card = open_card(desk)
    store = desk.sandbox.store
    first = bulk.queue_batch(
        desk.ledger,
        bulk.preview_upload(
            desk.ledger, desk.client, desk.settings, "october.csv", file_of(*_three_rows(card))
        ),
        operator="asha",
    )
    run_batch(desk, first)
    paid = store.commit_count()

    # The same rows, one space added (and letter case changed): a different file digest.
    again = _three_rows(card)
    again[0] = f"credit,,,,,, {card.lower()},250,October bonus"
    again.append(f"credit,,,,,,{card},80,Referral")  # a new amount: not a repeat
    preview = bulk.preview_upload(
        desk.ledger, desk.client, desk.settings, "october (1).csv", file_of(*again)
    )
    assert preview.file.digest != first.file_digest
    # Meera's create is refused outright now that she has a card (never sent, never a repeat).
    assert [r.number for r in preview.rejected] == [3]
    assert "already has a card" in preview.rejected[0].errors["row"]

    repeats = bulk.find_repeats(desk.ledger, preview)
    assert {n: [(e.batch_id, e.row_number) for e in rows] for n, rows in repeats.rows.items()} == {
        2: [(first.batch_id, 2)],
        4: [(first.batch_id, 4)],
    }
    assert repeats.summary() == f"2 of 3 rows repeat batch {first.batch_id} (rows 2, 4)"

    batches_before = len(desk.ledger.list_batches())
    with pytest.raises(bulk.RepeatedRows, match="2 of 3 rows repeat batch"):
        bulk.queue_batch(desk.ledger, preview, operator="ravi")
    assert len(desk.ledger.list_batches()) == batches_before  # nothing queued

    second = bulk.queue_batch(desk.ledger, preview, operator="ravi", acknowledged=repeats)
    assert "ravi acknowledged: 2 of 3 rows repeat batch" in second.note
    rows = {row.row_number: row for row in desk.ledger.rows(batch_id=second.batch_id)}
    trail = desk.ledger.audit_trail(rows[2].reference)
    assert (
        f"repeats batch {first.batch_id} row 2; paid again as ravi acknowledged" in trail[0].detail
    )
    assert "acknowledged" not in desk.ledger.audit_trail(rows[5].reference)[0].detail
    run_batch(desk, second)
    assert store.commit_count() == paid + 3


def test_an_acknowledgement_covers_only_the_repeats_it_saw(desk):
    card = open_card(desk)
    lines = [f"credit,,,,,,{card},250,October", f"credit,,,,,,{card},75,Referral"]
    first = bulk.queue_batch(
        desk.ledger,
        bulk.preview_upload(desk.ledger, desk.client, desk.settings, "a.csv", file_of(lines[0])),
        operator="asha",
    )
    preview = bulk.preview_upload(desk.ledger, desk.client, desk.settings, "b.csv", file_of(*lines))
    seen = bulk.find_repeats(desk.ledger, preview)
    assert set(seen.rows) == {2}
    # Meanwhile someone queues row 2 as well: the acknowledgement given for row 1 is not enough.
    bulk.queue_batch(
        desk.ledger,
        bulk.preview_upload(desk.ledger, desk.client, desk.settings, "c.csv", file_of(lines[1])),
        operator="asha",
    )
    with pytest.raises(bulk.RepeatedRows) as refused:
        bulk.queue_batch(desk.ledger, preview, operator="ravi", acknowledged=seen)
    assert set(refused.value.repeats.rows) == {2, 3}
    assert first.batch_id in {e.batch_id for e in refused.value.repeats.rows[2]}


def test_rows_that_paid_nothing_or_are_older_than_30_days_are_not_repeats(desk):
    card = open_card(desk)
    line = f"credit,,,,,,{card},250,October"
    cancelled = bulk.queue_batch(
        desk.ledger,
        bulk.preview_upload(desk.ledger, desk.client, desk.settings, "a.csv", file_of(line)),
        operator="asha",
    )
    bulk.cancel_batch(desk.ledger, cancelled.batch_id, actor="asha", stop=desk.runner.stop)
    preview = bulk.preview_upload(
        desk.ledger,
        desk.client,
        desk.settings,
        "b.csv",
        file_of(line, f"credit,,,,,,{card},99,Other"),
    )
    assert not bulk.find_repeats(desk.ledger, preview)  # the cancelled row paid nothing

    old = bulk.queue_batch(
        desk.ledger,
        bulk.preview_upload(desk.ledger, desk.client, desk.settings, "c.csv", file_of(line + " ")),
        operator="asha",
    )
    assert set(bulk.find_repeats(desk.ledger, preview).rows) == {2}
    later = datetime.now(UTC) + timedelta(days=31)
    assert not bulk.find_repeats(desk.ledger, preview, now=later)
    assert old.batch_id
