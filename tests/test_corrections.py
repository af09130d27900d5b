"""Reversals: the opposite movement for the same card, linked both ways, always through a second
person's approval, capped so that reversals never add up to more than the original (under
concurrent requests too, on SQLite and PostgreSQL), and counted in the original's programme:
reversing a credit gives the programme its points back, reversing a debit credits the card from
the programme again, within its budget, and not from a closed one. (Races on the card and on the
lock order: tests/test_ledger_races.py.)"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services import allocations, approvals, corrections
from services.allocations import new_reference
from services.approvals import SelfApproval
from services.config import load_settings
from services.corrections import ReversalInvalid, ReversalRefused
from services.models import Allocation, AllocationResult, Kind, Status
from services.store import (
    GENERAL_CODE,
    BudgetExceeded,
    DuplicateReference,
    Ledger,
    ProgrammeClosed,
)
from tests.fault_support import client_for, create, credit, debit
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


# --- reversals and programmes --------------------------------------------------------------------


@pytest.fixture
def ledger_at(place) -> Iterator[Ledger]:
    """A ledger on SQLite or PostgreSQL whose summaries and programme counters must agree with
    its rows afterwards."""
    url, schema = place
    opened = Ledger(url, schema=schema)
    try:
        yield opened
        assert opened.summary_differences() == []
        assert opened.stored_counts() == opened.recount()
    finally:
        opened.dispose()


SETTINGS = load_settings(secrets_file=None)


def _promo(ledger: Ledger, budget: str, code: str = "PROMO") -> None:
    ledger.create_programme(code=code, name="Promo", budget=Decimal(budget), actor="boss")


def _request(ledger: Ledger, client, allocation: Allocation, programme: str | None = "PROMO"):
    """A single movement through ``movements.request``, as the Credit and Debit forms send it."""
    from services import movements

    return movements.request(
        ledger,
        client,
        allocation.model_copy(update={"programme": programme}),
        SETTINGS,
        operator="asha",
    ).row


def _approve(ledger: Ledger, client, reversal_reference: str) -> Status:
    request = approvals.for_subject(ledger, "reversal", reversal_reference)
    assert request is not None
    approvals.approve(ledger, request.id, approver="vikram", client=client)
    return ledger.get(reversal_reference).status


def test_reversing_a_debit_credits_the_card_from_its_programme_within_what_it_has_left(
    ledger_at: Ledger, sandbox
):
    ledger = ledger_at
    _promo(ledger, "10000")
    with client_for(sandbox) as client:
        card = _request(ledger, client, create("10000")).card_id  # Promo: 0 left
        taken = _request(ledger, client, debit(card, "5000"))  # back to Promo: 5,000 left
        _request(ledger, client, credit(card, "3000"))  # 2,000 left
        assert ledger.programme("PROMO").remaining == Decimal("2000")

        room = corrections.room(ledger, taken.reference)
        assert (room.left, room.cap) == (Decimal("5000"), Decimal("2000"))
        assert "credits the card from Promo again" in room.why
        assert "2,000 points of its budget left" in room.why
        with pytest.raises(ReversalRefused, match=r"At most 2000\.00 points"):
            corrections.request_reversal(
                ledger, taken.reference, "5000", maker="asha", reason="debited by mistake"
            )
        assert ledger.reversed_by(taken.reference) == []

        # Asked for, it holds its points in Promo until a second person decides.
        first = corrections.request_reversal(
            ledger, taken.reference, "2000", maker="asha", reason="debited by mistake"
        )
        promo = ledger.programme("PROMO")
        assert (promo.reserved, promo.remaining) == (Decimal("2000"), Decimal("0"))
        with pytest.raises(BudgetExceeded):
            _request(ledger, client, credit(card, "1"))
        # Rejected, it gives them back.
        rejected = approvals.for_subject(ledger, "reversal", first.reference)
        approvals.reject(ledger, rejected.id, approver="vikram", comment="not this one")
        assert ledger.programme("PROMO").remaining == Decimal("2000")

        again = corrections.request_reversal(
            ledger, taken.reference, "2000", maker="asha", reason="debited by mistake"
        )
        assert _approve(ledger, client, again.reference) is Status.SUCCEEDED
        [holder] = client.search_users(card_id=card)
    promo = ledger.programme("PROMO")
    # Paid out: 10,000 + 3,000 + 2,000 credited, 5,000 taken back: the whole budget, no more.
    assert (promo.used, promo.reserved, promo.remaining) == (Decimal("10000"), 0, 0)
    assert holder.balance == Decimal("10000")


def test_a_debit_of_a_closed_programme_is_not_reversed_and_its_credits_still_are(
    ledger_at: Ledger, sandbox
):
    ledger = ledger_at
    _promo(ledger, "10000")
    with client_for(sandbox) as client:
        card = _request(ledger, client, create("4000")).card_id
        paid = _request(ledger, client, credit(card, "1000"))
        taken = _request(ledger, client, debit(card, "500"))
        ledger.close_programme("PROMO", actor="boss")

        room = corrections.room(ledger, taken.reference)
        assert room.cap == 0 and "Promo is closed: it takes no new credits" in room.why
        with pytest.raises(ReversalRefused, match="Promo is closed"):
            corrections.request_reversal(
                ledger, taken.reference, "500", maker="asha", reason="debited by mistake"
            )
        assert ledger.reversed_by(taken.reference) == []
        # Reversing one of its credits takes nothing from it: it gives points back.
        back = corrections.request_reversal(
            ledger, paid.reference, "1000", maker="asha", reason="paid twice"
        )
        assert _approve(ledger, client, back.reference) is Status.SUCCEEDED
    promo = ledger.programme("PROMO")
    assert promo.used == Decimal("4000") + Decimal("1000") - Decimal("500") - Decimal("1000")


def test_reversing_a_credit_gives_its_programme_back_what_it_reverses(ledger_at: Ledger, sandbox):
    ledger = ledger_at
    with client_for(sandbox) as client:
        card = _request(ledger, client, create("100"), programme=None).card_id  # General
        _promo(ledger, "10000")
        paid = _request(ledger, client, credit(card, "6000"))
        assert ledger.programme("PROMO").remaining == Decimal("4000")
        back = corrections.request_reversal(
            ledger, paid.reference, "6000", maker="asha", reason="wrong person"
        )
        # Asked for, nothing comes back yet: EnKash has not taken the points from the card.
        assert ledger.programme("PROMO").remaining == Decimal("4000")
        assert _approve(ledger, client, back.reference) is Status.SUCCEEDED
        promo = ledger.programme("PROMO")
        assert (promo.used, promo.remaining) == (Decimal("0"), Decimal("10000"))
        # What came back pays a credit that did not fit before.
        assert _request(ledger, client, credit(card, "5000")).status is Status.SUCCEEDED
    assert ledger.programme("GENERAL").used == Decimal("100")


def _settled_in(
    ledger: Ledger, allocation: Allocation, balance: str, *, batch: bool = False
) -> None:
    """Move a recorded intent (``SENDING`` or, in a batch, ``QUEUED``) to EnKash's success."""
    if batch:
        assert ledger.claim(allocation.reference, actor="worker")
    ledger.transition(
        allocation.reference,
        Status.SUCCEEDED,
        actor="worker",
        from_statuses=(Status.SENDING,),
        result=AllocationResult(
            reference=allocation.reference,
            card_id=allocation.card_id,
            transaction_id="ECT" + allocation.reference[-8:],
            balance_after=Decimal(balance),
        ),
    )


def test_a_batch_reversal_of_debits_shares_what_their_programme_has_left_in_row_order(
    ledger_at: Ledger,
):
    ledger = ledger_at
    _promo(ledger, "10000")
    funded = Allocation(
        reference=new_reference(), kind="credit", amount="10000", card_id=CARD, programme="PROMO"
    )
    ledger.record_intent(funded, operator="asha")
    _settled_in(ledger, funded, "10000")
    rows = [
        (
            Allocation(
                reference=new_reference(),
                kind="debit",
                amount="3000",
                card_id=CARD,
                programme="PROMO",
            ),
            number,
        )
        for number in (1, 2, 3)
    ]
    ledger.create_batch(
        batch_id="B-DEBITS",
        file_name="debits.csv",
        file_digest="debits",
        operator="asha",
        allocations=rows,
        concurrency=1,
    )
    for (allocation, _), balance in zip(rows, ("7000", "4000", "1000"), strict=True):
        _settled_in(ledger, allocation, balance, batch=True)
    spent = Allocation(
        reference=new_reference(), kind="credit", amount="5000", card_id=CARD, programme="PROMO"
    )
    ledger.record_intent(spent, operator="asha")
    _settled_in(ledger, spent, "6000")
    assert ledger.programme("PROMO").remaining == Decimal("4000")

    preview = corrections.preview_batch_reversal(ledger, "B-DEBITS")
    assert [line.reversible for line in preview.lines] == [3000, 1000, 0]
    done = corrections.request_batch_reversal(
        ledger, SETTINGS, "B-DEBITS", maker="asha", reason="debited by mistake"
    )
    reversal = done.batch.batch_id
    assert [r.amount for r in ledger.rows(batch_id=reversal, order="row_number")] == [3000, 1000]
    [refused] = ledger.rejected_rows(reversal)
    assert refused.row_number == 3 and "Promo again" in refused.problem
    assert "0 points of its budget left" in refused.problem
    promo = ledger.programme("PROMO")
    assert (promo.reserved, promo.remaining) == (Decimal("4000"), Decimal("0"))

    request = approvals.for_subject(ledger, "batch", reversal)
    approvals.reject(ledger, request.id, approver="vikram", comment="not now")
    promo = ledger.programme("PROMO")
    assert (promo.reserved, promo.remaining) == (Decimal("0"), Decimal("4000"))


def test_a_reversal_reference_recorded_twice_is_a_duplicate_and_writes_nothing(ledger: Ledger):
    reference = settled(ledger, "credit", "1000", "1000")
    reversal = Allocation(reference="RV-TWICE-01", kind="debit", amount="100", card_id=CARD)
    ledger.record_reversal(reference, reversal, maker="asha")
    with pytest.raises(DuplicateReference):
        ledger.record_reversal(reference, reversal, maker="priya")
    assert [r.amount for r in ledger.reversed_by(reference)] == [Decimal("100")]


# --- the programmes' figures with reversals, whatever happens -----------------------------------

_codes = itertools.count(1)
_cards = ("EKC0PROP01", "EKC0PROP02", "EKC0PROP03")
_kinds = st.sampled_from([Kind.CREDIT, Kind.DEBIT])
_in_promo = st.booleans()
_card = st.integers(0, len(_cards) - 1)
_cents = st.integers(min_value=1, max_value=3000_00)
_decisions = st.sampled_from(["waits", "rejected", "sent", "refused", "unknown"])
_reverse = st.tuples(st.just("reverse"), st.integers(0, 50), st.integers(1, 100), _decisions)
_programme_steps = st.one_of(
    st.tuples(st.just("paid"), _kinds, _cents, _in_promo, _card),
    _reverse,
    _reverse,  # twice as likely: most of what is checked follows a reversal
    st.tuples(
        st.just("settle"), st.integers(0, 50), st.sampled_from([Status.SUCCEEDED, Status.FAILED])
    ),
    st.tuples(
        st.just("batch"),
        st.lists(st.tuples(_kinds, _cents, _in_promo, _card), min_size=1, max_size=4),
    ),
    st.tuples(st.just("reverse-batch"), st.booleans()),
    st.tuples(st.just("close")),
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def played_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        opened = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield opened
        opened.dispose()
        return
    with postgres_schema() as schema:
        opened = Ledger(PG_URL, schema=schema)
        yield opened
        opened.dispose()


class Books:
    """Plays steps on the store as EnKash would answer them (a debit past the card's balance is
    refused), and keeps, on its own, which programme each movement belongs to."""

    def __init__(self, ledger: Ledger, code: str):
        self.ledger = ledger
        self.code = code
        self.balances = dict.fromkeys(_cards, Decimal("4000"))  # points from before the Desk
        self.programme_of: dict[str, str] = {}  # reference -> programme code
        self.movements: list[str] = []  # references that may be reversed
        self.reversals: list[str] = []
        self.batches: list[str] = []

    def outcome(self, reference: str, from_status: Status) -> None:
        """EnKash's answer to a row being sent: success, or a refusal past the card's balance."""
        row = self.ledger.get(reference)
        assert row is not None and row.card_id is not None
        after = self.balances[row.card_id] + (
            row.amount if row.transaction_type == "CR" else -row.amount
        )
        if after < 0:
            self.ledger.transition(
                reference, Status.FAILED, actor="enkash", from_statuses=(from_status,)
            )
            return
        self.balances[row.card_id] = after
        self.ledger.transition(
            reference,
            Status.SUCCEEDED,
            actor="enkash",
            from_statuses=(from_status,),
            result=AllocationResult(
                reference=reference,
                card_id=row.card_id,
                transaction_id="ECT" + reference[-8:],
                balance_after=after,
            ),
        )

    def allocation(self, kind: Kind, cents: int, in_promo: bool, card: int) -> Allocation:
        return Allocation(
            reference=new_reference(),
            kind=kind,
            amount=Decimal(cents).scaleb(-2),
            card_id=_cards[card],
            programme=self.code if in_promo else None,
        )

    def play(self, step: tuple) -> None:
        what = step[0]
        if what == "paid":
            allocation = self.allocation(*step[1:])
            with contextlib.suppress(BudgetExceeded, ProgrammeClosed):
                self.ledger.record_intent(allocation, operator="asha")
                self.programme_of[allocation.reference] = allocation.programme or GENERAL_CODE
                self.movements.append(allocation.reference)
                self.outcome(allocation.reference, Status.SENDING)
        elif what == "reverse" and self.movements:
            _, pick, percent, decision = step
            self.reverse(self.movements[pick % len(self.movements)], percent, decision)
        elif what == "settle" and self.reversals:
            reference = self.reversals[step[1] % len(self.reversals)]
            if self.ledger.get(reference).status is Status.UNKNOWN:  # type: ignore[union-attr]
                if step[2] is Status.SUCCEEDED:
                    self.outcome(reference, Status.UNKNOWN)
                else:
                    self.ledger.transition(
                        reference, Status.FAILED, actor="lookup", from_statuses=(Status.UNKNOWN,)
                    )
        elif what == "batch":
            self.batch(step[1])
        elif what == "reverse-batch" and self.batches:
            self.reverse_batch(self.batches[-1], sent=step[1])
        elif what == "close":
            self.ledger.close_programme(self.code, actor="boss")

    def reverse(self, reference: str, percent: int, decision: str) -> None:
        room = corrections.room(self.ledger, reference)
        if room.cap <= 0:
            with pytest.raises(ReversalRefused):
                corrections.request_reversal(
                    self.ledger, reference, "0.01", maker="asha", reason="x"
                )
            return
        amount = max((room.cap * percent / 100).quantize(Decimal("0.01")), Decimal("0.01"))
        row = corrections.request_reversal(
            self.ledger, reference, amount, maker="asha", reason="a mistake"
        )
        self.programme_of[row.reference] = self.programme_of[reference]
        self.reversals.append(row.reference)
        if decision == "waits":
            return
        if decision == "rejected":
            request = approvals.for_subject(self.ledger, "reversal", row.reference)
            approvals.reject(self.ledger, request.id, approver="vikram", comment="no")
            return
        assert self.ledger.claim(row.reference, actor="vikram")
        if decision == "sent":
            self.outcome(row.reference, Status.SENDING)
        else:
            to = Status.FAILED if decision == "refused" else Status.UNKNOWN
            self.ledger.transition(
                row.reference, to, actor="enkash", from_statuses=(Status.SENDING,)
            )

    def batch(self, rows: list[tuple]) -> None:
        batch_id = f"BP{next(_codes):06d}"
        made = [(self.allocation(*row), number) for number, row in enumerate(rows, 1)]
        with contextlib.suppress(BudgetExceeded, ProgrammeClosed):
            self.ledger.create_batch(
                batch_id=batch_id,
                file_name=f"{batch_id}.csv",
                file_digest=batch_id,
                operator="asha",
                allocations=made,
                concurrency=1,
            )
            self.batches.append(batch_id)
            for allocation, _ in made:
                self.programme_of[allocation.reference] = allocation.programme or GENERAL_CODE
                self.movements.append(allocation.reference)
                assert self.ledger.claim(allocation.reference, actor="worker")
                self.outcome(allocation.reference, Status.SENDING)

    def reverse_batch(self, original: str, *, sent: bool) -> None:
        batch_id = f"BR{next(_codes):06d}"
        try:
            self.ledger.create_reversal_batch(
                batch_id=batch_id,
                file_digest=batch_id,
                original_batch=original,
                operator="asha",
                reason="a mistake",
                reference_for=lambda number: f"{batch_id}-{number:05d}",
                concurrency=1,
            )
        except ReversalRefused:
            return
        for row in self.ledger.rows(batch_id=batch_id, order="row_number"):
            self.programme_of[row.reference] = self.programme_of[row.reverses]  # type: ignore[index]
            self.reversals.append(row.reference)
            if sent:
                assert self.ledger.claim(row.reference, actor="worker")
                self.outcome(row.reference, Status.SENDING)
        if not sent:
            self.ledger.cancel_queued(batch_id, actor="asha", code="CANCELLED", message="stopped")

    def check(self) -> None:
        """Each programme's figures are what its own movements (reversals included) add up to,
        the counters equal a recount, and a budget is never over-spent."""
        assert self.ledger.stored_counts() == self.ledger.recount()
        assert self.ledger.summary_differences() == []
        used = {self.code: Decimal("0"), GENERAL_CODE: Decimal("0")}
        reserved = dict(used)
        for reference, code in self.programme_of.items():
            row = self.ledger.get(reference)
            assert row is not None
            if row.status is Status.SUCCEEDED:
                used[code] += row.amount if row.transaction_type == "CR" else -row.amount
            elif row.status is not Status.FAILED and row.transaction_type == "CR":
                reserved[code] += row.amount
        for code in used:
            programme = self.ledger.programme(code)
            if programme is None:  # General is made by the first movement that needs it
                assert used[code] == reserved[code] == 0
                continue
            assert (programme.used, programme.reserved) == (used[code], reserved[code]), code
            assert programme.remaining is None or programme.remaining >= 0


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(_programme_steps, min_size=1, max_size=20))
def test_a_programmes_figures_add_up_its_movements_and_their_reversals_whatever_happens(
    played_ledger: Ledger, steps
):
    """Random credits and debits in a programme with a budget and in General, one by one and in
    batches, their reversals (waiting, rejected, sent, refused, unknown then settled; whole
    batches reversed or cancelled) and the programme closing, on SQLite and PostgreSQL. Each
    programme's used and reserved equal what its own rows add up to, a reversal counted in its
    original's programme; its counters equal a recount; its budget is never over-spent."""
    played_ledger.reset()
    code = f"PP{next(_codes):06d}"
    played_ledger.create_programme(code=code, name="Promo", budget=Decimal("5000"), actor="boss")
    books = Books(played_ledger, code)
    # Something of each kind to reverse in each programme from the first step on.
    for seed in (
        ("paid", Kind.CREDIT, 1500_00, True, 0),
        ("paid", Kind.DEBIT, 700_00, True, 1),
        ("paid", Kind.CREDIT, 400_00, False, 2),
        ("paid", Kind.DEBIT, 300_00, False, 0),
    ):
        books.play(seed)
    for step in steps:
        books.play(step)
    books.check()
