"""Who may open which page. Every page declares the capability it needs; see ``app.py``.

Capabilities: ``view`` (overview, history, export), ``move`` (create, credit, debit, bulk,
reconcile) and ``approve`` (the approval queue). Roles grant them (``services.auth``): viewer
views; operator views and moves; approver views and approves. ``app.py`` registers only the pages
a person may open, and each page also calls ``require`` first, so a page reached some other way
still refuses.
"""

from __future__ import annotations

import contextlib

import streamlit as st
from streamlit.errors import StreamlitAPIException

from services.auth import CAPABILITY_ROLES
from ui.auth import current_person

CAPABILITIES = tuple(CAPABILITY_ROLES)

_NEEDS = {
    "view": "a viewer, operator or approver role",
    "move": "the operator role",
    "approve": "the approver role",
}


def allowed(capability: str) -> bool:
    """Whether the person using this session may use pages needing ``capability``."""
    if capability not in CAPABILITY_ROLES:
        raise ValueError(f"unknown capability {capability!r}")
    person = current_person()
    return person is not None and person.can(capability)


def require_signed_in() -> None:
    """Stop a page unless the sign-in gate let this session in (``mode_banner`` calls this).

    The gate in ``app.py`` runs before every page, except on the first run after the server
    starts: Streamlit then treats ``pages/`` as an old-style multipage folder and runs a
    deep-linked page (say ``/debit``) on its own. Such a run is sent through the gate.
    """
    if current_person() is not None:
        return
    with contextlib.suppress(StreamlitAPIException):  # app.py is not a page (AppTest)
        st.switch_page("app.py")
    st.error("Sign in first: open Points Desk's home page.", icon="🔒")
    st.stop()


def require(capability: str) -> None:
    """First line of a page: refuse (with a message) and stop unless the person may use it."""
    require_signed_in()
    if not allowed(capability):
        st.error(
            f"This page needs {_NEEDS[capability]}. Ask whoever runs Points Desk if you "
            "should have it.",
            icon="🔒",
        )
        st.stop()
