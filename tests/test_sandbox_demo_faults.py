"""Demo a bad day: a scripted sandbox fault for the next N allocate calls, then normal again,
turned on and off from Overview → Sandbox tools."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services import reconcile
from services.allocations import submit
from services.models import Status
from services.sandbox.app import apply_knob_changes
from tests.fault_support import NO_GRACE, SETTINGS, create, credit


def test_a_scripted_fault_hits_the_next_n_allocate_calls_then_the_sandbox_answers_normally(
    ledger, sandbox, client
):
    opened = submit(ledger, client, create("1000"), operator="asha", settings=SETTINGS)
    card = opened.row.card_id
    apply_knob_changes(sandbox.knobs, {"next_fault": "timeout_after_commit", "next_fault_calls": 2})
    client.account_details()  # not an allocate call: takes nothing from the counter
    first, second, third = (credit(card, "100") for _ in range(3))
    outcomes = [
        submit(ledger, client, a, operator="asha", settings=SETTINGS)
        for a in (first, second, third)
    ]
    assert [o.status for o in outcomes] == [Status.UNKNOWN, Status.UNKNOWN, Status.SUCCEEDED]
    assert sandbox.knobs.next_fault_calls == 0
    # Committed at EnKash despite the timeout: all three count at the sandbox.
    assert sandbox.store.card_balance(card) == Decimal("1300.00")
    check = reconcile.check(ledger, client, first.reference, actor="asha", absence_grace=NO_GRACE)
    assert check.outcome == "succeeded"
    assert ledger.get(first.reference).status is Status.SUCCEEDED


def test_a_scripted_refusal_moves_nothing_and_switching_off_stops_it(ledger, sandbox, client):
    opened = submit(ledger, client, create("500"), operator="asha", settings=SETTINGS)
    card = opened.row.card_id
    apply_knob_changes(sandbox.knobs, {"next_fault": "refusal", "next_fault_calls": 5})
    refused = submit(ledger, client, credit(card, "40"), operator="asha", settings=SETTINGS)
    assert refused.status is Status.FAILED and "scripted demo fault" in refused.row.enkash_message
    apply_knob_changes(sandbox.knobs, {"next_fault": "", "next_fault_calls": 0})
    done = submit(ledger, client, credit(card, "40"), operator="asha", settings=SETTINGS)
    assert done.status is Status.SUCCEEDED
    assert sandbox.store.card_balance(card) == Decimal("540.00")


@pytest.mark.parametrize(
    "changes",
    [
        {"next_fault": "explode"},
        {"next_fault_calls": -1},
        {"next_fault_calls": 1.5},
        {"next_fault_calls": True},
    ],
)
def test_bad_scripted_fault_settings_are_refused(sandbox, changes):
    with pytest.raises(ValueError, match="next_fault"):
        apply_knob_changes(sandbox.knobs, changes)
    assert sandbox.knobs.next_fault == "" and sandbox.knobs.next_fault_calls == 0


def test_the_overview_turns_a_fault_on_for_the_next_calls_and_off(app, app_desk):
    knobs = app_desk.sandbox.knobs
    app.session_state["_first_paint_done"] = {"overview"}  # the tools come with the charts
    app.run()
    app.selectbox(key="sandbox_fault").set_value("Timeout after commit")
    app.number_input(key="sandbox_fault_calls").set_value(3)
    app.button(key="sandbox_fault_on").click().run()
    assert not app.exception
    assert (knobs.next_fault, knobs.next_fault_calls) == ("timeout_after_commit", 3)
    assert any("Fault on: timeout after commit" in w.value for w in app.warning)
    app.button(key="sandbox_fault_off").click().run()
    assert not app.exception
    assert (knobs.next_fault, knobs.next_fault_calls) == ("", 0)
    assert any("Faults off" in s.value for s in app.success)
