"""Points Desk: entry point. Page config, navigation, and the sidebar every page shares."""

from __future__ import annotations

import logging

import streamlit as st

from ui import first_paint
from ui.access import allowed
from ui.auth import sign_in_gate
from ui.phone import close_sidebar_after_navigation
from ui.sidebar import pool_generation, render_pool, render_search, render_sidebar, waiting_counts

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

st.set_page_config(page_title="Points Desk", page_icon="🎯", layout="wide")

# Sign-in gate: until the person may use the dashboard, the sign-in (or "not configured") page is
# the only page that exists, whatever URL was asked for.
gate_page = sign_in_gate()
if gate_page is not None:
    st.navigation([gate_page], position="hidden").run()
    st.stop()

# (section, file, title, icon, capability needed). One line per page; order is menu order.
PAGES = [
    ("", "pages/overview.py", "Overview", "📊", "view"),
    ("Insights", "pages/history.py", "History", "📈", "view"),
    ("Insights", "pages/programmes.py", "Programmes", "🎯", "view"),
    ("Move points", "pages/create_account.py", "Create account", "🆕", "move"),
    ("Move points", "pages/credit.py", "Credit", "➕", "move"),
    ("Move points", "pages/debit.py", "Debit", "➖", "move"),
    ("Move points", "pages/bulk.py", "Bulk allocation", "📦", "move"),
    ("Move points", "pages/schedules.py", "Schedules", "🗓️", "view"),
    ("Move points", "pages/reconcile.py", "Reconcile", "🧾", "move"),
    ("Approvals", "pages/approvals.py", "Approvals", "✅", "approve"),
    ("", "pages/employee.py", "Employee", "👤", "view"),
]
# Reached from the sidebar search and links (``/employee?card=...``), not from the menu.
HIDDEN = {"pages/employee.py"}

waiting = waiting_counts()  # what needs someone: shown next to the page's name
sections: dict[str, list[st.Page]] = {}
for section, path, title, icon, capability in PAGES:
    if allowed(capability):
        if waiting.get(path):
            title = f"{title} ({waiting[path]:,})"
        sections.setdefault(section, []).append(
            st.Page(
                path,
                title=title,
                icon=icon,
                default=path == "pages/overview.py",
                visibility="hidden" if path in HIDDEN else "visible",
            )
        )

page = st.navigation(sections)
close_sidebar_after_navigation(page.url_path)
# The sidebar first, so a new session sees the pool balance without waiting for the page; if
# the page moved points, the pool is drawn again afterwards with what the page just moved.
pool, search = render_sidebar(st.sidebar.container())
shown = pool_generation()
first_paint.begin_run()
try:
    page.run()
finally:
    if pool_generation() != shown:
        render_pool(pool, again=True)
    render_search(search)  # after the page: see render_search
