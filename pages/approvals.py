"""Approvals: large debits and batches wait here for a second person (maker-checker)."""

import streamlit as st

from services import approvals
from ui.access import require
from ui.approvals import decided_table, last_result, open_sandbox, request_card
from ui.context import desk
from ui.format import points
from ui.sidebar import mode_banner

mode_banner()
require("approve")
st.title("Approvals")
settings = desk().settings
st.caption(
    f"Debits above {points(settings.points_desk_approval_debit_threshold, decimals=False)} points "
    f"and batches above {points(settings.points_desk_approval_batch_threshold, decimals=False)} "
    "points (or holding such a debit) wait here. Nothing is sent until it is approved, "
    + (
        "and in this open sandbox (no sign-in) you may decide your own requests."
        if open_sandbox()
        else "and whoever asked cannot approve their own request."
    )
)

last_result()

waiting = approvals.pending(desk().ledger)
st.subheader(f"Waiting for a decision ({len(waiting)})")
if not waiting:
    st.info("Nothing is waiting for approval.", icon="✅")
for approval in waiting:
    request_card(approval)

decided = approvals.decided(desk().ledger, limit=20)
if decided:
    st.subheader("Recently decided")
    decided_table(decided)
