"""Debit: take points back from an employee card (unallocate)."""

import streamlit as st

from services.models import Kind
from ui.access import require
from ui.movement import render_movement
from ui.sidebar import mode_banner

mode_banner()
require("move")
st.title("Debit points")
st.caption("Take points back from an incentive card into the company pool.")
render_movement(Kind.DEBIT)
