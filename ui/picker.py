"""Find an employee's card by name, email, mobile or card id."""

from __future__ import annotations

import streamlit as st

from services.employees import find_employees
from services.store import EmployeeSummary
from ui.context import desk
from ui.format import mobile, points
from ui.text import code, md


def _name(summary: EmployeeSummary) -> str:
    return " ".join(part for part in (summary.title, summary.first_name) if part) or "Unnamed"


def _label(summary: EmployeeSummary) -> str:
    """One match in the list. The card id goes first: a phone cuts the end of a long label, and
    the card id is what tells two people with the same name apart."""
    return (
        f"{summary.card_id} · {_name(summary)} · {summary.email or '—'} · {mobile(summary.mobile)}"
    )


def employee_picker(key: str, *, disabled: bool = False) -> EmployeeSummary | None:
    """A search box and a list of matching cards; returns the chosen card (or None)."""
    query = st.text_input(
        "Find the employee",
        key=f"{key}_query",
        placeholder="Name, email, mobile or card id",
        disabled=disabled,
    )
    if not query.strip():
        st.caption("Type at least part of a name, email, mobile number or card id.")
        return None
    the_desk = desk()
    with the_desk.client() as client:
        matches, note = find_employees(the_desk.ledger, client, query)
    if note:
        st.caption(md(note))
    if not matches:
        st.info("No employee matches that. Accounts are opened on the **Create account** page.")
        return None
    by_card = {summary.card_id: summary for summary in matches}
    # Chosen for the manager only when there is nothing to choose between: with several matches
    # a preselected card would be a guess at who gets (or loses) the points. Set through the
    # widget's state, so a choice left from an earlier search never outlives its matches.
    if st.session_state.get(f"{key}_card") not in by_card:
        st.session_state[f"{key}_card"] = next(iter(by_card)) if len(by_card) == 1 else None
    card_id = st.selectbox(
        f"{len(matches)} match{'es' if len(matches) != 1 else ''}",
        list(by_card),
        index=None,
        placeholder="Choose the employee",
        format_func=lambda card: _label(by_card[card]),
        key=f"{key}_card",
        disabled=disabled,
    )
    chosen = by_card.get(card_id) if card_id else None
    if chosen is not None:
        with st.container(border=True):
            left, right = st.columns(2)
            left.markdown(f"**{md(_name(chosen))}**  \nCard {code(chosen.card_id)}")
            right.metric("Known balance", points(chosen.balance))
    return chosen
