"""The History page's pieces: the filter bar, cached aggregate loaders, the table, the detail
view and the export buttons. Everything heavy is a ``services.history`` query; this module only
decides what to ask and how it reads.

Caching: aggregates are cached for a short time keyed on the filter *and* the ledger's change
marker (the newest audit event), so a new or settled transaction shows on the very next run,
while re-running the page with nothing new (a widget click elsewhere) costs one tiny query.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from services import approvals, corrections, exchanges, export, history, reconcile
from services.allocations import new_reference
from services.corrections import ReversalInvalid
from services.errors import PointsDeskError
from services.history import Granularity, HistoryFilter
from services.models import Kind, Status
from services.store import Ledger, LedgerRow
from ui.access import allowed
from ui.context import desk, operator
from ui.format import count, ist, mobile, points
from ui.notice import set_error, set_notice, show_notices
from ui.reconcile import check_one, confirm_resend
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


@dataclass(frozen=True)
class ByProgramme:
    totals: list[history.ProgrammeTotals]
    series: dict[tuple[int, str, str], list[history.SeriesPoint]]


@st.cache_data(ttl=_TTL, max_entries=32, show_spinner=False)
def _by_programme(_ledger: Ledger, marker: tuple, key: str, _f: HistoryFilter, grain: str):
    return ByProgramme(
        history.programme_totals(_ledger, _f),
        history.programme_series(_ledger, _f, Granularity(grain)),
    )


def grouped_by_programme() -> bool:
    """Whether the filter bar's "Group by programme" is on."""
    return bool(st.session_state.get("history_by_programme"))


def by_programme(ledger: Ledger, f: HistoryFilter, grain: Granularity) -> None:
    """The period per programme: net issued per bucket, stacked by programme, and a table of
    each programme's totals (the daily totals grouped by programme; cached like the rest)."""
    from ui import charts

    data = _by_programme(ledger, history.change_marker(ledger), f.key(), f, grain.value)
    st.subheader("By programme")
    st.plotly_chart(
        charts.programme_figure(data.series, grain),
        key="chart_by_programme",
        config={"displayModeBar": False},
    )
    if not data.totals:
        st.info("No transactions match these filters.")
        return
    # Plain cells (st.dataframe renders no Markdown): programme names are text people typed.
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Programme": t.name,
                    "Code": t.code,
                    "Credited": points(t.credited),
                    "Debited": points(t.debited),
                    "Net issued": points(t.net),
                    "Transactions": count(t.transactions),
                }
                for t in data.totals
            ]
        ),
        hide_index=True,
        key="history_programme_totals",
    )


def filter_bar(ledger: Ledger, session_id: str) -> tuple[HistoryFilter | None, Granularity]:
    """The filters; ``None`` (with the reason shown by the field) when they do not make sense."""
    operators, batches = _choices(ledger, history.change_marker(ledger))
    today = history.ist_today()
    wanted = st.query_params.get("batch", "").strip()  # ?batch=... (the Bulk page's rows)
    if wanted in batches and st.session_state.get("_history_batch_param") != wanted:
        st.session_state["_history_batch_param"] = st.session_state["history_batch"] = wanted
    with st.container(border=True):
        when, programme_col, grain_col, mine = st.columns(
            [2, 2, 2, 1.4], vertical_alignment="bottom"
        )
        picked = when.date_input(
            "Dates (IST)",
            value=(today - timedelta(days=DEFAULT_DAYS - 1), today),
            format="DD/MM/YYYY",
            key="history_dates",
        )
        names = {p.code: p.name for p in ledger.list_programmes()}
        chosen_programmes = programme_col.multiselect(
            "Programme",
            list(names),
            format_func=lambda c: f"{names.get(c, c)} ({c})",
            key="history_programmes",
            placeholder="Every programme",
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
        mine.toggle(
            "Group by programme",
            key="history_by_programme",
            help="Chart and total the period per programme (read by by_programme below).",
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
            programmes=tuple(chosen_programmes),
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
            "Programme": [r.programme or "" for r in rows],
            "Reference": [r.reference for r in rows],
        }
    )


TABLE_COLUMNS = {
    "Points": st.column_config.TextColumn(alignment="right"),
    "Reference": st.column_config.TextColumn(width="medium"),
}

_TABLE = "_history_table"  # the key of the table last drawn, and its rows' references
_OPENED = "_history_table_opened"  # (table key, rows) of the click already opened


def transactions_table(rows: list[LedgerRow]) -> None:
    """The page of rows; clicking one opens its detail (``open_clicked_row`` on the next run).

    The table's key follows the rows it shows, so a click on one page of rows can never be read
    against another (a new filter, a new transaction): the selection starts empty with them.
    """
    references = [r.reference for r in rows]
    digest = hashlib.sha256("\n".join(references).encode()).hexdigest()[:12]
    key = f"history_table_{digest}"
    st.session_state[_TABLE] = (key, references)
    st.dataframe(
        table(rows),
        hide_index=True,
        width="stretch",
        column_config=TABLE_COLUMNS,
        key=key,
        on_select="rerun",
        selection_mode="single-row",
    )


def open_clicked_row() -> None:
    """A row just clicked in the table becomes ``?ref=``, so History opens on its detail at the
    top (and the address can be shared). Call it before reading ``?ref=``."""
    key, references = st.session_state.get(_TABLE, ("", []))
    state = st.session_state.get(key) if key else None
    picked = tuple(state["selection"]["rows"]) if state else ()
    if st.session_state.get(_OPENED) == (key, picked):
        return
    st.session_state[_OPENED] = (key, picked)
    if picked and picked[0] < len(references):
        st.query_params["ref"] = references[picked[0]]


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
        links(ledger, row)
        exchanges_view(ledger, row)
        show_notices()  # what the last action on it did
        unknown_actions(ledger, row)
        reverse_action(ledger, row)


def links(ledger: Ledger, row: LedgerRow) -> None:
    """ "Reverses …" and "reversed by …", each a link to that transaction in History."""
    if row.reverses:
        st.markdown(
            f"Reverses [{md(row.reverses)}](/history?ref={row.reverses})",
        )
    for reversal in ledger.reversed_by(row.reference):
        st.markdown(
            f"Reversed by [{md(reversal.reference)}](/history?ref={reversal.reference}): "
            f"{points(reversal.amount)} points, {approvals.status_word(reversal).lower()}"
        )


def exchanges_view(ledger: Ledger, row: LedgerRow) -> None:
    """Every call to EnKash for this transaction (redacted), and the support bundle."""
    kept = exchanges.for_transaction(ledger, row.reference)
    with st.expander(f"Exchanges with EnKash ({len(kept)})", icon=":material/swap_horiz:"):
        if not kept:
            st.caption("No call to EnKash is kept for this transaction.")
        for number, item in enumerate(kept, start=1):
            status = f"HTTP {item.http_status}" if item.http_status is not None else "no reply"
            said = f" · code {code(item.enkash_code)}" if item.enkash_code is not None else ""
            said += f" · {md(item.enkash_message)}" if item.enkash_message else ""
            st.markdown(
                f"**{number}. {code(item.endpoint)}** · {ist(item.at, '%d %b %Y, %H:%M:%S')} · "
                f"{status}{said} · {item.latency_ms} ms"
                + (" · sent encrypted (shown decrypted)" if item.encrypted else "")
                + (f"  \n{md(item.error)}" if item.error else "")
            )
            sent, got = st.columns(2)
            sent.caption("Request (Authorization header and secrets left out)")
            sent.code(_pretty(item.request), language="json")
            got.caption("Reply")
            got.code(_pretty(item.reply) or "(none)", language="json")
        st.download_button(
            "Download support bundle (JSON)",
            data=lambda: exchanges.support_bundle(ledger, row.reference),
            file_name=f"points-desk-{row.reference}.json",
            mime="application/json",
            on_click="ignore",
            icon=":material/download:",
            key=f"history_bundle_{row.reference}",
        )


def reverse_action(ledger: Ledger, row: LedgerRow) -> None:
    """ "Reverse": the opposite movement for the same card, capped, after a second person's
    approval (``services/corrections.py``). Only for people who may move points."""
    if not allowed("move") or row.status is not Status.SUCCEEDED or row.reverses:
        return
    room = corrections.room(ledger, row.reference)
    key = row.reference
    show_notices()
    with st.expander("Reverse", icon=":material/undo:"):
        if room.cap <= 0:
            st.caption(f"Nothing more can be reversed: {md(room.why)}.")
            return
        undo = "debits" if corrections.opposite(row.kind) is Kind.DEBIT else "credits"
        st.caption(
            f"{undo.title()} the same card with up to {points(room.cap)} points"
            + (f" ({md(room.why)})" if room.why else "")
            + (f"; {points(room.already)} already reversed" if room.already else "")
            + ". A second person approves it on the Approvals page before it is sent."
        )
        st.text_input("Points to reverse", value=str(room.cap), key=f"reverse_amount_{key}")
        st.text_input(
            "Reason", key=f"reverse_reason_{key}", max_chars=200, placeholder="Why it is undone"
        )
        st.button(
            "Ask for approval to reverse",
            key=f"reverse_submit_{key}",
            on_click=_request_reversal,
            args=(row.reference,),
        )


def unknown_actions(ledger: Ledger, row: LedgerRow) -> None:
    """For an unknown outcome: what is known, "Check with EnKash" and, only once a lookup proved
    the reference absent, "Resend with the same reference" (the Reconcile page's own actions;
    ``services/reconcile.py`` refuses a resend that is not proven safe)."""
    if not allowed("move") or row.status is not Status.UNKNOWN:
        return
    latest = ledger.latest_events([row.reference]).get(row.reference)
    item = reconcile.UnknownTransaction(row, datetime.now(UTC) - row.created_at, latest)
    with st.container(border=True):
        icon = "🔁" if item.resend_allowed else ("🔎" if item.mismatch else "⏳")
        st.markdown(f"**Outcome unknown.** {icon} {md(item.state)}")
        check, resend = st.columns(2)
        check.button(
            "Check with EnKash",
            key=f"history_check_{row.reference}",
            on_click=check_one,
            args=(row.reference,),
            icon=":material/travel_explore:",
            width="stretch",
        )
        if item.resend_allowed and resend.button(
            "Resend with the same reference",
            key=f"history_resend_{row.reference}",
            icon=":material/replay:",
            width="stretch",
        ):
            confirm_resend(item)


def _request_reversal(reference: str) -> None:
    """Reverse button callback: one reversal reference per form, so a double click replays."""
    ref_key = f"_reverse_ref_{reference}"
    reversal_reference = st.session_state.setdefault(ref_key, new_reference("RV"))
    try:
        row = corrections.request_reversal(
            desk().ledger,
            reference,
            st.session_state.get(f"reverse_amount_{reference}", ""),
            maker=operator(),
            reason=st.session_state.get(f"reverse_reason_{reference}", ""),
            reversal_reference=reversal_reference,
        )
    except PointsDeskError as error:
        if not isinstance(error, ReversalInvalid):
            st.session_state.pop(ref_key, None)  # nothing written: the next try is a new one
        set_error(error)
        return
    st.session_state.pop(ref_key, None)
    set_notice(
        "success",
        f"Reversal {code(row.reference)} of {points(row.amount)} points waits for a second "
        "person's approval; nothing is sent until then.",
        markdown=True,
    )


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


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
