"""Under AppTest: clicking a row of History's table opens that transaction's detail at the top
(``?ref=``), and an unknown outcome's detail offers "Check with EnKash", then, once a lookup
proved the reference absent, "Resend with the same reference"."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from services.models import Status
from tests import test_pages_reconcile
from tests.test_pages_reconcile import button_keys, make_unknowns, text_of

rec_app = test_pages_reconcile.rec_app  # the app with the background settle pass off
rec_desk = test_pages_reconcile.rec_desk

HISTORY = "pages/history.py"


def _click_row(at, reference: str):
    """Select the row of ``reference`` in the transactions table, as a click does."""
    [table] = [t for t in at.dataframe if (t.key or "").startswith("history_table_")]
    row = table.value["Reference"].tolist().index(reference)
    at.session_state[table.key] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    at.run()
    assert not at.exception, at.exception
    return at


def test_clicking_a_row_opens_its_detail_with_check_then_resend_once_proven_absent(
    rec_app, rec_desk
):
    card, committed, absent = make_unknowns(rec_desk)
    rec_app.switch_page(HISTORY).run()
    assert not rec_app.exception, rec_app.exception
    assert f"history_check_{absent}" not in button_keys(rec_app)  # nothing open yet

    _click_row(rec_app, absent)
    assert rec_app.query_params["ref"] in (absent, [absent])  # the address opens it again
    assert "Transaction" in [h.value for h in rec_app.subheader]
    text = text_of(rec_app)
    assert f"`{absent}`" in text and "Outcome unknown." in text
    assert "Not checked with EnKash yet." in text
    assert f"history_check_{absent}" in button_keys(rec_app)
    assert f"history_resend_{absent}" not in button_keys(rec_app)  # not proven absent yet

    rec_app.button(key=f"history_check_{absent}").click().run()
    assert not rec_app.exception, rec_app.exception
    assert "never arrived" in text_of(rec_app)
    assert rec_desk.ledger.get(absent).status is Status.UNKNOWN
    assert f"history_resend_{absent}" in button_keys(rec_app)

    rec_app.button(key=f"history_resend_{absent}").click().run()  # the confirmation
    assert not rec_app.exception, rec_app.exception
    assert rec_desk.ledger.get(absent).status is Status.UNKNOWN  # nothing sent yet
    rec_app.button(key="resend_confirm").click().run()
    assert not rec_app.exception, rec_app.exception
    row = rec_desk.ledger.get(absent)
    assert row.status is Status.SUCCEEDED and row.attempts == 2
    sent = Counter(t["pgReferenceNumber"] for t in rec_desk.sandbox.store.transactions())
    assert sent[absent] == 1
    assert rec_desk.sandbox.store.card_balance(card) == Decimal("1130.00")
    assert "Resent" in text_of(rec_app)
    assert f"history_check_{absent}" not in button_keys(rec_app)

    _click_row(rec_app, committed)  # another row: its detail replaces this one
    assert f"history_check_{committed}" in button_keys(rec_app)
    assert f"`{committed}`" in text_of(rec_app)
