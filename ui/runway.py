"""The Overview's runway: the pool projected 30/60/90 days forward, the day it runs out, the
scheduled runs that will not fit, and a small projection chart (services/runway.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from services import runway
from ui.charts import NET_COLOUR, indian_ticks
from ui.first_paint import placeholder
from ui.format import ist, points

_CHART_CONFIG = {"displayModeBar": False}


def runway_figure(daily: Sequence[tuple[date, Decimal]]) -> go.Figure:
    """The projected pool at the end of each IST day, with the zero line it must stay above."""
    x = [day for day, _ in daily]
    y = [float(balance) for _, balance in daily]
    figure = go.Figure()
    figure.add_scatter(
        x=x,
        y=y,
        name="Projected pool",
        mode="lines",
        line={"color": NET_COLOUR, "width": 2, "shape": "hv"},
        customdata=[points(Decimal(str(v))) for v in y],
        hovertemplate="%{x|%a %d %b %Y}<br>Projected pool %{customdata}<extra></extra>",
    )
    figure.add_hline(y=0, line={"color": "#C62828", "width": 1, "dash": "dot"})
    values, labels = indian_ticks(min(y, default=0.0), max(y, default=0.0), count=4)
    figure.update_layout(height=220, showlegend=False, margin={"l": 8, "r": 8, "t": 8, "b": 8})
    figure.update_yaxes(
        tickvals=values, ticktext=labels, range=[values[0], values[-1]], automargin=True
    )
    figure.update_xaxes(tickformat="%d %b", automargin=True)
    return figure


def _horizons(found: runway.Runway) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "Next": f"{h.days} days",
                "Scheduled runs": points(h.scheduled),
                "Other spending": points(h.burn),
                "Pool after": points(h.projected_balance),
            }
            for h in found.horizons
        ]
    ).set_index("Next")


def _shortfalls(found: runway.Runway) -> pd.DataFrame:
    # Plain-text cells: labels and programme names are shown as typed, never read as Markdown.
    table = pd.DataFrame(
        [
            {
                "Run": s.run.label,
                "Due": ist(s.run.due_at),
                "Points": points(s.run.total),
                "Pool short by": points(s.pool_shortfall) if s.pool_shortfall else "",
                "Programme": s.run.programme_code or "General",
                "Programme short by": points(s.programme_shortfall)
                if s.programme_shortfall
                else "",
                "Why": s.programme_note,
            }
            for s in found.shortfalls
        ]
    )
    # A column with nothing in it (no programme is short, say) only pushes the rest off a phone.
    empty = [c for c in ("Pool short by", "Programme short by", "Why") if not table[c].any()]
    return table.drop(columns=empty)


def _pace_words(found: runway.Runway) -> str:
    """How the projection spends the pool, in words that hold whatever the burn was (a burn
    below the schedules' own pace is not "a negative other spending")."""
    days = runway.BURN_DAYS
    if found.burn_per_day <= 0:
        return (
            f"the scheduled runs on their days, and no other spending (no points went out, net, "
            f"in the last {days} days)."
        )
    if not found.ad_hoc_per_day:
        return (
            f"the scheduled runs on their days, and no other spending: the last {days} days' "
            f"burn of {points(found.burn_per_day)} a day is within the schedules' own pace of "
            f"{points(found.scheduled_per_day)} a day."
        )
    return (
        f"the scheduled runs on their days, plus {points(found.ad_hoc_per_day)} points a day of "
        f"other spending (the last {days} days' burn of {points(found.burn_per_day)} a day, "
        f"less the schedules' own pace of {points(found.scheduled_per_day)} a day)."
    )


def _shortfall_words(found: runway.Runway) -> str:
    """'2 scheduled runs do not fit the pool:' naming only what they do not fit."""
    many = len(found.shortfalls)
    pool = any(s.pool_shortfall for s in found.shortfalls)
    budget = any(s.programme_shortfall for s in found.shortfalls)
    what = (
        "the pool or their programme's budget"
        if pool and budget
        else ("the pool" if pool or not budget else "their programme's budget")
    )
    if many == 1:
        what = what.replace("their", "its")
    return f"{many:,} scheduled " + ("run does" if many == 1 else "runs do") + f" not fit {what}:"


def runway_section(found: runway.Runway | None, *, chart_later: bool = False) -> None:
    """The runway, or a line saying why there is none (EnKash did not give the pool).
    ``chart_later``: the session's first drawing, the projection chart comes in the next run
    (``ui/first_paint.py``)."""
    st.subheader("Runway")
    if found is None:
        st.info("The runway needs the pool balance, and EnKash did not give it just now.")
        return
    st.caption(f"From the pool of {points(found.pool_balance)}: {_pace_words(found)}")
    table, chart = st.columns([2, 3])
    with table:
        st.table(_horizons(found))
        if found.runs_out_on is not None:
            st.markdown(
                f"At this pace the pool runs out on **{found.runs_out_on:%d %b %Y}** "
                f"(in {found.days_left} days)."
            )
        else:
            st.markdown(f"The pool lasts past the next {runway.HORIZONS[-1]} days at this pace.")
    with chart:
        if chart_later:
            placeholder()
        else:
            st.plotly_chart(runway_figure(found.daily), key="overview_runway", config=_CHART_CONFIG)
    if found.shortfalls:
        st.warning(_shortfall_words(found), icon="📉")
        st.dataframe(
            _shortfalls(found),
            hide_index=True,
            key="overview_runway_short",
            # On a phone the table scrolls sideways: the run's name stays in view.
            column_config={"Run": st.column_config.TextColumn(width="medium", pinned=True)},
        )
