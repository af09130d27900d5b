"""The sidebar every page shares: mode, who is signed in (and sign out), pool balance."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import streamlit as st

from services import approvals
from services.enkash import EnkashError
from services.models import AccountDetails, Status
from ui.access import require_signed_in
from ui.auth import current_person, sign_out
from ui.context import desk
from ui.format import ist, points
from ui.text import md

_POOL_TTL_SECONDS = 15


def pool_details(*, fresh: bool = False) -> AccountDetails | None:
    """The company pool from EnKash, cached briefly per session; None when EnKash cannot say."""
    cached = st.session_state.get("_pool")
    if not fresh and cached and time.monotonic() - cached[0] < _POOL_TTL_SECONDS:
        return cached[1]
    try:
        with desk().client() as client:
            details = client.account_details()
    except EnkashError:
        details = None
    st.session_state["_pool"] = (time.monotonic(), details, datetime.now(UTC))
    return details


def pool_read_at() -> datetime | None:
    """When the pool balance shown was read from EnKash (UTC)."""
    cached = st.session_state.get("_pool")
    return cached[2] if cached else None


def forget_pool() -> None:
    """After points move, the next read of the pool goes to EnKash."""
    st.session_state.pop("_pool", None)


def mode_banner() -> None:
    """The first line of every page: refuses a session the sign-in gate has not let in, then
    says whether real points move."""
    require_signed_in()
    if desk().is_sandbox:
        st.badge("Sandbox — no real points move", icon="🧪", color="orange")


def render_sidebar(slot=None) -> None:
    """Mode, operator and pool balance, in ``slot`` (a sidebar container) or the sidebar."""
    the_desk = desk()
    with slot if slot is not None else st.sidebar:
        if the_desk.is_sandbox:
            st.badge(
                "Sandbox",
                icon="🧪",
                color="orange",
                help="Embedded EnKash sandbox: no real points move.",
            )
        else:
            st.badge("Live EnKash", icon="🟢", color="green")
        person = current_person()
        if person is not None and person.method == "sandbox":
            st.caption(f"**{md(person.display_name)}** · no sign-in (sandbox)")
        elif person is not None:
            roles = ", ".join(sorted(person.roles)) or "no role"
            st.caption(f"Signed in as **{md(person.display_name)}** · {md(roles)}")
            st.button("Sign out", key="sidebar_sign_out", on_click=sign_out, type="tertiary")
        _pool_block()


def _pool_block() -> None:
    """The pool balance, when it was read, and a button to read it again: it moves with other
    people's transactions and batches, so it says its age instead of looking current forever."""
    details = pool_details()
    st.metric(
        "Pool balance",
        points(details.available_balance) if details else "unavailable",
        help="Points left in the company's EnKash reward account to credit from. Read from "
        f"EnKash at most every {_POOL_TTL_SECONDS} s while you use the dashboard.",
    )
    line = st.container(horizontal=True, vertical_alignment="center", gap="small")
    line.caption(f"as of {ist(pool_read_at(), '%H:%M:%S IST')}", width="content")
    line.button(
        "",
        icon=":material/refresh:",
        key="sidebar_pool_refresh",
        help="Read the pool balance from EnKash now",
        on_click=forget_pool,
        type="tertiary",
    )


def waiting_counts() -> dict[str, int]:
    """Pages with something waiting for a person: requests to decide, outcomes to settle."""
    the_desk = desk()
    return {
        "pages/approvals.py": approvals.pending_count(the_desk.ledger),
        "pages/reconcile.py": the_desk.ledger.count([Status.UNKNOWN]),
    }
