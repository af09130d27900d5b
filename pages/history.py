"""History: how many points went out, to whom, when, and what is left; a file for finance."""

import streamlit as st

from services.history import cumulative
from ui import charts
from ui.access import require
from ui.context import desk, session_id
from ui.format import plural, points
from ui.glossary import status_glossary
from ui.history import (
    aggregates,
    by_programme,
    count_metric,
    detail_view,
    export_buttons,
    filter_bar,
    grouped_by_programme,
    metric_row,
    money_metric,
    open_clicked_row,
    page_of,
    transactions_table,
)
from ui.search import focused_row
from ui.sidebar import mode_banner

_CHART_CONFIG = {"displayModeBar": False}

mode_banner()
require("view")
st.title("History")

ledger = desk().ledger
open_clicked_row()  # a row clicked in the table below opens here, as ?ref=...
focus = focused_row(ledger)  # ?ref=... (the sidebar search, an outcome card's link)
if focus is not None:
    st.subheader("Transaction")
    st.session_state["history_detail"] = st.session_state["_history_focus"] = focus.reference
    detail_view(ledger, [focus])
    st.page_link("pages/history.py", label="All transactions", icon="📈")
elif st.session_state.pop("_history_focus", None) is not None:
    st.session_state.pop("history_detail", None)  # the table's own choice starts empty
chosen, grain = filter_bar(ledger, session_id())
if chosen is None:
    st.stop()

data = aggregates(ledger, chosen, grain)
now, before = data.current, data.previous
if before is not None:
    st.caption(
        f"{chosen.days} day{'s' if chosen.days != 1 else ''} from "
        f"{chosen.start:%d %b %Y} to {chosen.end:%d %b %Y} (IST), compared with the "
        f"{chosen.days} days before. Points count succeeded transactions only."
    )
row = metric_row()
money_metric(row, "Credited", now.credited, before and before.credited)
money_metric(row, "Debited", now.debited, before and before.debited, colour="off")
money_metric(row, "Net issued", now.net, before and before.net)
count_metric(
    row,
    "Employees",
    now.employees,
    before and before.employees,
    help="Cards with at least one succeeded transaction in the period.",
)
count_metric(
    row,
    "Transactions",
    now.transactions,
    before and before.transactions,
    help="Every transaction the filters match, whatever its status.",
)

moved, issued = st.columns(2)
with moved:
    st.subheader("Points moved")
    st.plotly_chart(
        charts.movement_figure(data.series, grain),
        key="chart_movement",
        config=_CHART_CONFIG,
    )
with issued:
    st.subheader("Net points issued")
    st.plotly_chart(
        charts.cumulative_figure(cumulative(data.series, data.opening), grain, data.opening),
        key="chart_cumulative",
        config=_CHART_CONFIG,
    )
    st.caption(f"All time, including {points(data.opening)} issued before the period.")

if grouped_by_programme():
    by_programme(ledger, chosen, grain)

held, outcomes = st.columns(2)
with held:
    st.subheader("What is left on the cards")
    if data.balances.cards:
        st.plotly_chart(
            charts.balances_figure(data.balances), key="chart_balances", config=_CHART_CONFIG
        )
        if note := charts.others_note(data.balances):
            st.caption(note)
        cards, unknown = data.balances.cards, data.balances.unknown
        st.caption(
            f"{plural(cards, 'card')} {'holds' if cards == 1 else 'hold'} "
            f"{points(data.balances.total)} points (known balances at the end of the period)."
            + (f" {plural(unknown, 'balance')} not known." if unknown else "")
        )
    else:
        st.info("No card has a known balance yet.")
with outcomes:
    st.subheader("Outcomes")
    if now.transactions:
        st.plotly_chart(
            charts.status_figure(data.statuses), key="chart_statuses", config=_CHART_CONFIG
        )
    else:
        st.info("No transactions match these filters.")

st.subheader("Transactions")
status_glossary("history_glossary")
if st.session_state.get("_history_key") != chosen.key():
    st.session_state["_history_key"] = chosen.key()
    st.session_state["history_page"] = 1
    st.session_state["_history_cursors"] = {}  # where pages start belongs to one filter
shown = page_of(ledger, chosen, int(st.session_state.get("history_page", 1)))
st.caption("Click a row to open its detail at the top of the page.")
transactions_table(shown.rows)
pager, summary = st.columns([1, 4], vertical_alignment="bottom")
pager.number_input("Page", min_value=1, max_value=shown.pages, step=1, key="history_page")
summary.caption(
    f"Page {shown.number} of {shown.pages:,} · {shown.total:,} transactions, newest first"
)
export_buttons(ledger, chosen, shown.total)
if focus is None:
    detail_view(ledger, shown.rows)
