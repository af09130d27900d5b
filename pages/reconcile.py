"""Reconcile: settle unknown outcomes, resend what EnKash never got, investigate, check drift."""

import streamlit as st

from ui.access import require
from ui.glossary import status_glossary
from ui.reconcile import render_drift, render_mismatches, render_results, render_unknowns
from ui.sidebar import mode_banner

mode_banner()
require("move")
st.title("Reconcile")
st.caption(
    "Transactions whose outcome EnKash left unknown, replies that named another reference, and "
    "card balances that do not match EnKash."
)
status_glossary("reconcile_glossary")
render_results()

st.subheader("Unknown outcomes")
render_unknowns()

st.subheader("Reference mismatches")
st.caption(
    "EnKash confirmed these for a different reference than the one sent. They are never resent; "
    "ask EnKash which transaction each reply belonged to."
)
render_mismatches()

st.subheader("Drift check")
render_drift()
