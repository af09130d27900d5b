"""The per-process Desk and the per-browser-session facts pages need (operator, session id)."""

from __future__ import annotations

import logging
import uuid

import streamlit as st

from services.config import ConfigError
from services.desk import Desk
from ui.text import md

log = logging.getLogger("points_desk.ui")


@st.cache_resource(show_spinner="Starting Points Desk…")
def _desk() -> Desk:
    # Shared by every session and thread: Desk is thread-safe (see services/desk.py).
    return Desk()


def desk() -> Desk:
    """The running Desk; on a configuration error, say what to fix and stop the page."""
    try:
        return _desk()
    except ConfigError as error:
        st.error(f"Points Desk cannot start: {md(error)}", icon="⚙️")
        st.stop()
        raise  # unreachable; st.stop raises


def operator() -> str:
    """Who is acting, as ledger rows and audit events record it: the signed-in person's id
    (local username or OIDC email), or the OS user in a sandbox running without sign-in.

    The sign-in gate in ``app.py`` sets the person before any page runs; without one, nothing
    may be recorded, so the page stops.
    """
    person = st.session_state.get("_person")
    if person is None:
        st.error("You are not signed in. Reload the page to sign in.", icon="🔒")
        st.stop()
    return person.id


def session_id() -> str:
    """A stable id for this browser session, recorded on every row it creates."""
    if "session_id" not in st.session_state:
        st.session_state["session_id"] = uuid.uuid4().hex[:16]
    return st.session_state["session_id"]
