"""services/reconcile.py against the sandbox: the unknown list, checks, the settle loop, drift."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services import reconcile
from services.allocations import submit
from services.desk import Desk
from services.models import Status
from services.store import Ledger, transactions
from tests.fault_support import NO_GRACE, client_for, create, credit, reset_knobs


def backdate(ledger: Ledger, reference: str, minutes: float) -> None:
    """Pretend the row was created and last tried ``minutes`` ago."""
    then = datetime.now(UTC) - timedelta(minutes=minutes)
    with ledger.engine.begin() as conn:
        conn.execute(
            transactions.update()
            .where(transactions.c.reference == reference)
            .values(created_at=then, updated_at=then)
        )


def unknown_pair(ledger, client, sandbox) -> tuple[str, str, str]:
    """A card, one unknown that EnKash committed, and one it never got."""
    card = submit(ledger, client, create("1000"), operator="asha").row.card_id
    sandbox.knobs.error_after_commit_rate = 1
    committed = submit(ledger, client, credit(card, "100"), operator="asha").row.reference
    reset_knobs(sandbox)
    sandbox.knobs.fail_before_commit_rate = 1
    absent = submit(ledger, client, credit(card, "30"), operator="asha").row.reference
    reset_knobs(sandbox)
    return card, committed, absent


def test_unknowns_are_listed_oldest_first_with_age_attempts_and_state(ledger, client, sandbox):
    _, committed, absent = unknown_pair(ledger, client, sandbox)
    backdate(ledger, committed, 7)
    items = reconcile.unknown_transactions(ledger)
    assert [item.reference for item in items] == [committed, absent]
    assert timedelta(minutes=6) < items[0].age < timedelta(minutes=8)
    assert [item.attempts for item in items] == [1, 1]
    assert not any(item.resend_allowed for item in items)
    assert items[0].state == "Not checked with EnKash yet."


def test_check_all_settles_what_went_through_and_proves_the_rest_absent(ledger, client, sandbox):
    card, committed, absent = unknown_pair(ledger, client, sandbox)
    results = {
        r.reference: r
        for r in reconcile.check_all(ledger, client, actor="asha", absence_grace=NO_GRACE)
    }
    assert results[committed].outcome == "succeeded" and results[committed].settled
    assert results[absent].outcome == "absent" and results[absent].resend_allowed
    [item] = reconcile.unknown_transactions(ledger)
    assert item.reference == absent and item.resend_allowed
    assert "can be resent" in item.state
    resent = reconcile.resend(ledger, client, absent, actor="asha", absence_grace=NO_GRACE)
    assert resent.outcome.status is Status.SUCCEEDED
    assert reconcile.unknown_transactions(ledger) == []
    assert sandbox.store.card_balance(card) == Decimal("1130.00")


def test_a_recent_absence_proves_nothing_yet(ledger, client, sandbox):
    _, _, absent = unknown_pair(ledger, client, sandbox)
    result = reconcile.check(ledger, client, absent, actor="asha")  # default grace: 30 s
    assert result.outcome == "not_yet" and not result.resend_allowed
    backdate(ledger, absent, 1)
    assert reconcile.check(ledger, client, absent, actor="asha").outcome == "absent"


def test_a_lookup_that_fails_is_reported_in_words_and_recorded_nowhere(ledger, client, sandbox):
    _, committed, _ = unknown_pair(ledger, client, sandbox)
    trail = ledger.audit_trail(committed)
    sandbox.knobs.fail_before_commit_rate = 1
    result = reconcile.check(ledger, client, committed, actor="asha")
    assert result.outcome == "error" and "could not be asked" in result.message
    assert ledger.audit_trail(committed) == trail
    assert reconcile.check(ledger, client, "PD-NOPE-000", actor="asha").outcome == "error"


def test_the_settle_loop_settles_at_start_and_never_resends(ledger, client, sandbox):
    _, committed, absent = unknown_pair(ledger, client, sandbox)
    backdate(ledger, absent, 1)
    sent = sandbox.store.allocate_requests()
    loop = reconcile.SettleLoop(ledger, lambda: client_for(sandbox), interval_seconds=0.2).start()
    try:
        deadline = time.monotonic() + 10
        while loop.passes < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        loop.stop()
    assert not loop.running
    assert ledger.get(committed).status is Status.SUCCEEDED
    assert ledger.get(absent).status is Status.UNKNOWN
    assert sandbox.store.allocate_requests() == sent  # looked up, never resent
    proofs = [e for e in ledger.audit_trail(absent) if e.detail.startswith("lookup: proved")]
    assert len(proofs) == 1  # a proven row waits for a person; later passes leave it alone
    assert loop.passes >= 3 and loop.last_pass is not None


def test_the_desk_runs_the_settle_loop_unless_turned_off(tmp_path):
    from services.config import load_settings

    on = Desk(load_settings(None, points_desk_data_dir=tmp_path / "on"))
    off = Desk(
        load_settings(
            None, points_desk_data_dir=tmp_path / "off", points_desk_settle_interval_seconds=0
        )
    )
    try:
        assert on.settle_loop is not None and on.settle_loop.running
        assert on.settle_loop.interval_seconds == 60
        assert off.settle_loop is None
    finally:
        on.close()
        off.close()
    assert not on.settle_loop.running


def test_reference_mismatches_are_listed_settled_or_not(ledger, client, sandbox):
    card = submit(ledger, client, create("1000"), operator="asha").row.card_id
    sandbox.knobs.wrong_reference_rate = 1
    first = submit(ledger, client, credit(card, "5"), operator="asha").row.reference
    second = submit(ledger, client, credit(card, "6"), operator="asha").row.reference
    reset_knobs(sandbox)
    reconcile.check(ledger, client, first, actor="asha")
    listed = {row.reference: row.status for row in reconcile.reference_mismatches(ledger)}
    assert listed == {first: Status.SUCCEEDED, second: Status.UNKNOWN}


def test_drift_check_agrees_then_names_the_card_that_differs(ledger, client, sandbox):
    card = submit(ledger, client, create("1000"), operator="asha").row.card_id
    other = submit(ledger, client, create("500"), operator="asha").row.card_id
    report = reconcile.drift_check(ledger, client)
    assert report.agrees and report.cards_checked == 2
    assert report.ledger_card_total == report.enkash_card_total == Decimal("1500.00")
    assert report.account is not None
    assert report.account.available_balance == sandbox.store.pool_balance()

    sandbox.knobs.error_after_commit_rate = 1  # EnKash moves 200 the ledger does not count yet
    submit(ledger, client, credit(card, "200"), operator="asha")
    reset_knobs(sandbox)
    report = reconcile.drift_check(ledger, client)
    [drift] = report.differences
    assert (drift.card_id, drift.ledger_balance, drift.enkash_balance) == (
        card,
        Decimal("1000.00"),
        Decimal("1200.00"),
    )
    assert drift.difference == Decimal("200.00") and drift.unsettled == 1
    assert "unknown outcome" in drift.explanation
    one = reconcile.drift_check(ledger, client, card_ids=[other])
    assert one.agrees and one.cards_checked == 1

    reconcile.check_all(ledger, client, actor="asha", absence_grace=NO_GRACE)
    assert reconcile.drift_check(ledger, client).agrees


def test_drift_lists_a_card_the_ledger_does_not_know(ledger, client, sandbox):
    direct = client_for(sandbox)
    direct.allocate(create("75"))  # moved outside Points Desk
    direct.close()
    [drift] = reconcile.drift_check(ledger, client).differences
    assert drift.ledger_balance is None and drift.enkash_balance == Decimal("75.00")
    assert "no confirmed transaction" in drift.explanation


def test_the_settle_interval_setting(monkeypatch):
    from services.config import ConfigError, load_settings

    monkeypatch.delenv("POINTS_DESK_SETTLE_INTERVAL_SECONDS", raising=False)
    assert load_settings(None).points_desk_settle_interval_seconds == 60
    monkeypatch.setenv("POINTS_DESK_SETTLE_INTERVAL_SECONDS", "0")
    assert load_settings(None).points_desk_settle_interval_seconds == 0
    monkeypatch.setenv("POINTS_DESK_SETTLE_INTERVAL_SECONDS", "0.5")
    with pytest.raises(ConfigError, match="POINTS_DESK_SETTLE_INTERVAL_SECONDS"):
        load_settings(None)
