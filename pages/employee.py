"""Employee: one card, its holder, its balance (Points Desk's and EnKash's), every movement, and
credit or debit it. Reached from the sidebar search or a link (``/employee?card=...``)."""

import streamlit as st

from ui.access import require
from ui.employee import render_employee
from ui.sidebar import mode_banner

mode_banner()
require("view")
render_employee(st.query_params.get("card", ""))
