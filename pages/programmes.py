"""Programmes: budgets that credits draw from. Everyone sees them; operators and approvers
manage them."""

import streamlit as st

from ui.access import allowed, require
from ui.context import desk
from ui.format import points
from ui.programmes import (
    edit_programme,
    new_programme,
    programme_table,
    statement_downloads,
)
from ui.sidebar import mode_banner

mode_banner()
require("view")
st.title("Programmes")
raise_limit = points(desk().settings.points_desk_approval_batch_threshold, decimals=False)
st.caption(
    "Each credit draws from a programme's budget; a debit gives its points back. A closed or "
    "ended programme takes no new credits, and its history stays. A change that loosens a money "
    f"rule waits for a second person on the Approvals page: a budget more than {raise_limit} "
    "points above the one last approved (from 0 for a new programme; a new one with no limit "
    "waits too), or a debit approval limit or monthly limit per operator raised or removed."
)
programme_table()
statement_downloads()
if allowed("move") or allowed("approve"):
    new_tab, edit_tab = st.tabs(["New programme", "Edit or close"])
    with new_tab:
        new_programme()
    with edit_tab:
        edit_programme()
