"""Debit: take points back from an employee card (unallocate)."""

import streamlit as st

from services import allocations
from services.models import Kind
from ui.access import require
from ui.context import desk
from ui.format import figure
from ui.movement import render_movement
from ui.sidebar import mode_banner

mode_banner()
require("move")
st.title("Debit points")
st.caption("Take points back from an incentive card into the company pool.")
threshold = allocations.debit_threshold(desk().settings)
st.caption(
    "Every debit waits for a second person's approval before it is sent."
    if not threshold
    else f"Debits above {figure(threshold)} points wait for a second person's approval "
    "before anything is sent.",
    help="An approver decides on the Approvals page; nothing moves until then.",
)
render_movement(Kind.DEBIT)
