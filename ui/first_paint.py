"""Charts after the figures: a session's first look at a page shows its numbers before its charts.

Streamlit's Plotly element is a 4.7 MB script that a fresh browser loads (and parses) the first
time a page draws a chart. Measured with benchmarks/sessions_open.py, that load held the
Overview's pool balance back until the charts were ready (on a busy 2-core machine: pool shown
after 18.5 s with the charts in the first drawing, 4.7 s without them). So the first run of a
page in a session leaves its charts out (``later`` says so and the page draws a placeholder), and
a timer in the browser asks for the page again ``FIRST_PAINT_SECONDS`` later; that run, and every
later one in the session, draws the charts. The timer is a fragment's ``run_every``: it fires once,
because the full rerun it asks for stops every timer and does not start this one again.
"""

from __future__ import annotations

import streamlit as st

#: How long after a page's first drawing in a session its charts are asked for: long enough for a
#: fresh browser to show the figures on a loaded machine (with 1 s the pool still waited for the
#: charts in one of two measured runs at load 10), short enough not to be missed at idle.
FIRST_PAINT_SECONDS = 2.0

_DRAWN = "_first_paint_done"  # session state: the pages whose charts this session may draw
_ARMED = "_first_paint_armed"  # session state: this run left its charts for the next one


def begin_run() -> None:
    """Called before a page runs: nothing is left for a next run yet."""
    st.session_state[_ARMED] = False


def armed() -> bool:
    """Whether this run left part of the page for the run its timer asks for (``later``)."""
    return bool(st.session_state.get(_ARMED))


def later(page: str) -> bool:
    """True when ``page`` should leave its charts out of this run (the session's first look at
    it): the browser asks for the page again, charts included, ``FIRST_PAINT_SECONDS`` later."""
    drawn: set[str] = st.session_state.setdefault(_DRAWN, set())
    if page in drawn:
        return False
    inline = [True]

    @st.fragment(run_every=FIRST_PAINT_SECONDS)
    def ask_again() -> None:
        if inline[0]:  # called by the page's own run: only arms the browser's timer
            inline[0] = False
            return
        drawn.add(page)
        st.rerun()  # the whole page, now with its charts; a full run stops the timer

    ask_again()
    st.session_state[_ARMED] = True
    return True


def placeholder(height: int = 320) -> None:
    """Where a chart will be, the height it will take, so the page does not jump when it comes."""
    with st.container(height=height, border=False):
        st.caption("Drawing the chart…")
