"""Demo data: made through the real allocate flow against the sandbox, and the two agree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services import demo
from services.desk import Desk
from services.models import AuditKind, Kind, Status


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
    # The sandbox tools come with the charts, a moment after the first drawing (ui/first_paint.py).
    assert "load_demo" not in [button.key for button in app.button]
    app.session_state["_first_paint_done"] = {"overview"}
    app.run()
    app.number_input(key="demo_employees").set_value(10)
    app.button(key="load_demo").click().run()
    assert not app.exception
    assert "sandbox and ledger balances agree" in app.success[0].value
    assert app_desk.ledger.rows()
    assert demo.disagreements(app_desk.ledger, app_desk.sandbox.store) == []


def test_demo_data_goes_through_the_ledger_as_intents_files_and_single_movements(
    sandbox_desk: Desk,
):
    """Every demo movement is an intent in the ledger first, its reference is the one EnKash
    committed, the files are real batches (Recent batches lists them, dated in the past), and
    the summaries equal the rows."""
    report = demo.load(
        sandbox_desk.ledger,
        sandbox_desk.new_client,
        sandbox_desk.settings,
        sandbox_desk.sandbox.store,
        30,
        seed=11,
        runner=sandbox_desk.runner,
    )
    ledger, store = sandbox_desk.ledger, sandbox_desk.sandbox.store
    rows = ledger.rows()
    assert report.agrees and len(rows) == report.transactions
    # Intent first: each row's audit trail opens with its INTENT event, then a claim and an
    # outcome (a held debit: an approval between them).
    for row in rows:
        kinds = [event.kind for event in ledger.audit_trail(row.reference)]
        assert kinds[0] is AuditKind.INTENT, (row.reference, kinds)
        assert AuditKind.OUTCOME in kinds, (row.reference, kinds)
        assert row.status in (Status.SUCCEEDED, Status.FAILED)
    # References are EnKash's: each succeeded row is exactly one committed sandbox transaction
    # under the same reference, on the same card, for the same points; refusals are not there.
    at_enkash = {t["pgReferenceNumber"]: t for t in store.transactions()}
    succeeded = {r.reference: r for r in rows if r.status is Status.SUCCEEDED}
    assert set(at_enkash) == set(succeeded)
    for reference, row in succeeded.items():
        assert at_enkash[reference]["enKashCardId"] == row.card_id
        assert at_enkash[reference]["amount"] == row.amount
        assert at_enkash[reference]["enkashCardTxnId"] == row.transaction_id
    # Files went through the bulk flow: real batches, finished, listed, dated when planned.
    batches = ledger.list_batches(limit=100)
    assert {b.batch_id for b in batches} == set(report.batches) and len(batches) >= 6
    assert all(b.state == "finished" for b in batches)
    assert min(b.created_at for b in batches) < datetime.now(UTC) - timedelta(days=90)
    in_files = [r for r in rows if r.batch_id]
    assert {r.batch_id for r in in_files} == set(report.batches)
    assert len(in_files) + report.singles == len(rows) and report.singles > 0
    assert {r.kind for r in in_files} == {Kind.CREATE, Kind.CREDIT}
    # The summaries (daily totals, card days, card balances) equal the rows.
    assert ledger.summary_differences() == []
