"""Overview: the pool at EnKash, this month's movements against last month's, and two charts."""

import streamlit as st

from ui.access import allowed, require
from ui.alerts import alert_banner, current_alerts
from ui.context import desk
from ui.format import count, points
from ui.sidebar import forget_pool, mode_banner, pool_details

_CHART_CONFIG = {"displayModeBar": False}

mode_banner()
require("view")
st.title("Overview")

the_desk = desk()
details = pool_details()

pool, cards, month = st.columns(3)
if details is None:
    pool.metric("Pool balance", "unavailable", help="EnKash did not answer the account lookup.")
else:
    pool.metric(
        "Pool balance",
        points(details.available_balance),
        border=True,
        help="Points left in the company's reward account at EnKash, to credit from.",
    )
    cards.metric(
        "Cards at EnKash",
        count(details.total_cards),
        border=True,
        help=f"{count(details.active_cards)} active; together they hold "
        f"{points(details.available_card_balance)} points.",
    )
    month.metric(
        "Allocated this month at EnKash",
        points(details.current_month_allocation),
        border=True,
        help="What EnKash counts as allocated from the pool this calendar month, by any tool "
        "(Points Desk, EnKash's portal, other integrations), so it can differ from Points Desk's "
        "own figures below. Separately, employees redeemed "
        f"{points(details.current_month_redemption)} points this month.",
    )

found_alerts = current_alerts(details.available_balance if details is not None else None)
alert_banner(found_alerts)

# What the rest of the page needs (pandas, Plotly's figures, the bulk flow behind the demo data)
# is imported only now: on a fresh server these imports take a second or more, and the title and
# the pool are already on their way to the browser meanwhile.
from services import demo  # noqa: E402
from ui import charts, first_paint  # noqa: E402
from ui.history import (  # noqa: E402
    count_metric,
    metric_row,
    money_metric,
    month_to_date,
    recent_months,
)
from ui.notice import set_notice, show_notices  # noqa: E402
from ui.programmes import overview_cards  # noqa: E402
from ui.runway import runway_section  # noqa: E402
from ui.sandbox_faults import fault_controls  # noqa: E402

now, before, period = month_to_date(the_desk.ledger)
st.subheader("This month in Points Desk")
st.caption(
    f"{period} (IST), compared with the same days last month: only transactions made in Points "
    "Desk, succeeded ones for points."
)
row = metric_row()
money_metric(row, "Credited", now.credited, before.credited)
money_metric(row, "Debited", now.debited, before.debited, colour="off")
money_metric(row, "Net issued", now.net, before.net)
count_metric(
    row,
    "Employees",
    now.employees,
    before.employees,
    help="Cards with at least one succeeded transaction this month.",
)
count_metric(
    row,
    "Transactions",
    now.transactions,
    before.transactions,
    help="Every transaction recorded, whatever its outcome.",
)

recent = recent_months(the_desk.ledger, months=6)
charts_later = first_paint.later("overview")  # the numbers above first, then the charts
moved, held = st.columns(2)
with moved:
    st.subheader("Points moved per month")
    if charts_later:
        first_paint.placeholder()
    else:
        st.plotly_chart(
            charts.movement_figure(recent.series, recent.grain),
            key="overview_movement",
            config=_CHART_CONFIG,
        )
with held:
    st.subheader("Largest balances")
    if not recent.balances.cards:
        st.info("No card has a known balance yet. Create an account to get started.")
    elif charts_later:
        first_paint.placeholder()
    else:
        st.plotly_chart(
            charts.balances_figure(recent.balances), key="overview_balances", config=_CHART_CONFIG
        )
        if note := charts.others_note(recent.balances):
            st.caption(note)
if charts_later:
    # Below the charts, the runway and the programmes come with the charts too: a fresh browser
    # loads the scripts of their tables before it shows even the pool (~0.15 s on a first visit).
    first_paint.placeholder(height=120)
else:
    st.page_link("pages/history.py", label="Full history, filters and export", icon="📈")
    runway_section(found_alerts.runway, chart_later=False)
    overview_cards()

# The sandbox's own tools come with the charts, not in a session's first drawing: a fresh browser
# loads the scripts of their inputs before it shows the page, and held the pool back by ~0.2 s.
if the_desk.is_sandbox and allowed("move") and not charts_later:
    with st.expander("Sandbox tools"):
        show_notices()
        st.caption(
            "Load demo data: a believable programme sent through the real allocate flow to the "
            "sandbox (monthly files through the bulk runner, single credits and debits as the "
            "forms send them), then spread over the last six months. Reset clears the sandbox "
            "and the ledger together, so they never disagree."
        )
        size, load, reset = st.columns([1, 1, 1], vertical_alignment="bottom")
        people = size.number_input(
            "Employees", min_value=10, max_value=1000, value=300, step=10, key="demo_employees"
        )
        if load.button("Load demo data", key="load_demo", icon="🎲"):
            with st.spinner("Sending demo transactions to the sandbox…"):
                report = demo.load(
                    the_desk.ledger,
                    the_desk.new_client,
                    the_desk.settings,
                    the_desk.sandbox.store,
                    int(people),
                    runner=the_desk.runner,
                )
            st.cache_data.clear()
            forget_pool()
            set_notice(
                "success" if report.agrees else "warning",
                f"Loaded {report.transactions:,} transactions for {report.employees:,} employees "
                f"in {report.seconds:.1f} s; "
                + (
                    "sandbox and ledger balances agree."
                    if report.agrees
                    else f"{len(report.mismatched_cards)} card balances disagree!"
                ),
            )
            st.rerun()
        if reset.button("Reset sandbox", key="reset_sandbox"):
            the_desk.reset_sandbox()
            st.cache_data.clear()
            forget_pool()
            st.rerun()
        fault_controls()
