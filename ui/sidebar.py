"""The sidebar every page shares: mode, who is signed in (and sign out), pool balance."""

from __future__ import annotations

import threading
import time
import weakref
from datetime import UTC, datetime

import streamlit as st

from services import approvals, schedules
from services.enkash import EnkashError
from services.models import AccountDetails, Status
from ui import first_paint
from ui.access import allowed, require_signed_in
from ui.auth import current_person, sign_out
from ui.context import desk
from ui.format import ist, points
from ui.search import follow_search, search_box
from ui.text import md

_SEARCH_HEIGHT = 68  # pixels: the search box with its label, kept free until it is drawn
# Per Desk (weakly: a closed Desk's pool goes with it): (when, details, read at).
_SHARED_POOL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SHARED_POOL_LOCK = threading.Lock()
# Per Desk: held while one session asks EnKash for the pool; the others wait for its answer.
_POOL_READS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pool_details(*, fresh: bool = False) -> AccountDetails | None:
    """The company pool from EnKash; None when EnKash cannot say.

    The pool is the company's, not the person's: one look-up serves every session of this
    process for ``POINTS_DESK_POOL_CACHE_SECONDS`` (a new session opens without waiting for
    EnKash), and points moved here forget it at once (``forget_pool``). ``fresh`` asks EnKash.
    Sessions that need it at the same moment share one look-up: while one asks EnKash, the
    others wait for its answer instead of each asking.
    """
    the_desk = desk()
    ttl = the_desk.settings.points_desk_pool_cache_seconds
    asked = time.monotonic()
    with _SHARED_POOL_LOCK:
        cached = _SHARED_POOL.get(the_desk)
        reading = _POOL_READS.setdefault(the_desk, threading.Lock())
    if not fresh and cached and asked - cached[0] < ttl:
        return cached[1]
    with reading:
        with _SHARED_POOL_LOCK:
            cached = _SHARED_POOL.get(the_desk)
        # Another session read it meanwhile: since the last move (forget_pool empties the
        # cache, and a read that a move overtook is not kept); asked afresh, after this asked.
        if cached and (cached[3] >= asked if fresh else time.monotonic() - cached[0] < ttl):
            return cached[1]
        started, generation = time.monotonic(), _FORGOTTEN[0]
        try:
            with the_desk.client() as client:
                details = client.account_details()
        except EnkashError:
            return None  # not kept: the next page asks again
        with _SHARED_POOL_LOCK:
            if _FORGOTTEN[0] == generation:  # not if points moved while EnKash was asked
                _SHARED_POOL[the_desk] = (time.monotonic(), details, datetime.now(UTC), started)
    return details


def pool_read_at() -> datetime | None:
    """When the pool balance shown was read from EnKash (UTC)."""
    with _SHARED_POOL_LOCK:
        cached = _SHARED_POOL.get(desk())
    return cached[2] if cached else None


_FORGOTTEN = [0]  # how many times the pool was forgotten (points moved) in this process


def forget_pool() -> None:
    """After points move, the next read of the pool (in any session) goes to EnKash."""
    with _SHARED_POOL_LOCK:
        _SHARED_POOL.clear()
        _FORGOTTEN[0] += 1


def pool_generation() -> int:
    """Changes whenever ``forget_pool`` runs: the pool shown before then may be out of date."""
    return _FORGOTTEN[0]


def mode_banner() -> None:
    """The first line of every page: refuses a session the sign-in gate has not let in, then
    says whether real points move."""
    require_signed_in()
    follow_search()  # a search that found one transaction or one employee opens it
    if desk().is_sandbox:
        st.badge("Sandbox — no real points move", icon="🧪", color="orange")


def render_sidebar(slot=None):
    """Search's place, mode, operator and pool balance, in ``slot`` (a sidebar container) or
    the sidebar. Returns the pool's slot, for ``render_pool`` to redraw once points have moved,
    and the search box's, for ``render_search`` once the page has run."""
    the_desk = desk()
    with slot if slot is not None else st.sidebar:
        search = st.empty()
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
        pool = st.empty()
    render_pool(pool)
    return pool, search


def render_search(slot) -> None:
    """The search box, in its place at the top of the sidebar (an ``st.empty``).

    Drawn after the page, and left out of a page's first drawing in a session whose charts
    come a moment later (``ui/first_paint.py``): a fresh browser fetches the scripts of every
    kind of element before it draws them, and the text box's are about twenty files, fetched
    before the figures' own. The run with the charts draws it, 2 s later."""
    if first_paint.armed():
        if allowed("view"):
            slot.container(height=_SEARCH_HEIGHT, border=False)  # its place: nothing jumps
        return
    with slot.container():
        search_box()


def render_pool(slot, *, again: bool = False) -> None:
    """The pool balance, when it was read, and a button to read it again, in ``slot`` (an
    ``st.empty``), replacing what it showed. It moves with other people's transactions and
    batches, so it says its age instead of looking current forever. ``again``: a second drawing
    in the same run (its button needs a key of its own)."""
    details = pool_details()
    ttl = desk().settings.points_desk_pool_cache_seconds
    read_at = pool_read_at()
    with slot.container():
        st.metric(
            "Pool balance",
            points(details.available_balance) if details else "unavailable",
            help="Points left in the company's EnKash reward account to credit from. Read from "
            f"EnKash at most every {ttl:g} s while you use the dashboard.",
        )
        line = st.container(horizontal=True, vertical_alignment="center", gap="small")
        line.caption(
            f"as of {ist(read_at, '%H:%M:%S IST')}" if read_at else "not read yet",
            width="content",
        )
        line.button(
            "",
            icon=":material/refresh:",
            key="sidebar_pool_refresh_again" if again else "sidebar_pool_refresh",
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
        "pages/schedules.py": schedules.waiting_count(the_desk.ledger),
    }
