"""A Hypothesis state machine: random sequences of moves, faults, crashes, settles and resends.

After every step: no reference committed twice at the sandbox, every SUCCEEDED row has exactly one
sandbox transaction (on the same card), no FAILED row moved money, every sandbox transaction is in
the ledger. After settling everything with the faults off: nothing unknown is left unexplained and
every card's balance agrees.
"""

from __future__ import annotations

import contextlib
import itertools
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from services import enkash, reconcile
from services.allocations import is_proof_of_absence, submit
from services.enkash import EnkashError
from services.models import Status
from services.sandbox import start_sandbox
from services.store import Ledger
from tests.fault_support import (
    NO_GRACE,
    RATE_KNOBS,
    SETTINGS,
    audit_books,
    client_for,
    create,
    credit,
    debit,
    reset_knobs,
    settle_everything,
)


@pytest.fixture(scope="module")
def sandbox():
    server = start_sandbox()
    yield server
    server.stop()
    server.store.close()


class FaultMachine(RuleBasedStateMachine):
    server = None  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        server = type(self).server
        server.store.reset()
        reset_knobs(server)
        server.knobs.drop_hang_seconds = 0.35  # a hang outlives the client's 0.2 s read timeout
        self.server = server
        self.ledger = Ledger("sqlite://")  # in memory: one example, one thread
        self.client = client_for(server, timeout=0.2, connect_timeout=0.5)

    # -- helpers ---------------------------------------------------------------------------------

    def cards(self) -> list[str]:
        return sorted(self.ledger.card_totals())

    def unknowns(self) -> list[str]:
        return [row.reference for row in self.ledger.rows(statuses=[Status.UNKNOWN])]

    # -- moves -----------------------------------------------------------------------------------

    @initialize(amount=st.integers(500, 2000))
    def first_account(self, amount):
        submit(self.ledger, self.client, create(str(amount)), operator="machine")

    @rule(amount=st.integers(1, 2000))
    def open_account(self, amount):
        submit(self.ledger, self.client, create(str(amount)), operator="machine")

    @rule(pick=st.integers(0, 50), amount=st.integers(1, 500))
    def credit_card(self, pick, amount):
        cards = self.cards()
        if cards:
            allocation = credit(cards[pick % len(cards)], str(amount))
            submit(self.ledger, self.client, allocation, operator="machine")

    @rule(pick=st.integers(0, 50), amount=st.integers(1, 1500))
    def debit_card(self, pick, amount):
        cards = self.cards()
        if cards:
            allocation = debit(cards[pick % len(cards)], str(amount))
            submit(self.ledger, self.client, allocation, operator="machine", settings=SETTINGS)

    # -- faults ----------------------------------------------------------------------------------

    @rule(knob=st.sampled_from(RATE_KNOBS), rate=st.sampled_from([0.25, 0.5, 1.0]))
    def set_fault(self, knob, rate):
        reset_knobs(self.server)
        self.server.knobs.drop_hang_seconds = 0.35
        setattr(self.server.knobs, knob, rate)

    @rule()
    def faults_off(self):
        reset_knobs(self.server)
        self.server.knobs.drop_hang_seconds = 0.35

    @rule(sent=st.booleans(), amount=st.integers(1, 300))
    def crash(self, sent, amount):
        """The process dies mid-call: the intent is SENDING, the reply (if any) never recorded."""
        cards = self.cards()
        allocation = credit(cards[0], str(amount)) if cards else create(str(amount))
        self.ledger.record_intent(allocation, operator="machine")
        if sent:
            with contextlib.suppress(EnkashError):
                self.client.allocate(allocation)
        assert self.ledger.recover_interrupted(actor="restart") == 1

    # -- settling --------------------------------------------------------------------------------

    @rule(pick=st.integers(0, 50))
    def settle_one(self, pick):
        unknown = self.unknowns()
        if unknown:
            reference = unknown[pick % len(unknown)]
            reconcile.check(
                self.ledger, self.client, reference, actor="machine", absence_grace=NO_GRACE
            )

    @rule(pick=st.integers(0, 50))
    def resend_one(self, pick):
        unknown = self.unknowns()
        if unknown:
            reference = unknown[pick % len(unknown)]
            before = self.ledger.get(reference)
            proven = reconcile.unknown_transactions(self.ledger)
            allowed = any(item.reference == reference and item.resend_allowed for item in proven)
            result = reconcile.resend(
                self.ledger, self.client, reference, actor="machine", absence_grace=NO_GRACE
            )
            if not allowed:  # refused, and nothing was sent or changed
                assert result.outcome is None
                assert self.ledger.get(reference).status is Status.UNKNOWN
                assert self.ledger.get(reference).attempts == before.attempts

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def nothing_paid_twice_or_lost(self):
        problems = audit_books(self.ledger, self.server.store).problems(settled=False)
        assert not problems, problems

    @invariant()
    def every_resend_follows_a_standing_proof_of_absence(self):
        for row in self.ledger.rows():
            trail = self.ledger.audit_trail(row.reference)
            for before, event in itertools.pairwise(trail):
                if (event.from_status, event.to_status) == (Status.UNKNOWN, Status.SENDING):
                    assert is_proof_of_absence(before), (row.reference, before, event)

    def teardown(self):
        try:
            reset_knobs(self.server)
            settle_everything(self.ledger, self.client, actor="machine")
            books = audit_books(self.ledger, self.server.store)
            assert not books.problems(settled=True), books.problems(settled=True)
            assert not books.unexplained
            for card, balance in self.ledger.card_totals().items():
                assert self.server.store.card_balance(card) == balance
            assert sum(self.ledger.card_totals().values(), Decimal(0)) == sum(
                (card["balance"] for card in self.server.store.cards()), Decimal(0)
            )
        finally:
            self.client.close()
            self.ledger.dispose()
            enkash._REFUSED_LOGINS.clear()


def test_random_fault_sequences_never_pay_twice_or_lose_a_transaction(sandbox):
    FaultMachine.server = sandbox
    run_state_machine_as_test(
        FaultMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            derandomize=False,
        ),
    )
