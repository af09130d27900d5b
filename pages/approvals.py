"""Approvals: large debits, credits past a monthly limit, reversals, batches and changes that
loosen a programme's money rules wait here for a second person (maker-checker)."""

import streamlit as st

from services import approvals, schedules
from services.numbers import plural
from ui.access import require
from ui.approvals import decided_table, last_result, open_sandbox, request_card
from ui.context import desk
from ui.format import points
from ui.sidebar import mode_banner

mode_banner()
require("approve")
st.title("Approvals")
settings = desk().settings
debit_limit = points(settings.points_desk_approval_debit_threshold, decimals=False)
batch_limit = points(settings.points_desk_approval_batch_threshold, decimals=False)
st.caption(
    f"Debits above {debit_limit} points (or their programme's own limit), credits past an "
    f"operator's monthly limit, reversals, batches above {batch_limit} points (or holding such "
    "a debit or credits) and programme changes that loosen a money rule wait here. Nothing is "
    "sent or changed until it is approved, "
    + (
        "and in this open sandbox (no sign-in) you may decide your own requests."
        if open_sandbox()
        else "and whoever asked cannot approve their own request."
    )
)

last_result()
schedules_waiting = schedules.waiting_count(desk().ledger)
if schedules_waiting:
    # Schedules are approved where they are read (their runs, rows and changes): say so here.
    st.info(
        f"{plural(schedules_waiting, 'schedule decision')} (a new schedule, an edit of its future "
        f"runs, or a late run) {'waits' if schedules_waiting == 1 else 'wait'} on the Schedules "
        "page.",
        icon="🗓️",
    )
    st.page_link("pages/schedules.py", label="Open Schedules", icon="🗓️")

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
