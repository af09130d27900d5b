"""Plotly figures for the Overview and History pages, built from aggregated series only.

Each builder takes the small result of a ``services.history`` query (a point per day/week/month,
ten cards and "Others", five statuses), never ledger rows, so no chart sends more to the browser
than it shows. Points read in Indian grouping (12,34,567) on axes and in hovers; dates are IST.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal

import plotly.graph_objects as go

from services.history import Balances, Granularity, SeriesPoint, StatusCount
from services.models import Status
from ui.format import count, plural, points

CREDIT_COLOUR = "#2E7D32"
DEBIT_COLOUR = "#E65100"
NET_COLOUR = "#1565C0"
STATUS_COLOURS = {
    Status.SUCCEEDED: "#2E7D32",
    Status.FAILED: "#C62828",
    Status.UNKNOWN: "#F9A825",
    Status.SENDING: "#1565C0",
    Status.QUEUED: "#757575",
}
BUCKET_TITLE = {
    Granularity.DAY: "Day (IST)",
    Granularity.WEEK: "Week starting Monday (IST)",
    Granularity.MONTH: "Month (IST)",
}
_DATE_FORMAT = {Granularity.DAY: "%d %b", Granularity.WEEK: "%d %b", Granularity.MONTH: "%b<br>%Y"}
# Bars of a month grouping span their month, drawn from its first day to its last.
_PERIOD = {Granularity.MONTH: {"xperiod": "M1", "xperiodalignment": "middle"}}
_HOVER_DATE = {
    Granularity.DAY: "%{x|%a %d %b %Y}",
    Granularity.WEEK: "week of %{x|%d %b %Y}",
    Granularity.MONTH: "%{x|%B %Y}",
}


def indian_ticks(low: float, high: float, count: int = 5) -> tuple[list[float], list[str]]:
    """About ``count`` round tick values covering ``[low, high]``, labelled 12,34,567."""
    low, high = min(low, 0.0), max(high, 0.0)
    if high - low <= 0:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    values = []
    value = first
    while value <= high + step * 1e-9:
        values.append(round(value, 2))
        value += step
    if values[-1] < high:
        values.append(round(values[-1] + step, 2))
    return values, [points(v, decimals=step < 1) for v in values]


NO_MOVEMENTS = "No movements for these filters"


def _empty(figure: go.Figure, text: str = NO_MOVEMENTS) -> go.Figure:
    """A chart with nothing to draw says so, instead of an empty 0.00–1.00 axis."""
    figure.update_layout(
        height=200,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        showlegend=False,
        annotations=[
            {"text": text, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}
        ],
    )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


def _layout(figure: go.Figure, *, height: int = 320, y_title: str = "", x_title: str = "") -> None:
    figure.update_layout(
        height=height,
        # Room for the axis titles on a 390 px phone; automargin grows it for long tick labels.
        margin={"l": 16, "r": 16, "t": 30, "b": 16},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "title": None},
        bargap=0.15,
        hoverlabel={"namelength": -1},
    )
    figure.update_xaxes(title_text=x_title, automargin=True)
    figure.update_yaxes(title_text=y_title, automargin=True)


def movement_figure(series: Sequence[SeriesPoint], granularity: Granularity) -> go.Figure:
    """Credited above the axis, debited below it, one bar pair per IST bucket."""
    granularity = Granularity(granularity)
    x = [p.bucket for p in series]
    credited = [float(p.credited) for p in series]
    debited = [-float(p.debited) for p in series]
    figure = go.Figure()
    if not any(credited) and not any(debited):
        return _empty(figure)
    period = _PERIOD.get(granularity, {})
    figure.add_bar(
        **period,
        x=x,
        y=credited,
        name="Credited",
        marker_color=CREDIT_COLOUR,
        customdata=[points(p.credited) for p in series],
        hovertemplate=f"{_HOVER_DATE[granularity]}<br>Credited %{{customdata}}<extra></extra>",
    )
    figure.add_bar(
        **period,
        x=x,
        y=debited,
        name="Debited",
        marker_color=DEBIT_COLOUR,
        customdata=[points(p.debited) for p in series],
        hovertemplate=f"{_HOVER_DATE[granularity]}<br>Debited %{{customdata}}<extra></extra>",
    )
    figure.update_layout(barmode="relative")
    _layout(figure, y_title="Points (debits below 0)", x_title=BUCKET_TITLE[granularity])
    _date_axis(figure, x, granularity)
    values, labels = indian_ticks(min(debited, default=0), max(credited, default=0))
    figure.update_yaxes(tickvals=values, ticktext=labels, zeroline=True, zerolinecolor="#616161")
    return figure


def programme_figure(
    by_programme: Mapping[tuple[int, str, str], Sequence[SeriesPoint]], granularity: Granularity
) -> go.Figure:
    """Net points issued per IST bucket, one stacked bar colour per programme (a programme that
    took back more than it gave goes below the axis)."""
    granularity = Granularity(granularity)
    figure = go.Figure()
    if not any(p.credited or p.debited for s in by_programme.values() for p in s):
        return _empty(figure)
    period = _PERIOD.get(granularity, {})
    low = high = 0.0
    x: list[date] = []
    for (_, code, name), series in by_programme.items():
        x = [p.bucket for p in series]
        net = [float(p.net) for p in series]
        low, high = min(low, *net), max(high, *net)
        # Names are text people typed: plotly reads a few HTML tags in legends and hovers.
        shown = html.escape(f"{name} ({code})" if code else name)
        figure.add_bar(
            **period,
            x=x,
            y=net,
            name=shown,
            customdata=[points(p.net) for p in series],
            hovertemplate=(
                f"{_HOVER_DATE[granularity]}<br>%{{fullData.name}}: net %{{customdata}}"
                "<extra></extra>"
            ),
        )
    figure.update_layout(barmode="relative")
    _layout(figure, y_title="Net points issued", x_title=BUCKET_TITLE[granularity])
    _date_axis(figure, x, granularity)
    values, labels = indian_ticks(low, high)
    figure.update_yaxes(tickvals=values, ticktext=labels, zeroline=True, zerolinecolor="#616161")
    return figure


def _date_axis(figure: go.Figure, x: Sequence[date], granularity: Granularity) -> None:
    figure.update_xaxes(type="date", tickformat=_DATE_FORMAT[granularity])
    if granularity is Granularity.MONTH and x:
        # Each bar spans its whole month (xperiod) and the axis runs from the first month's first
        # day to the day after the last month, so the last month is neither cut nor unlabelled.
        figure.update_xaxes(
            dtick="M1",
            ticklabelmode="period",
            range=[x[0].isoformat(), _next_month(x[-1]).isoformat()],
        )
    elif len(x) == 1:  # a single bar would otherwise fill the whole width
        figure.update_xaxes(tickvals=list(x))


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def cumulative_figure(
    running: Sequence[tuple[date, Decimal]], granularity: Granularity, opening: Decimal
) -> go.Figure:
    """Net points issued so far (credited minus debited, all time) at the end of each bucket."""
    granularity = Granularity(granularity)
    x = [day for day, _ in running]
    y = [float(net) for _, net in running]
    figure = go.Figure()
    if not x or (not any(y) and not opening):
        return _empty(figure)
    figure.add_scatter(
        x=x,
        y=y,
        name="Net issued",
        mode="lines+markers" if len(x) <= 40 else "lines",
        line={"color": NET_COLOUR, "width": 2, "shape": "hv"},
        fill="tozeroy",
        customdata=[points(net) for _, net in running],
        hovertemplate=f"{_HOVER_DATE[granularity]}<br>Net issued %{{customdata}}<extra></extra>",
    )
    _layout(figure, y_title="Net points issued", x_title=BUCKET_TITLE[granularity])
    figure.update_layout(showlegend=False)
    _date_axis(figure, x, granularity)
    values, labels = indian_ticks(min([*y, float(opening)], default=0), max(y, default=0))
    figure.update_yaxes(tickvals=values, ticktext=labels, range=[values[0], values[-1]])
    return figure


def others_note(balances: Balances) -> str | None:
    """The cards beyond the largest, as words under the chart: their total is no bar next to
    single cards (it would run off the axis)."""
    if not balances.others_count:
        return None
    return (
        f"Other {plural(balances.others_count, 'card')} (not drawn) hold "
        f"{points(balances.others_total)} points in total."
    )


_NAME_CHARS = 22  # of a name on the balances chart's axis


def _shortened(text: str, most: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 1].rstrip() + "…"


def balances_figure(balances: Balances) -> go.Figure:
    """Largest balances first; the rest are a note under the chart (``others_note``)."""
    # Names are text people typed: plotly reads a few HTML tags in labels and hovers. A long one
    # is shortened on the axis (its margin grows to the longest label, leaving a phone no room
    # for the bars) and whole in the hover.
    full = [html.escape(f"{card.name} · {card.card_id[-4:]}") for card in balances.top]
    names = [
        html.escape(f"{_shortened(card.name, _NAME_CHARS)} · {card.card_id[-4:]}")
        for card in balances.top
    ]
    values = [float(card.balance) for card in balances.top]
    texts = [points(card.balance) for card in balances.top]
    colours = [NET_COLOUR] * len(values)
    figure = go.Figure()
    if not values:
        return _empty(figure, "No card has a known balance")
    figure = go.Figure(
        go.Bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=colours,
            text=texts,
            textposition="inside",
            insidetextanchor="start",
            textfont={"color": "white"},
            customdata=[[name, points(v)] for name, v in zip(full, values, strict=True)],
            hovertemplate="%{customdata[0]}<br>%{customdata[1]} points<extra></extra>",
        )
    )
    upper = max(values, default=0)
    _layout(figure, height=max(260, 32 * len(values) + 80), x_title="Known balance (points)")
    figure.update_layout(showlegend=False)
    figure.update_yaxes(autorange="reversed", title_text="")
    tick_values, labels = indian_ticks(0, upper or 1, count=4)
    figure.update_xaxes(
        tickvals=tick_values, ticktext=labels, range=[0, upper * 1.02 if upper else 1]
    )
    return figure


def status_figure(breakdown: Sequence[StatusCount]) -> go.Figure:
    """How many transactions ended in each status (statuses with none are left out)."""
    shown = [s for s in breakdown if s.transactions]
    total = sum(s.transactions for s in shown) or 1
    figure = go.Figure(
        go.Bar(
            x=[s.transactions for s in shown],
            y=[s.status.value.title() for s in shown],
            orientation="h",
            marker_color=[STATUS_COLOURS[s.status] for s in shown],
            text=[f"{count(s.transactions)} ({100 * s.transactions / total:.1f}%)" for s in shown],
            textposition="auto",
            customdata=[[count(s.transactions), points(s.amount)] for s in shown],
            hovertemplate="%{y}: %{customdata[0]} transactions<br>%{customdata[1]} points"
            "<extra></extra>",
        )
    )
    _layout(figure, height=max(200, 40 * len(shown) + 90), x_title="Transactions")
    figure.update_layout(showlegend=False)
    figure.update_yaxes(autorange="reversed", title_text="")
    tick_values, labels = indian_ticks(0, max((s.transactions for s in shown), default=1), 4)
    kept = [(v, t) for v, t in zip(tick_values, labels, strict=True) if v == int(v)]
    figure.update_xaxes(tickvals=[v for v, _ in kept], ticktext=[t for _, t in kept])
    return figure


def burn_down_figure(burn_down: Sequence[tuple[date, Decimal | None]]) -> go.Figure:
    """A programme's remaining budget at the end of each IST day (small, for the Overview)."""
    x = [day for day, left in burn_down if left is not None]
    y = [float(left) for _, left in burn_down if left is not None]
    figure = go.Figure()
    if not x:
        return _empty(figure, "No budget limit")
    figure.add_scatter(
        x=x,
        y=y,
        name="Remaining",
        mode="lines",
        line={"color": NET_COLOUR, "width": 2, "shape": "hv"},
        fill="tozeroy",
        customdata=[points(left) for left in y],
        hovertemplate="%{x|%a %d %b %Y}<br>Remaining %{customdata}<extra></extra>",
    )
    _layout(figure, height=160, y_title="Remaining")
    figure.update_layout(showlegend=False, margin={"l": 8, "r": 8, "t": 8, "b": 8})
    values, labels = indian_ticks(0.0, max(y, default=0), count=3)
    figure.update_yaxes(tickvals=values, ticktext=labels, range=[values[0], values[-1]])
    figure.update_xaxes(tickformat="%d %b")
    return figure
