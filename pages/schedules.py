"""Schedules: allocations sent later, once or every month or week, approved once by a second
person and sent by the workers (late runs wait here for a person)."""

import streamlit as st

from ui.access import allowed, require
from ui.schedules import edit_schedule, new_schedule, schedule_list
from ui.sidebar import mode_banner

mode_banner()
require("view")
st.title("Schedules")
st.caption(
    "A schedule sends its rows at an IST date and time, or monthly or weekly, from one programme. "
    "A second person approves it once (and each change); the workers then send every run, once."
)
schedule_list()
if allowed("move"):
    new_tab, edit_tab = st.tabs(["New schedule", "Edit future runs"])
    with new_tab:
        new_schedule()
    with edit_tab:
        edit_schedule()
