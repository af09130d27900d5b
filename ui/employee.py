"""The employee view: who holds a card, what it holds, everything that moved on it, and the
buttons that open a credit or a debit of it (the Credit or Debit page with the card chosen)."""

from __future__ import annotations

import streamlit as st

from services import search
from ui.access import allowed
from ui.context import desk
from ui.format import mobile, points
from ui.history import TABLE_COLUMNS, detail_view, table
from ui.text import code, md

PAGE_SIZE = 50
_PAGES = {"credit": "pages/credit.py", "debit": "pages/debit.py"}


def _prefill(kind: str, card_id: str) -> None:
    """A fresh credit (or debit) form with this card chosen, as "Credit Zoya's card instead"
    hands a card to the Credit page: the form's own reference, its own click to send."""
    state = st.session_state
    state.pop(f"flow_{kind}", None)
    state[f"{kind}_query"] = card_id
    state[f"{kind}_card"] = card_id
    state[f"{kind}_amount"] = ""
    state[f"{kind}_reason"] = ""


def render_employee(card_id: str) -> None:
    card = (card_id or "").strip().upper()
    if not card:
        st.title("Employee")
        st.info("Search for an employee in the sidebar: a card id, email, mobile or name.")
        return
    the_desk = desk()
    with st.spinner("Asking EnKash about this card…"), the_desk.client() as client:
        record = search.employee(the_desk.ledger, client, card)
    if not record.found:
        st.title("Employee")
        st.warning(
            f"No card {code(card)} in Points Desk or at EnKash. Check the card id, or search "
            "by name, email or mobile in the sidebar."
        )
        return
    person = record.summary
    name = " ".join(p for p in (person.title, person.first_name) if p) if person else ""
    st.title(md(name or "Unnamed employee"))
    facts, known, at_enkash = st.columns([2, 1, 1])
    with facts:
        st.markdown(f"**Card** {code(card)}")
        # Supplied text (email, mobile) as plain text, never Markdown.
        st.text(f"Email {person.email or '—'}  ·  Mobile {mobile(person.mobile) or '—'}")
        st.caption("Programme: General")
    known.metric(
        "Known balance",
        points(person.balance) if person.balance is not None else "—",
        border=True,
        help="The balance EnKash reported after this card's latest succeeded transaction "
        "in Points Desk.",
    )
    at_enkash.metric(
        "Balance at EnKash",
        points(record.enkash_balance) if record.enkash_balance is not None else "—",
        border=True,
        help="What EnKash's user search says the card holds now.",
    )
    if record.note:
        st.caption(md(record.note))
    if allowed("move"):
        credit, debit, _ = st.columns([1, 1, 4])
        for column, kind, label, icon in (
            (credit, "credit", "Credit", "➕"),
            (debit, "debit", "Debit", "➖"),
        ):
            if column.button(label, key=f"employee_{kind}", icon=icon, width="stretch"):
                _prefill(kind, card)
                st.switch_page(_PAGES[kind])

    st.subheader("Every movement")
    ledger = the_desk.ledger
    if st.session_state.get("_employee_card") != card:
        st.session_state["_employee_card"] = card
        st.session_state["employee_page"] = 1
    shown = search.movements(ledger, card, int(st.session_state.get("employee_page", 1)), PAGE_SIZE)
    if not shown.total:
        st.info("Points Desk has no transaction for this card yet.")
        return
    st.dataframe(
        table(shown.rows),
        hide_index=True,
        width="stretch",
        column_config=TABLE_COLUMNS,
        key="employee_table",
    )
    pager, summary = st.columns([1, 4], vertical_alignment="bottom")
    pager.number_input("Page", min_value=1, max_value=shown.pages, step=1, key="employee_page")
    summary.caption(
        f"Page {shown.number} of {shown.pages:,} · {shown.total:,} transactions, newest first"
    )
    detail_view(ledger, shown.rows)
