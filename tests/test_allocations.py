"""submit, settle and resend against the sandbox over real loopback HTTP, on a real SQLite file.

A small fake client appears only where the sandbox cannot produce the case (a lookup that reports
a FAILED or an unreadable status) or where the point is that EnKash is not asked at all.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest

from services import allocations, reconcile
from services.allocations import (
    PROVED_ABSENT,
    REFERENCE_MISMATCH,
    NotProvenAbsent,
    ReferenceReused,
    proof_of_absence,
    resend,
    settle,
    submit,
)
from services.enkash import OutcomeUnknown
from services.errors import NotFound
from services.models import Status, TransactionRecord
from services.store import Ledger, StatusConflict
from tests.fault_support import (
    NO_GRACE,
    SETTINGS,
    client_for,
    create,
    credit,
    debit,
    reset_knobs,
)
from tests.pg_support import postgres_ledger


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger(request, tmp_path):
    """A real SQLite file, or a fresh schema on the PostgreSQL test server (skipped if absent)."""
    if request.param == "sqlite":
        the_ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield the_ledger
        the_ledger.dispose()
        return
    with postgres_ledger() as the_ledger:
        yield the_ledger


def commits_for(store, reference: str) -> int:
    return Counter(t["pgReferenceNumber"] for t in store.transactions())[reference]


def open_card(ledger, client, amount="1000") -> str:
    outcome = submit(ledger, client, create(amount), operator="asha")
    assert outcome.status is Status.SUCCEEDED
    return outcome.row.card_id


class FakeLookup:
    """Stands in for EnKash's lookup where the sandbox cannot answer this way."""

    def __init__(self, status: str | None = None) -> None:
        self.status = status
        self.asked: list[str] = []
        self.cards: list[str | None] = []  # the card each lookup was narrowed to

    def find_transaction(self, reference, *, card_id=None, **sent):
        self.asked.append(reference)
        self.cards.append(card_id)
        if self.status is None:
            return None
        return TransactionRecord(
            reference=reference,
            transaction_id="ECTRFAKE0001",
            card_id="EKCFAKE001",
            transaction_type="CR",
            amount=Decimal("10"),
            status=self.status,
        )

    def allocate(self, allocation):  # pragma: no cover - a resend must not get this far
        raise AssertionError("the fake lookup client must never send")


# --- submit ---------------------------------------------------------------------------------------


def test_submit_records_the_intent_then_the_confirmed_outcome(ledger, client, sandbox):
    allocation = create("1500.50")
    outcome = submit(ledger, client, allocation, operator="asha", session_id="s1")
    row = outcome.row
    assert row.status is Status.SUCCEEDED and not outcome.replayed
    assert row.card_id and row.transaction_id
    assert row.balance_after == Decimal("1500.50")
    assert sandbox.store.card_balance(row.card_id) == Decimal("1500.50")
    trail = ledger.audit_trail(allocation.reference)
    assert [(e.from_status, e.to_status) for e in trail] == [
        (None, Status.SENDING),
        (Status.SENDING, Status.SUCCEEDED),
    ]
    # The same form submitted again sends nothing and returns the recorded outcome.
    again = submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    assert again.replayed and again.status is Status.SUCCEEDED
    assert sandbox.store.allocate_requests() == 1


def test_another_transaction_under_a_used_reference_is_refused_not_replayed(
    ledger, client, sandbox
):
    first = create("1500")
    submit(ledger, client, first, operator="asha", session_id="s1")
    for changed in (
        first.model_copy(update={"amount": Decimal("5000")}),
        first.model_copy(update={"reason": "Another reason"}),
        first.model_copy(
            update={"employee": first.employee.model_copy(update={"email": "x@example.com"})}
        ),
    ):
        with pytest.raises(ReferenceReused, match="was already used, in another tab"):
            submit(ledger, client, changed, operator="asha", settings=SETTINGS)
    assert submit(ledger, client, first, operator="asha", settings=SETTINGS).replayed
    assert sandbox.store.allocate_requests() == 1 and len(ledger.rows()) == 1


def test_a_business_refusal_is_failed_and_moves_nothing(ledger, client, sandbox):
    card = open_card(ledger, client, "100")
    outcome = submit(ledger, client, debit(card, "500"), operator="asha", settings=SETTINGS)
    assert outcome.status is Status.FAILED
    assert outcome.row.enkash_message == "Insufficient balance in card"
    assert "refused" in outcome.headline
    assert sandbox.store.card_balance(card) == Decimal("100.00")
    assert sandbox.store.commit_count() == 1


# --- odd replies: a confirmed success is always recorded ----------------------------------------


@pytest.mark.parametrize("reported", [92415.445, "92415.445", "92,415.44", "abc"])
def test_a_success_with_a_balance_that_is_not_a_two_decimal_number_is_recorded_without_it(
    ledger, client, sandbox, reported
):
    sandbox.knobs.reply_payload = {"otbBalance": reported}
    allocation = create("1500.50")
    outcome = submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    row = outcome.row
    assert row.status is Status.SUCCEEDED
    assert row.balance_after is None
    assert row.card_id and row.transaction_id
    assert ledger.get(allocation.reference) == row
    assert ledger.audit_trail(allocation.reference)[-1].detail == (
        "EnKash confirmed; reference matched; "
        f"EnKash reported balance '{reported}', not stored as a number"
    )


def test_a_success_with_a_long_transaction_id_is_recorded_with_it_whole(ledger, client, sandbox):
    long_id = "ECTR" + "X" * 196
    sandbox.knobs.reply_payload = {"enkashCardTxnId": long_id}
    outcome = submit(ledger, client, create(), operator="asha")
    assert outcome.status is Status.SUCCEEDED
    assert outcome.row.transaction_id == long_id
    assert outcome.row.balance_after == Decimal("1000.00")


def test_a_success_whose_card_id_is_not_one_keeps_the_card_it_was_sent_for(ledger, client, sandbox):
    card = open_card(ledger, client)
    sandbox.knobs.reply_payload = {"enKashCardId": "EKC/" + "9" * 80}
    allocation = credit(card, "5")
    outcome = submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    assert outcome.status is Status.SUCCEEDED
    assert outcome.row.card_id == card
    assert "not a valid card id; not stored" in ledger.audit_trail(allocation.reference)[-1].detail


class FailingWrites:
    """The ledger refusing the first ``count`` outcome writes (a database error the sandbox cannot
    cause): what ``_send`` does when its write fails."""

    def __init__(self, ledger, monkeypatch, count: int):
        self.left = count
        self.real = ledger.transition
        monkeypatch.setattr(ledger, "transition", self)

    def __call__(self, reference, to_status, **kwargs):
        if self.left > 0:
            self.left -= 1
            raise RuntimeError("disk full")
        return self.real(reference, to_status, **kwargs)


def test_a_success_whose_full_reply_cannot_be_written_is_still_recorded_succeeded(
    ledger, client, sandbox, monkeypatch
):
    FailingWrites(ledger, monkeypatch, 1)
    allocation = create("300")
    outcome = submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    row = outcome.row
    assert row.status is Status.SUCCEEDED
    assert row.card_id == sandbox.store.transactions()[-1]["enKashCardId"]
    assert row.transaction_id == "" and row.balance_after is None
    detail = ledger.audit_trail(allocation.reference)[-1].detail
    assert detail == (
        "EnKash confirmed; reference matched; EnKash's reply could not be stored in full "
        "(RuntimeError): its transaction id and balance were not recorded"
    )
    assert outcome.headline.startswith("300.00 points credited to")


def test_a_success_that_cannot_be_written_at_all_becomes_unknown_never_sending(
    ledger, client, sandbox, monkeypatch
):
    FailingWrites(ledger, monkeypatch, 2)
    allocation = create("300")
    outcome = submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    assert outcome.status is Status.UNKNOWN
    assert ledger.audit_trail(allocation.reference)[-1].detail == (
        "EnKash confirmed the transaction but it could not be recorded (RuntimeError); "
        "outcome to be settled by lookup"
    )
    monkeypatch.undo()
    settlement = settle(ledger, client, allocation.reference, actor="asha")
    assert settlement.outcome == "succeeded"
    assert settlement.row.balance_after == Decimal("300.00")
    assert commits_for(sandbox.store, allocation.reference) == 1


def test_a_refusal_with_a_long_code_is_recorded_failed_with_the_code_whole(ledger, client, sandbox):
    card = open_card(ledger, client, "100")
    code = "INSUFFICIENT_BALANCE_" + "X" * 100
    sandbox.knobs.refusal_envelope = {"response_code": code, "response_message": "No. " * 200}
    outcome = submit(ledger, client, debit(card, "500"), operator="asha", settings=SETTINGS)
    assert outcome.status is Status.FAILED
    assert outcome.row.enkash_code == code
    assert outcome.row.enkash_message.startswith("No. No.")
    assert len(outcome.row.enkash_message) <= 300


def test_a_refusal_whose_code_cannot_be_stored_is_still_recorded_failed(ledger, client, sandbox):
    card = open_card(ledger, client, "100")
    # PostgreSQL refuses NUL in text; SQLite stores it. Either way the row is FAILED.
    sandbox.knobs.refusal_envelope = {"response_code": "E\x00" + "1" * 80}
    allocation = debit(card, "500")
    outcome = submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    assert outcome.status is Status.FAILED
    assert outcome.row.enkash_message == "Insufficient balance in card"
    if ledger.engine.dialect.name == "postgresql":
        assert outcome.row.enkash_code is None
        assert "its code is left out" in ledger.audit_trail(allocation.reference)[-1].detail
    assert sandbox.store.card_balance(card) == Decimal("100.00")


def test_a_refusal_that_cannot_be_written_becomes_unknown_never_sending(
    ledger, client, sandbox, monkeypatch
):
    card = open_card(ledger, client, "100")
    FailingWrites(ledger, monkeypatch, 2)
    allocation = debit(card, "500")
    outcome = submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    assert outcome.status is Status.UNKNOWN
    assert "could not be recorded (RuntimeError)" in (
        ledger.audit_trail(allocation.reference)[-1].detail
    )


# --- settle ---------------------------------------------------------------------------------------


def test_error_after_commit_is_unknown_then_settles_as_succeeded_with_balance(
    ledger, client, sandbox
):
    card = open_card(ledger, client, "1000")
    sandbox.knobs.error_after_commit_rate = 1
    allocation = credit(card, "250")
    outcome = submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    assert outcome.status is Status.UNKNOWN
    assert "Do not retry it by hand" in outcome.explanation
    reset_knobs(sandbox)

    settlement = settle(ledger, client, allocation.reference, actor="asha")
    assert settlement.outcome == "succeeded" and settlement.found
    row = settlement.row
    assert row.status is Status.SUCCEEDED
    committed = next(
        t for t in sandbox.store.transactions() if t["pgReferenceNumber"] == allocation.reference
    )
    assert row.transaction_id == committed["enkashCardTxnId"]
    assert row.card_id == card
    assert row.balance_after == Decimal("1250.00") == sandbox.store.card_balance(card)
    assert ledger.known_balance(card) == Decimal("1250.00")
    assert commits_for(sandbox.store, allocation.reference) == 1
    assert "settled by lookup" in ledger.audit_trail(allocation.reference)[-1].detail


def test_an_unknown_outcome_says_whether_enkash_answered_unreadably_or_not_at_all(
    ledger, client, sandbox
):
    card = open_card(ledger, client, "1000")
    sandbox.knobs.error_after_commit_rate = 1  # a 500: an answer, not a readable one
    garbled = submit(ledger, client, credit(card, "10"), operator="asha", settings=SETTINGS)
    assert garbled.headline == "Outcome unknown: EnKash did not give a readable answer"
    reset_knobs(sandbox)
    sandbox.knobs.drop_after_commit_rate = 1  # committed, then no answer within the timeout
    silent = submit(ledger, client, credit(card, "20"), operator="asha", settings=SETTINGS)
    assert silent.status is Status.UNKNOWN
    assert silent.headline == "Outcome unknown: EnKash did not answer in time"
    assert "Do not retry it by hand" in silent.explanation


def test_fail_before_commit_is_proved_absent_then_resent_with_the_same_reference(
    ledger, client, sandbox
):
    card = open_card(ledger, client, "1000")
    sandbox.knobs.fail_before_commit_rate = 1
    allocation = credit(card, "40")
    assert (
        submit(ledger, client, allocation, operator="asha", settings=SETTINGS).status
        is Status.UNKNOWN
    )
    assert commits_for(sandbox.store, allocation.reference) == 0
    reset_knobs(sandbox)

    settlement = settle(ledger, client, allocation.reference, actor="asha", absence_grace=NO_GRACE)
    assert settlement.outcome == "absent" and not settlement.found
    assert settlement.row.status is Status.UNKNOWN
    proof = proof_of_absence(ledger, allocation.reference)
    assert proof is not None and proof.id == settlement.proof_event_id
    assert proof.detail.startswith(PROVED_ABSENT)

    outcome = resend(ledger, client, allocation.reference, actor="ravi", absence_grace=NO_GRACE)
    assert outcome.status is Status.SUCCEEDED
    assert outcome.row.reference == allocation.reference
    assert outcome.row.attempts == 2
    assert outcome.row.balance_after == Decimal("1040.00")
    assert commits_for(sandbox.store, allocation.reference) == 1
    assert sandbox.store.card_balance(card) == Decimal("1040.00")
    assert proof_of_absence(ledger, allocation.reference) is None  # spent


def test_resend_is_refused_unless_the_latest_lookup_proved_absence(ledger, client, sandbox):
    card = open_card(ledger, client)
    sandbox.knobs.fail_before_commit_rate = 1
    allocation = credit(card, "10")
    submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    reset_knobs(sandbox)
    sent_before = sandbox.store.allocate_requests()

    # Never checked with EnKash.
    with pytest.raises(NotProvenAbsent, match="Check it with EnKash first"):
        resend(ledger, client, allocation.reference, actor="asha", absence_grace=NO_GRACE)

    # Checked too soon after the attempt: absent, but that proves nothing yet.
    early = settle(
        ledger, client, allocation.reference, actor="asha", absence_grace=timedelta(minutes=5)
    )
    assert early.outcome == "not_yet" and "Check again in" in early.message
    with pytest.raises(NotProvenAbsent):
        resend(ledger, client, allocation.reference, actor="asha", absence_grace=NO_GRACE)

    # Proved absent, but something happened to the row since: the proof no longer stands.
    settle(ledger, client, allocation.reference, actor="asha", absence_grace=NO_GRACE)
    assert proof_of_absence(ledger, allocation.reference) is not None
    ledger.note(allocation.reference, actor="meera", detail="called EnKash support")
    assert proof_of_absence(ledger, allocation.reference) is None
    with pytest.raises(NotProvenAbsent):
        resend(ledger, client, allocation.reference, actor="asha", absence_grace=NO_GRACE)

    assert sandbox.store.allocate_requests() == sent_before
    assert ledger.get(allocation.reference).status is Status.UNKNOWN


def test_two_racing_resends_send_once(ledger, sandbox, client):
    card = open_card(ledger, client)
    sandbox.knobs.fail_before_commit_rate = 1
    allocation = credit(card, "10")
    submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    reset_knobs(sandbox)
    settle(ledger, client, allocation.reference, actor="asha", absence_grace=NO_GRACE)
    sandbox.knobs.latency_ms = 50  # widen the window between lookup and claim
    sent_before = sandbox.store.allocate_requests()
    results: list[object] = []

    def one(name: str) -> None:
        with client_for(sandbox) as own:
            try:
                results.append(
                    resend(ledger, own, allocation.reference, actor=name, absence_grace=NO_GRACE)
                )
            except NotProvenAbsent as refusal:
                results.append(refusal)

    threads = [threading.Thread(target=one, args=(f"op{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sandbox.store.allocate_requests() - sent_before == 1
    assert commits_for(sandbox.store, allocation.reference) == 1
    assert ledger.get(allocation.reference).status is Status.SUCCEEDED
    assert sum(isinstance(r, NotProvenAbsent) for r in results) >= 1


def test_a_lookup_that_reports_failed_settles_as_failed(ledger, client, sandbox):
    card = open_card(ledger, client)
    sandbox.knobs.fail_before_commit_rate = 1
    allocation = credit(card, "10")
    submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    reset_knobs(sandbox)

    # The sandbox lists only committed transactions; a lookup that says FAILED is a fake.
    lookup = FakeLookup("FAILED")
    settlement = settle(ledger, lookup, allocation.reference, actor="asha")
    assert lookup.cards == [card]  # the lookup names the card, as ENKASH_API.md's body does
    assert settlement.outcome == "failed"
    assert settlement.row.status is Status.FAILED
    assert settlement.row.enkash_code == "FAILED"
    assert "no points moved" in settlement.message


def test_a_lookup_status_that_cannot_be_read_settles_nothing(ledger, client, sandbox):
    card = open_card(ledger, client)
    sandbox.knobs.fail_before_commit_rate = 1
    allocation = credit(card, "10")
    submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    reset_knobs(sandbox)

    settlement = settle(ledger, FakeLookup("PENDING_REVIEW"), allocation.reference, actor="asha")
    assert settlement.outcome == "unreadable"
    assert settlement.row.status is Status.UNKNOWN
    assert "PENDING_REVIEW" in ledger.audit_trail(allocation.reference)[-1].detail
    [item] = reconcile.unknown_transactions(ledger)
    assert item.state.startswith("EnKash reports status PENDING_REVIEW")
    assert not item.resend_allowed
    with pytest.raises(NotProvenAbsent):
        resend(ledger, client, allocation.reference, actor="asha")


def test_settle_on_a_row_that_is_not_unknown_is_a_no_op(ledger, client, sandbox):
    card = open_card(ledger, client)
    done = submit(ledger, client, credit(card, "10"), operator="asha").row
    refused = submit(ledger, client, debit(card, "9999"), operator="asha", settings=SETTINGS).row
    fake = FakeLookup("FAILED")
    for row in (done, refused):
        trail = ledger.audit_trail(row.reference)
        settlement = settle(ledger, fake, row.reference, actor="asha")
        assert settlement.outcome == "already"
        assert settlement.row == ledger.get(row.reference)
        assert ledger.audit_trail(row.reference) == trail
    assert fake.asked == []  # EnKash was not even asked
    with pytest.raises(NotFound):
        settle(ledger, fake, "PD-NO-SUCH-REF", actor="asha")


def test_a_failed_lookup_raises_and_records_nothing(ledger, client, sandbox):
    card = open_card(ledger, client)
    sandbox.knobs.error_after_commit_rate = 1
    allocation = credit(card, "10")
    submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    trail = ledger.audit_trail(allocation.reference)
    sandbox.knobs.error_after_commit_rate = 0
    sandbox.knobs.fail_before_commit_rate = 1  # every API call, lookups included, gets a 503
    with pytest.raises(OutcomeUnknown):
        settle(ledger, client, allocation.reference, actor="asha", absence_grace=NO_GRACE)
    assert ledger.audit_trail(allocation.reference) == trail
    assert ledger.get(allocation.reference).status is Status.UNKNOWN


def test_a_reference_mismatch_settles_by_its_own_reference_and_is_never_resent(
    ledger, client, sandbox
):
    card = open_card(ledger, client)
    sandbox.knobs.wrong_reference_rate = 1
    allocation = credit(card, "10")
    outcome = submit(ledger, client, allocation, operator="asha", settings=SETTINGS)
    assert outcome.status is Status.UNKNOWN
    assert outcome.row.enkash_code == REFERENCE_MISMATCH
    reset_knobs(sandbox)
    with pytest.raises(StatusConflict):
        resend(ledger, client, allocation.reference, actor="asha")
    settlement = allocations.settle(ledger, client, allocation.reference, actor="asha")
    assert settlement.outcome == "succeeded"
    assert settlement.row.enkash_code == REFERENCE_MISMATCH  # still flagged for investigation
    assert commits_for(sandbox.store, allocation.reference) == 1
