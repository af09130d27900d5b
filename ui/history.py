"""The History page's pieces: the filter bar, cached aggregate loaders, the table, the detail
view and the export buttons. Everything heavy is a ``services.history`` query; this module only
decides what to ask and how it reads.

Caching: aggregates are cached for a short time keyed on the filter *and* the ledger's change
marker (the newest audit event), so a new or settled transaction shows on the very next run,
while re-running the page with nothing new (a widget click elsewhere) costs one tiny query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from services import approvals, export, history
from services.history import Granularity, HistoryFilter
from services.models import Kind, Status
from services.store import Ledger, LedgerRow
from ui.format import count, ist, mobile, points
from ui.text import code, md

DEFAULT_DAYS = 90
PAGE_SIZE = 50
_TTL = 60
_ALL_BATCHES = "All batches"
# Each metric as wide as its figure (never cut to "2,34,531…"); the row wraps on a phone.
_METRIC_WIDTH = "content"


@dataclass(frozen=True)
class Aggregates:
    current: history.PeriodTotals
    previous: history.PeriodTotals | None
    series: list[history.SeriesPoint]
    opening: Decimal
    balances: history.Balances
    statuses: list[history.StatusCount]


@st.cache_data(ttl=_TTL, max_entries=64, show_spinner=False)
def _aggregates(_ledger: Ledger, marker: tuple, key: str, _f: HistoryFilter, grain: str):
    current, previous = history.compare_totals(_ledger, _f)
    return Aggregates(
        current=current,
        previous=previous,
        series=history.series(_ledger, _f, Granularity(grain)),
        opening=history.opening_net(_ledger, _f),
        balances=history.balances(_ledger, _f, top=10),
        statuses=history.status_breakdown(_ledger, _f),
    )


@st.cache_data(ttl=_TTL, max_entries=64, show_spinner=False)
def _page(
    _ledger: Ledger,
    marker: tuple,
    key: str,
    _f: HistoryFilter,
    number: int,
    cursor: history.Cursor | None,
):
    return history.page(_ledger, _f, number, PAGE_SIZE, cursor=cursor)


@st.cache_data(ttl=_TTL, max_entries=8, show_spinner=False)
def _choices(_ledger: Ledger, marker: tuple) -> tuple[list[str], list[str]]:
    return history.operators(_ledger), history.batch_ids(_ledger)


def aggregates(ledger: Ledger, f: HistoryFilter, grain: Granularity) -> Aggregates:
    return _aggregates(ledger, history.change_marker(ledger), f.key(), f, grain.value)


def page_of(ledger: Ledger, f: HistoryFilter, number: int) -> history.Page:
    """Page ``number`` of the table. Each page shown leaves where the next one starts in the
    session, so paging on is a key range however deep (``services.history.page``)."""
    cursors: dict[int, history.Cursor] = st.session_state.setdefault("_history_cursors", {})
    shown = _page(ledger, history.change_marker(ledger), f.key(), f, number, cursors.get(number))
    if shown.next_cursor is not None:
        cursors[shown.number + 1] = shown.next_cursor
    return shown


@dataclass(frozen=True)
class Recent:
    grain: Granularity
    series: list[history.SeriesPoint]
    balances: history.Balances


@st.cache_data(ttl=_TTL, max_entries=8, show_spinner=False)
def _month_to_date(_ledger: Ledger, marker: tuple, today: date):
    this_month = HistoryFilter(start=today.replace(day=1), end=today)
    last_month_end = today.replace(day=1) - timedelta(days=1)
    same_days = HistoryFilter(
        start=last_month_end.replace(day=1),
        end=last_month_end.replace(day=min(today.day, last_month_end.day)),
    )
    return history.compare_totals(_ledger, this_month, previous=same_days)


def month_to_date(ledger: Ledger) -> tuple[history.PeriodTotals, history.PeriodTotals, str]:
    """This IST month so far, the same days of last month, and words for the period."""
    today = history.ist_today()
    now, before = _month_to_date(ledger, history.change_marker(ledger), today)
    assert before is not None
    period = f"1–{today:%d %b %Y}" if today.day > 1 else f"{today:%d %b %Y}"
    return now, before, period


@st.cache_data(ttl=_TTL, max_entries=8, show_spinner=False)
def _recent(_ledger: Ledger, marker: tuple, today: date, months: int) -> Recent:
    first = today.replace(day=1)
    for _ in range(months - 1):
        first = (first - timedelta(days=1)).replace(day=1)
    recent = HistoryFilter(start=first, end=today)
    return Recent(
        Granularity.MONTH,
        history.series(_ledger, recent, Granularity.MONTH),
        history.balances(_ledger, recent, top=8),
    )


def recent_months(ledger: Ledger, months: int = 6) -> Recent:
    """Points moved per month over the last ``months`` IST months, and the largest balances."""
    return _recent(ledger, history.change_marker(ledger), history.ist_today(), months)


def filter_bar(ledger: Ledger, session_id: str) -> tuple[HistoryFilter | None, Granularity]:
    """The filters; ``None`` (with the reason shown by the field) when they do not make sense."""
    operators, batches = _choices(ledger, history.change_marker(ledger))
    today = history.ist_today()
    with st.container(border=True):
        when, grain_col, mine = st.columns([2, 2, 1.4], vertical_alignment="bottom")
        picked = when.date_input(
            "Dates (IST)",
            value=(today - timedelta(days=DEFAULT_DAYS - 1), today),
            format="DD/MM/YYYY",
            key="history_dates",
        )
        grain = grain_col.segmented_control(
            "Group by",
            [g.value for g in Granularity],
            format_func=str.title,
            default=Granularity.DAY.value,
            key="history_grain",
        )
        only_mine = mine.toggle(
            "This session only",
            key="history_mine",
            help="Only transactions made in this browser tab's session.",
        )
        kind_col, status_col, operator_col, batch_col, search_col = st.columns(5)
        kinds = kind_col.multiselect(
            "Kind", list(Kind), format_func=lambda k: k.value.title(), key="history_kinds"
        )
        statuses = status_col.multiselect(
            "Status", list(Status), format_func=lambda s: s.value.title(), key="history_statuses"
        )
        chosen_operators = operator_col.multiselect("Operator", operators, key="history_operators")
        batch = batch_col.selectbox("Batch", [_ALL_BATCHES, *batches], key="history_batch")
        search = search_col.text_input(
            "Employee", key="history_employee", placeholder="Name, email, mobile or card"
        )
    start, end = _dates(picked, today)
    try:
        chosen = HistoryFilter(
            start=start,
            end=end,
            kinds=tuple(kinds),
            statuses=tuple(statuses),
            operators=tuple(chosen_operators),
            batch_id=None if batch == _ALL_BATCHES else batch,
            employee=search,
            session_id=session_id if only_mine else None,
        )
    except ValueError as error:
        when.error(md(error))
        return None, Granularity(grain or "day")
    return chosen, Granularity(grain or "day")


def _dates(picked, today: date) -> tuple[date | None, date | None]:
    if isinstance(picked, date):
        return picked, picked
    picked = tuple(picked or ())
    if not picked:
        return None, None
    if len(picked) == 1:  # the browser sends one date while the second is being chosen
        return picked[0], picked[0]
    return picked[0], picked[1]


def delta(now: Decimal | int, before: Decimal | int | None, *, money: bool = True) -> str | None:
    """Text for st.metric's delta: the change against the previous period; ``None`` (no arrow)
    when there is nothing to compare or nothing changed."""
    if before is None or now == before:
        return None
    change = now - before
    if money:
        return f"{'+' if change > 0 else '-'}{points(abs(Decimal(change)))}"
    return f"{'+' if change > 0 else '-'}{count(abs(change))}"


def metric_row() -> DeltaGenerator:
    """A row for headline metrics that wraps (two or three to a line on a phone) instead of
    stacking one per screen line as ``st.columns`` does on narrow screens."""
    return st.container(horizontal=True, gap="medium")


def money_metric(
    column, label: str, now: Decimal, before: Decimal | None, *, colour: str = "normal"
) -> None:
    """A points metric: the exact figure (two decimals, a half point is never rounded away),
    the change against the previous period, the previous period's figure in help."""
    column.metric(
        label,
        points(now),
        delta(now, before),
        delta_color=colour,
        width=_METRIC_WIDTH,
        help=f"{points(now)} points"
        + (f"; {points(before)} in the previous period." if before is not None else "."),
    )


def count_metric(column, label: str, now: int, before: int | None, *, help: str) -> None:
    """A number of things (employees, transactions) with its change."""
    column.metric(
        label, count(now), delta(now, before, money=False), width=_METRIC_WIDTH, help=help
    )


def table(rows: list[LedgerRow]) -> pd.DataFrame:
    """One page of rows as the table shows them (50 at most, already formatted)."""
    return pd.DataFrame(
        {
            "When (IST)": [ist(r.created_at, "%d %b %Y, %H:%M") for r in rows],
            "Kind": [r.kind.value.title() for r in rows],
            "Status": [approvals.status_word(r) for r in rows],
            "Points": [points(r.amount) for r in rows],
            "Employee": [r.first_name or r.email or "" for r in rows],
            "Card": [r.card_id or "" for r in rows],
            "Operator": [r.operator for r in rows],
            "Batch": [r.batch_id or "" for r in rows],
            "Reference": [r.reference for r in rows],
        }
    )


TABLE_COLUMNS = {
    "Points": st.column_config.TextColumn(alignment="right"),
    "Reference": st.column_config.TextColumn(width="medium"),
}


def detail_view(ledger: Ledger, rows: list[LedgerRow]) -> None:
    """Pick one transaction of the page; show everything about it and its audit trail."""
    labels = {
        r.reference: f"{ist(r.created_at, '%d %b %H:%M')} · {r.kind.value} · "
        f"{points(r.amount)} · {r.first_name or r.card_id or ''} · {r.reference}"
        for r in rows
    }
    reference = st.selectbox(
        "Transaction details",
        list(labels),
        index=None,
        format_func=labels.get,
        placeholder="Choose a transaction on this page to see its audit trail",
        key="history_detail",
    )
    if reference is None:
        return
    found = history.detail(ledger, reference)
    if found is None:
        st.warning("That transaction is no longer in the ledger.")
        return
    row, trail = found
    with st.container(border=True):
        left, right = st.columns(2)
        left.markdown(
            f"**{row.kind.value.title()} of {points(row.amount)} points** — "
            f"{approvals.status_word(row).lower()}  \n"
            f"Employee: {md(row.first_name) or '—'} · {md(row.email) or '—'} · "
            f"{md(mobile(row.mobile))}  \n"
            f"Card: {code(row.card_id)} · balance after {points(row.balance_after)}  \n"
            f"Reason: {md(row.reason) or '—'}"
        )
        right.markdown(
            f"Reference: {code(row.reference)}  \n"
            f"EnKash transaction: {code(row.transaction_id)}"
            + (f" · {md(row.enkash_message)}" if row.enkash_message else "")
            + f"  \nOperator: {md(row.operator)}"
            + (f" · approved by {md(row.approved_by)}" if row.approved_by else "")
            + (f"  \nBatch: {code(row.batch_id)} row {row.row_number}" if row.batch_id else "")
            + f"  \nCreated {ist(row.created_at)} · updated {ist(row.updated_at)}"
        )
        st.caption("Audit trail")
        st.dataframe(
            pd.DataFrame(
                {
                    "At (IST)": [ist(e.at, "%d %b %Y, %H:%M:%S") for e in trail],
                    "By": [e.actor for e in trail],
                    "Change": [
                        f"{e.from_status.value if e.from_status else '—'} → {e.to_status.value}"
                        for e in trail
                    ],
                    "Detail": [e.detail for e in trail],
                }
            ),
            hide_index=True,
            width="stretch",
            key="history_audit",
        )


def export_buttons(ledger: Ledger, f: HistoryFilter, matched: int) -> None:
    """CSV and XLSX of every filtered row (made when clicked), or why not."""
    if matched > export.MAX_ROWS:
        st.warning(str(export.ExportTooLarge(matched, export.MAX_ROWS)), icon="✂️")
        return
    csv_col, xlsx_col, note = st.columns([1, 1, 4], vertical_alignment="center")
    csv_col.download_button(
        "Export CSV",
        data=lambda: export.to_csv(ledger, f),
        file_name=export.file_name(f, "csv"),
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
        key="history_export_csv",
        disabled=matched == 0,
    )
    xlsx_col.download_button(
        "Export XLSX",
        data=lambda: export.to_xlsx(ledger, f),
        file_name=export.file_name(f, "xlsx"),
        mime="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        on_click="ignore",
        icon=":material/table:",
        key="history_export_xlsx",
        disabled=matched == 0,
    )
    note.caption(f"{matched:,} transactions, all columns, times in IST.")
