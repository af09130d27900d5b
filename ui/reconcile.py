"""Pieces of the Reconcile page: unknown rows with their actions, results in words, drift table.

Every action runs in a button's ``on_click`` callback (so it fires once, before the rerun that
shows its result) and leaves its result in ``st.session_state`` for the page to show.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from services import reconcile
from services.enkash import EnkashError
from services.models import Kind, SettleOutcome, Status
from services.store import LedgerRow
from ui.context import desk, operator
from ui.format import ist, points
from ui.notice import pending_notices, set_notice, show_notices
from ui.sidebar import forget_pool
from ui.text import code, md

DRIFT_KEY = "reconcile_drift"
SHOWN_ROWS = 50

_LEVELS = {
    SettleOutcome.SUCCEEDED: ("success", "✅"),
    SettleOutcome.FAILED: ("error", "⛔"),
    SettleOutcome.ABSENT: ("warning", "🔁"),
    SettleOutcome.NOT_YET: ("info", "⏱️"),
    SettleOutcome.UNREADABLE: ("warning", "❓"),
    SettleOutcome.CHANGED: ("info", "↻"),
    SettleOutcome.ALREADY: ("info", "ℹ️"),
    SettleOutcome.ERROR: ("error", "⚠️"),
}


# --- words ----------------------------------------------------------------------------------------


def ago(delta: timedelta) -> str:
    """``timedelta(minutes=3)`` -> ``3 min ago``."""
    seconds = int(delta.total_seconds())
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min ago"
    if seconds < 86400:
        return f"{seconds // 3600} h ago"
    days = seconds // 86400
    return f"{days} day{'s' if days != 1 else ''} ago"


def _who(row: LedgerRow) -> str:
    name = row.first_name or row.email
    if not name and row.card_id:
        # A credit or debit by card id carries no name; the card's latest details do.
        known = desk().ledger.employee_by_card(row.card_id)
        name = (known.first_name or known.email) if known is not None else None
    if name and row.card_id:
        return f"{name} ({row.card_id})"
    return name or row.card_id or "a new card"


def what(row: LedgerRow) -> str:
    """``Credit of 250.00 points to Ravi (EKC04AZHXP)``."""
    who = _who(row)
    amount = points(row.amount)
    if row.kind is Kind.DEBIT:
        return f"Debit of {amount} points from {who}"
    if row.kind is Kind.CREATE:
        return f"New account for {who} with {amount} points"
    return f"Credit of {amount} points to {who}"


def _remember(results: list[tuple[str, str, str]]) -> None:
    """The action's results, shown once above the page (Markdown built with md()/code())."""
    for level, icon, text in results:
        set_notice(level, text, icon=icon, markdown=True)  # type: ignore[arg-type]


def _result_line(result: reconcile.CheckResult) -> tuple[str, str, str]:
    level, icon = _LEVELS.get(result.outcome, ("info", "ℹ️"))
    subject = what(result.row) if result.row is not None else result.reference
    return level, icon, f"**{md(subject)}** ({code(result.reference)}) — {md(result.message)}"


# --- actions (button callbacks) -------------------------------------------------------------------


def check_one(reference: str) -> None:
    the_desk = desk()
    with the_desk.client() as client:
        result = reconcile.check(the_desk.ledger, client, reference, actor=operator())
    if result.settled:
        forget_pool()
    _remember([_result_line(result)])


def check_everything() -> None:
    the_desk = desk()
    with the_desk.client() as client:
        results = reconcile.check_all(the_desk.ledger, client, actor=operator())
    if not results:
        _remember([("info", "ℹ️", "Nothing to check: no transaction has an unknown outcome.")])
        return
    if any(result.settled for result in results):
        forget_pool()
    counts = {outcome: 0 for outcome in _LEVELS}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    words = {
        SettleOutcome.SUCCEEDED: "went through",
        SettleOutcome.FAILED: "did not go through",
        SettleOutcome.ABSENT: "never arrived (can be resent)",
        SettleOutcome.NOT_YET: "too recent to tell",
        SettleOutcome.UNREADABLE: "have a status to ask EnKash about",
        SettleOutcome.CHANGED: "changed while being checked",
        SettleOutcome.ERROR: "could not be checked",
    }
    parts = [f"{counts[key]} {text}" for key, text in words.items() if counts.get(key)]
    summary = ("info", "🧾", f"Checked {len(results)} with EnKash: " + ", ".join(parts) + ".")
    _remember([summary, *(_result_line(r) for r in results)])


def resend_one(reference: str) -> None:
    the_desk = desk()
    with the_desk.client() as client:
        result = reconcile.resend(the_desk.ledger, client, reference, actor=operator())
    if result.outcome is None:
        _remember([("error", "🛑", f"{code(reference)}: {md(result.refusal)}")])
        return
    outcome = result.outcome
    forget_pool()
    level = {Status.SUCCEEDED: "success", Status.FAILED: "error"}.get(outcome.status, "warning")
    icon = {"success": "✅", "error": "⛔"}.get(level, "⏳")
    text = f"Resent {code(reference)}: **{md(outcome.headline)}** — {md(outcome.explanation)}"
    _remember([(level, icon, text)])


def run_drift() -> None:
    the_desk = desk()
    try:
        with the_desk.client() as client:
            st.session_state[DRIFT_KEY] = reconcile.drift_check(the_desk.ledger, client)
    except EnkashError as error:
        st.session_state[DRIFT_KEY] = (
            f"EnKash could not be asked for its cards: {md(error.message)}"
        )


# --- rendering ------------------------------------------------------------------------------------


def render_results() -> None:
    """The latest action's results, in words."""
    show_notices()


@st.dialog("Resend with the same reference")
def confirm_resend(item: reconcile.UnknownTransaction) -> None:
    row = item.row
    st.markdown(
        f"**{md(what(row))}**  \nReference {code(row.reference)} · attempt {row.attempts + 1}"
    )
    st.write(
        "EnKash's latest lookup found no transaction with this reference, so it never arrived. "
        "It will be looked up once more and, if still absent, sent again with the **same "
        "reference**; if EnKash has it by then, nothing is sent."
    )
    confirm, cancel = st.columns(2)
    confirm.button(
        "Resend",
        key="resend_confirm",
        type="primary",
        on_click=resend_one,
        args=(row.reference,),
        width="stretch",
    )
    if cancel.button("Cancel", key="resend_cancel", width="stretch"):
        st.rerun()
    if any(row.reference in notice.markdown for notice in pending_notices()):
        st.rerun()  # done: close the dialog; the page shows the result


def render_unknown(item: reconcile.UnknownTransaction, now: datetime) -> None:
    row = item.row
    with st.container(border=True, key=f"unknown_{row.reference}"):
        text, actions = st.columns([3, 2], vertical_alignment="center")
        attempts = f"{row.attempts} attempt{'s' if row.attempts != 1 else ''}"
        text.markdown(f"**{md(what(row))}**")
        text.caption(
            f"Started {ist(row.created_at, '%d %b, %H:%M IST')} · **{ago(now - row.created_at)}**"
            f" · {attempts} · {code(row.reference)}"
        )
        icon = "🔁" if item.resend_allowed else ("🔎" if item.mismatch else "⏳")
        text.markdown(f"{icon} {md(item.state)}")
        actions.button(
            "Check with EnKash",
            key=f"check_{row.reference}",
            on_click=check_one,
            args=(row.reference,),
            width="stretch",
        )
        if item.resend_allowed and actions.button(
            "Resend with the same reference",
            key=f"resend_{row.reference}",
            width="stretch",
        ):
            confirm_resend(item)


def render_unknowns() -> None:
    the_desk = desk()
    now = datetime.now(UTC)
    items = reconcile.unknown_transactions(the_desk.ledger, now=now)
    loop = getattr(the_desk, "settle_loop", None)
    interval = the_desk.settings.points_desk_settle_interval_seconds
    if loop is None and interval > 0 and not getattr(the_desk, "sender", True):
        auto = f"The worker processes check with EnKash automatically every {interval:g} s."
    elif loop is None:
        auto = "Automatic background checks are off."
    else:
        last = loop.last_pass
        when = f" (last pass {ist(last.started_at, '%H:%M IST')})" if last else ""
        auto = f"Checked with EnKash automatically every {loop.interval_seconds:g} s{when}."
    if not items:
        st.success("Nothing is unknown: every transaction has a confirmed outcome.", icon="✅")
        st.caption(auto)
        return
    summary, button = st.columns([5, 2], vertical_alignment="center")
    summary.markdown(
        f"**{len(items):,}** transaction{'s' if len(items) != 1 else ''} with an unknown outcome "
        f"· oldest **{ago(now - items[0].row.created_at)}**"
    )
    button.button(
        "Check all with EnKash",
        key="check_all",
        on_click=check_everything,
        type="primary",
        width="stretch",
    )
    st.caption(
        f"{auto} Only a lookup that proves a reference absent allows a resend, and a resend "
        "always reuses the same reference."
    )
    for item in items[:SHOWN_ROWS]:
        render_unknown(item, now)
    if len(items) > SHOWN_ROWS:
        st.caption(f"…and {len(items) - SHOWN_ROWS:,} more; *Check all* covers every one.")


def render_mismatches() -> None:
    rows = reconcile.reference_mismatches(desk().ledger)
    if not rows:
        st.caption("None: every reply EnKash sent carried the reference it was asked about.")
        return
    table = pd.DataFrame(
        {
            "Transaction": [what(row) for row in rows],
            "Status": [
                "went through (found by its own reference)"
                if row.status is Status.SUCCEEDED
                else "unknown"
                for row in rows
            ],
            "Reference": [row.reference for row in rows],
            "EnKash transaction": [row.transaction_id or "—" for row in rows],
            "When": [ist(row.updated_at, "%d %b, %H:%M IST") for row in rows],
            "EnKash said": [row.enkash_message or "—" for row in rows],
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={"EnKash said": st.column_config.TextColumn(width="large")},
    )


def render_drift() -> None:
    st.button("Run drift check", key="run_drift", on_click=run_drift)
    report = st.session_state.get(DRIFT_KEY)
    if report is None:
        st.caption("Compares every card's balance in the ledger with the balance EnKash reports.")
        return
    if isinstance(report, str):
        st.error(report, icon="⚠️")
        return
    pool = points(report.account.available_balance) if report.account else "unavailable"
    cards, ledger_total, enkash_total, pool_metric = st.columns(4)
    cards.metric("Cards compared", f"{report.cards_checked:,}")
    ledger_total.metric("Ledger accounts for", points(report.ledger_card_total))
    enkash_total.metric("Cards hold at EnKash", points(report.enkash_card_total))
    pool_metric.metric("Pool at EnKash", pool, help=md(report.account_error) or None)
    checked = ist(report.checked_at, "%d %b %Y, %H:%M:%S IST")
    if report.agrees:
        st.success(f"Every card agrees with EnKash (checked {checked}).", icon="✅")
        return
    st.warning(
        f"{len(report.differences)} card(s) differ from EnKash (checked {checked}).", icon="⚖️"
    )
    table = pd.DataFrame(
        {
            "Card": [d.card_id for d in report.differences],
            "Employee": [d.employee or "—" for d in report.differences],
            "Ledger": [points(d.ledger_balance) for d in report.differences],
            "EnKash": [points(d.enkash_balance) for d in report.differences],
            "Difference": [points(d.difference) for d in report.differences],
            "Why it may differ": [d.explanation for d in report.differences],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")
