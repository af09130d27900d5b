"""Credit: add points to an existing employee card."""

import streamlit as st

from services.models import Kind
from ui.access import require
from ui.movement import render_movement
from ui.sidebar import mode_banner

mode_banner()
require("move")
st.title("Credit points")
st.caption("Top up an existing incentive card from the company pool.")
render_movement(Kind.CREDIT)
