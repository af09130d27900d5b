"""The sidebar's search box: "what happened to X?" from every page.

A reference (or EnKash transaction id) opens History with that transaction's details
(``/history?ref=...``); an exact card id, email or mobile opens the employee's page
(``/employee?card=...``); a name or part of one lists the matches, each a link to its employee.
The search itself is ``services.search``; this module only renders it and follows its answer.
"""

from __future__ import annotations

import streamlit as st

from services import search
from services.search import Answer
from ui.access import allowed
from ui.context import desk
from ui.format import mobile
from ui.text import code, md

HISTORY = "pages/history.py"
EMPLOYEE = "pages/employee.py"
_KEY = "sidebar_search"
_RESULT = "_search_result"
_GOTO = "_search_goto"


def _run_search() -> None:
    """on_change of the box: search, then either go to what was found or keep the list."""
    query = st.session_state.get(_KEY, "")
    st.session_state.pop(_RESULT, None)
    if not query.strip():
        return
    the_desk = desk()
    with the_desk.client() as client:
        found = search.search(the_desk.ledger, client, query)
    if found.answer is Answer.TRANSACTION:
        st.session_state[_GOTO] = (HISTORY, {"ref": found.transaction.reference})
    elif found.answer is Answer.EMPLOYEE:
        st.session_state[_GOTO] = (EMPLOYEE, {"card": found.employee.card_id})
    else:
        st.session_state[_RESULT] = found
        return
    st.session_state[_KEY] = ""  # done: the box is ready for the next question


def follow_search() -> None:
    """First thing on every page (``mode_banner``): open what the last search found."""
    goto = st.session_state.pop(_GOTO, None)
    if goto is not None and allowed("view"):
        page, params = goto
        st.switch_page(page, query_params=params)


def _name(summary) -> str:
    return " ".join(part for part in (summary.title, summary.first_name) if part) or "Unnamed"


def search_box() -> None:
    """The box and, for a query that is not one exact thing, what it matches."""
    if not allowed("view"):
        return
    st.text_input(
        "Search",
        key=_KEY,
        on_change=_run_search,
        placeholder="Reference, card, mobile, email, name",
        help="A reference opens its transaction; a card id, email or mobile opens the "
        "employee; a name lists who matches. Press Enter to search.",
        icon=":material/search:",
    )
    found: search.SearchResult | None = st.session_state.get(_RESULT)
    if found is None:
        return
    if found.note:
        st.caption(md(found.note))
    if found.answer is Answer.NOTHING:
        what = "transaction with that reference" if found.kind == "reference" else "match"
        st.caption(f"No {what} for {md(found.query)}.")
        return
    st.caption(f"{len(found.employees)} match{'es' if len(found.employees) != 1 else ''}:")
    for summary in found.employees:
        st.page_link(
            EMPLOYEE,
            label=md(f"{_name(summary)} · {mobile(summary.mobile) or summary.email or ''}"),
            query_params={"card": summary.card_id},
            icon=":material/person:",
            help=f"Card {code(summary.card_id)}",
        )


def focused_row(ledger):
    """The transaction History was opened on (``?ref=...``), if it exists; else a note why."""
    reference = st.query_params.get("ref", "").strip()
    if not reference:
        return None
    row = ledger.get(reference)
    if row is None:
        st.warning(f"No transaction with reference {code(reference)} in Points Desk.")
    return row
