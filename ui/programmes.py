"""The programme a movement counts against: the select box the Create, Credit and Debit forms share.

The choice is remembered per person for the session: the next form opens on the programme the
person used last (General until they choose another).
"""

from __future__ import annotations

import streamlit as st

from services.store import GENERAL_CODE, Programme
from services.store.programmes import programme_id_for, today_ist
from ui.context import desk, operator
from ui.format import points


def _remembered_key() -> str:
    return f"programme_choice:{operator()}"


def open_programmes() -> list[Programme]:
    """Programmes that take movements today (General first)."""
    day = today_ist()
    ledger = desk().ledger
    found = ledger.list_programmes(["active"])
    if not any(p.code == GENERAL_CODE for p in found):
        # General is made by the migration; a sandbox reset may have removed it.
        with ledger.writing() as conn:
            programme_id_for(conn, None)
        found = ledger.list_programmes(["active"])
    return [p for p in found if p.open_on(day)]


def label(programme: Programme) -> str:
    """How a programme reads in a select box (shown as plain text by Streamlit's widgets)."""
    if programme.code == GENERAL_CODE:
        return f"{programme.name} (no budget limit)"
    left = programme.remaining
    shown = "no limit" if left is None else f"{points(left)} points left"
    return f"{programme.name} · {programme.code} · {shown}"


def programme_select(key: str, *, disabled: bool = False) -> str | None:
    """A select box of open programmes under widget key ``key``; returns the chosen code.

    Defaults to the programme this person chose last (General the first time)."""
    choices = open_programmes()
    by_code = {p.code: p for p in choices}
    codes = list(by_code)
    remembered = st.session_state.get(_remembered_key(), GENERAL_CODE)
    if st.session_state.get(key) not in by_code:
        st.session_state[key] = remembered if remembered in by_code else codes[0]
    chosen = st.selectbox(
        "Programme",
        codes,
        key=key,
        format_func=lambda code: label(by_code[code]),
        disabled=disabled,
        help="The programme whose budget these points count against.",
    )
    if chosen:
        st.session_state[_remembered_key()] = chosen
    return chosen
