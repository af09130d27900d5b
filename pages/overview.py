"""Overview: the pool at EnKash and what Points Desk has moved."""

import streamlit as st

from ui.context import desk
from ui.format import points
from ui.sidebar import mode_banner, pool_details

mode_banner()
st.title("Overview")

the_desk = desk()
details = pool_details(fresh=True)
totals = the_desk.ledger.totals()

pool, cards, month = st.columns(3)
if details is None:
    pool.metric("Pool balance", "unavailable", help="EnKash did not answer the account lookup.")
else:
    pool.metric(
        "Pool balance",
        points(details.available_balance),
        border=True,
        help="Points left in the company's reward account.",
    )
    cards.metric(
        "Cards at EnKash",
        f"{details.total_cards:,}",
        border=True,
        help=f"{details.active_cards:,} active, holding "
        f"{points(details.available_card_balance)} points.",
    )
    month.metric(
        "Allocated this month",
        points(details.current_month_allocation),
        border=True,
        help=f"Redeemed this month: {points(details.current_month_redemption)}",
    )

st.subheader("Moved through Points Desk")
credited, debited, net, employees = st.columns(4)
credited.metric("Credited", points(totals["credited"]))
debited.metric("Debited", points(totals["debited"]))
net.metric("Net issued", points(totals["net"]))
employees.metric("Employees", f"{totals['employees']:,}")

if the_desk.is_sandbox:
    with st.expander("Sandbox tools"):
        st.caption("Clears the sandbox and the ledger together, so they never disagree.")
        if st.button("Reset sandbox", key="reset_sandbox"):
            the_desk.reset_sandbox()
            st.session_state.pop("_pool", None)
            st.rerun()
