"""Active alerts as a banner list on the Overview (services/alerts.py), with where each one's
delivery stands."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import streamlit as st

from services import alerts
from ui.context import desk
from ui.text import md

MAX_PER_KIND = 3
_ICONS = {
    "pool_low": "🪫",
    "runway": "⏳",
    "run_wont_fit": "📉",
    "run_failed": "🛑",
    "unknown_old": "❓",
}


def current_alerts(pool_balance: Decimal | None) -> alerts.Evaluation:
    """The alert rules over what is known now (the page evaluates; the worker delivers)."""
    the_desk = desk()
    return alerts.evaluate(
        the_desk.ledger, the_desk.settings, pool_balance=pool_balance, now=datetime.now(UTC)
    )


def alert_banner(found: alerts.Evaluation) -> None:
    """One line per active alert, most pressing kind first; nothing when all is well."""
    if not found.alerts:
        return
    the_desk = desk()
    names = list(alerts.channels(the_desk.settings))
    states = {s.key: s for s in the_desk.ledger.alert_states(active_only=True)}
    said = alerts.describe(states.values(), names)
    order = {kind: i for i, kind in enumerate(alerts.KINDS)}
    shown: dict[str, int] = {}
    hidden: dict[str, int] = {}
    banners: list[tuple[alerts.Alert, str]] = []
    for alert in sorted(found.alerts, key=lambda a: (order.get(a.kind, 99), a.key)):
        # A long list of runs would bury the rest: a few of each kind, then how many more.
        shown[alert.kind] = shown.get(alert.kind, 0) + 1
        if shown[alert.kind] > MAX_PER_KIND:
            hidden[alert.kind] = hidden.get(alert.kind, 0) + 1
            continue
        if not names:
            delivery = "shown here only: no webhook or e-mail is configured"
        elif alert.key in said:
            delivery = said[alert.key]
        else:
            delivery = "not delivered yet: a worker sends it at its next alerts pass"
        banners.append((alert, delivery))
    # Where delivery stands is said once when it is the same for every alert shown, not
    # repeated under each banner.
    once = len({delivery for _, delivery in banners}) == 1
    for alert, delivery in banners:
        st.warning(f"**{md(alert.title)}**  \n{md(alert.detail)}", icon=_ICONS.get(alert.kind, "⚠️"))
        if not once:
            st.caption(md(delivery))
    for kind, more in hidden.items():
        st.warning(
            f"… and {more:,} more alerts like these"
            + (" (every run is listed under Runway below)." if kind == "run_wont_fit" else "."),
            icon=_ICONS.get(kind, "⚠️"),
        )
    if once:
        words = banners[0][1]
        st.caption(md(f"Every alert above: {words}" if len(banners) > 1 else words))
