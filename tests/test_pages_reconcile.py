"""The Reconcile page under AppTest, on the app's own Desk and embedded sandbox."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services.allocations import submit
from services.models import Status
from services.store import transactions
from tests.fault_support import create, credit, reset_knobs

PAGE = "pages/reconcile.py"
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def rec_app(desk_env, monkeypatch):
    """The app with the background settle pass off, so only the page settles anything."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("POINTS_DESK_SETTLE_INTERVAL_SECONDS", "0")
    at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def rec_desk(rec_app):
    from ui.context import _desk

    the_desk = _desk()
    assert the_desk.settle_loop is None
    return the_desk


def backdate(ledger, reference: str, minutes: float) -> None:
    then = datetime.now(UTC) - timedelta(minutes=minutes)
    with ledger.engine.begin() as conn:
        conn.execute(
            transactions.update()
            .where(transactions.c.reference == reference)
            .values(created_at=then, updated_at=then)
        )


def make_unknowns(the_desk) -> tuple[str, str, str]:
    """A card, an unknown EnKash committed (5 min old) and one it never got (3 min old)."""
    knobs = the_desk.sandbox.knobs
    with the_desk.client() as client:
        opened = submit(the_desk.ledger, client, create("1000"), operator="asha").row
        card = opened.card_id
        knobs.error_after_commit_rate = 1
        committed = submit(the_desk.ledger, client, credit(card, "100"), operator="asha").row
        knobs.error_after_commit_rate = 0
        knobs.fail_before_commit_rate = 1
        absent = submit(the_desk.ledger, client, credit(card, "30"), operator="asha").row
        knobs.fail_before_commit_rate = 0
    assert committed.status is absent.status is Status.UNKNOWN
    backdate(the_desk.ledger, opened.reference, 10)
    backdate(the_desk.ledger, committed.reference, 5)
    backdate(the_desk.ledger, absent.reference, 3)
    return card, committed.reference, absent.reference


def text_of(at) -> str:
    parts = []
    for kind in ("markdown", "success", "error", "warning", "info", "caption"):
        parts.extend(str(element.value) for element in getattr(at, kind))
    return "\n".join(parts)


def button_keys(at) -> set[str]:
    return {button.key for button in at.button}


def test_unknown_rows_show_age_attempts_and_a_check_button_but_no_resend(rec_app, rec_desk):
    _, committed, absent = make_unknowns(rec_desk)
    rec_app.switch_page(PAGE).run()
    assert not rec_app.exception, rec_app.exception
    text = text_of(rec_app)
    assert "Credit of 100.00 points to Asha" in text and "5 min ago" in text
    assert "Credit of 30.00 points to Asha" in text and "3 min ago" in text
    assert "1 attempt" in text and "IST" in text
    assert "Not checked with EnKash yet." in text
    assert {f"check_{committed}", f"check_{absent}", "check_all"} <= button_keys(rec_app)
    assert not any(key.startswith("resend_") for key in button_keys(rec_app))


def test_check_settles_a_committed_unknown_and_says_so(rec_app, rec_desk):
    _, committed, _ = make_unknowns(rec_desk)
    rec_app.switch_page(PAGE).run()
    rec_app.button(key=f"check_{committed}").click().run()
    assert not rec_app.exception, rec_app.exception
    assert rec_desk.ledger.get(committed).status is Status.SUCCEEDED
    assert rec_desk.ledger.get(committed).balance_after == Decimal("1100.00")
    assert "went through" in rec_app.success[0].value
    assert f"check_{committed}" not in button_keys(rec_app)


def test_a_row_proved_absent_is_resent_with_the_same_reference_after_confirmation(
    rec_app, rec_desk
):
    card, _, absent = make_unknowns(rec_desk)
    rec_app.switch_page(PAGE).run()
    rec_app.button(key=f"check_{absent}").click().run()
    assert "never arrived" in text_of(rec_app)
    assert rec_desk.ledger.get(absent).status is Status.UNKNOWN

    rec_app.button(key=f"resend_{absent}").click().run()  # opens the confirmation
    assert not rec_app.exception, rec_app.exception
    assert rec_desk.ledger.get(absent).status is Status.UNKNOWN  # nothing sent yet
    assert "same reference" in text_of(rec_app)
    rec_app.button(key="resend_confirm").click().run()
    assert not rec_app.exception, rec_app.exception
    row = rec_desk.ledger.get(absent)
    assert row.status is Status.SUCCEEDED and row.attempts == 2
    per_reference = Counter(t["pgReferenceNumber"] for t in rec_desk.sandbox.store.transactions())
    assert per_reference[absent] == 1
    assert rec_desk.sandbox.store.card_balance(card) == Decimal("1130.00")
    assert "Resent" in text_of(rec_app)


def test_check_all_reports_in_words(rec_app, rec_desk):
    make_unknowns(rec_desk)
    rec_app.switch_page(PAGE).run()
    rec_app.button(key="check_all").click().run()
    assert not rec_app.exception, rec_app.exception
    assert "Checked 2 with EnKash: 1 went through, 1 never arrived (can be resent)." in text_of(
        rec_app
    )
    assert len([k for k in button_keys(rec_app) if k.startswith("resend_")]) == 1


def test_mismatches_and_drift_are_shown(rec_app, rec_desk):
    knobs = rec_desk.sandbox.knobs
    with rec_desk.client() as client:
        card = submit(rec_desk.ledger, client, create("1000"), operator="asha").row.card_id
        knobs.wrong_reference_rate = 1
        odd = submit(rec_desk.ledger, client, credit(card, "20"), operator="asha").row.reference
        reset_knobs(rec_desk.sandbox)
    rec_app.switch_page(PAGE).run()
    [table, *_] = rec_app.dataframe
    assert odd in table.value["Reference"].tolist()
    assert "EnKash answered for another reference" in text_of(rec_app)

    rec_app.button(key="run_drift").click().run()
    assert not rec_app.exception, rec_app.exception
    assert "1 card(s) differ from EnKash" in text_of(rec_app)
    drift = rec_app.dataframe[-1].value
    assert drift["Card"].tolist() == [card]
    assert drift["Ledger"].tolist() == ["1,000.00"] and drift["EnKash"].tolist() == ["1,020.00"]


def test_nothing_unknown_reads_as_good_news(rec_app, rec_desk):
    rec_app.switch_page(PAGE).run()
    assert "Nothing is unknown" in rec_app.success[0].value
    assert "Automatic background checks are off." in text_of(rec_app)
    rec_app.button(key="run_drift").click().run()
    assert "Every card agrees with EnKash" in text_of(rec_app)
