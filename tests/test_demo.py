"""Demo data: made through the real allocate flow against the sandbox, and the two agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services import demo
from services.desk import Desk
from services.models import Kind, Status


@pytest.fixture
def sandbox_desk(desk_env):
    desk = Desk()
    yield desk
    desk.close()


def test_demo_data_goes_through_the_sandbox_and_balances_agree(sandbox_desk: Desk):
    report = demo.load(
        sandbox_desk.ledger,
        sandbox_desk.new_client,
        sandbox_desk.settings,
        sandbox_desk.sandbox.store,
        40,
        seed=5,
        workers=4,
    )
    store, ledger = sandbox_desk.sandbox.store, sandbox_desk.ledger
    rows = ledger.rows()
    succeeded = [r for r in rows if r.status is Status.SUCCEEDED]
    assert report.transactions == len(rows) > 40 * 3
    assert (
        report.agrees and demo.disagreements(sandbox_desk.ledger, sandbox_desk.sandbox.store) == []
    )
    # Every card at the sandbox has exactly the balance the ledger knows for it.
    cards = store.cards()
    assert len(cards) == len({r.card_id for r in succeeded})
    for card in cards:
        assert ledger.known_balance(card["enKashCardId"]) == card["balance"]
    # Each succeeded ledger row is a committed sandbox transaction; refusals are not.
    assert store.commit_count() == len(succeeded)
    failed = [r for r in rows if r.status is Status.FAILED]
    assert failed and all(r.enkash_message for r in failed)
    assert any("KYC" in (r.enkash_message or "") for r in failed)
    assert any("Insufficient balance" in (r.enkash_message or "") for r in failed)
    # Pool: opening minus net points on cards.
    on_cards = sum((c["balance"] for c in cards), Decimal(0))
    assert store.pool_balance() == store.identity.opening_pool - on_cards
    # History spread over months, with batches and several operators.
    oldest = min(r.created_at for r in rows)
    assert oldest < datetime.now(UTC) - timedelta(days=90)
    assert {r.kind for r in rows} == set(Kind)
    assert any(r.batch_id for r in rows)
    assert len({r.operator for r in rows}) >= 4
    # The sandbox's transactions moved with them: EnKash's "this month" matches the ledger's.
    month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    this_month = [r for r in succeeded if r.created_at >= month_start]
    credited = sum((r.amount for r in this_month if r.kind is not Kind.DEBIT), Decimal(0))
    debited = sum((r.amount for r in this_month if r.kind is Kind.DEBIT), Decimal(0))
    summary = store.account_summary()
    assert summary["currentMonthAllocationPoint"] == credited
    assert summary["currentMonthRedemptionPoint"] == debited
    assert len(this_month) < len(succeeded)
    # Audit events moved with their rows.
    first = rows[0]
    trail = ledger.audit_trail(first.reference)
    assert abs(trail[0].at - first.created_at) < timedelta(seconds=5)


def test_demo_data_is_refused_outside_the_sandbox(sandbox_desk: Desk):
    with pytest.raises(RuntimeError, match="only for the sandbox"):
        demo.load(sandbox_desk.ledger, sandbox_desk.new_client, sandbox_desk.settings, None, 5)
    assert sandbox_desk.ledger.rows() == []


def test_the_overview_button_loads_demo_data(app, app_desk):
    app.number_input(key="demo_employees").set_value(10)
    app.button(key="load_demo").click().run()
    assert not app.exception
    assert "sandbox and ledger balances agree" in app.success[0].value
    assert app_desk.ledger.rows()
    assert demo.disagreements(app_desk.ledger, app_desk.sandbox.store) == []
