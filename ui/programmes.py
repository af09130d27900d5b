"""The programme a movement counts against: the select box the Create, Credit and Debit forms share.

The choice is remembered per person for the session: the next form opens on the programme the
person used last (General until they choose another).
"""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import streamlit as st

from services import approvals, programme_reports, programmes
from services.errors import PointsDeskError
from services.store import GENERAL_CODE, Programme
from services.store.programmes import programme_id_for, today_ist
from ui.context import desk, operator
from ui.format import ist, points
from ui.notice import error_message, set_error, set_notice, show_notices
from ui.text import code, md


def _remembered_key() -> str:
    return f"programme_choice:{operator()}"


def open_programmes() -> list[Programme]:
    """Programmes that take movements today (General first)."""
    day = today_ist()
    ledger = desk().ledger
    found = ledger.list_programmes(["active"])
    if not any(p.code == GENERAL_CODE for p in found):
        # General is made by the migration; a sandbox reset may have removed it.
        with ledger.writing() as conn:
            programme_id_for(conn, None)
        found = ledger.list_programmes(["active"])
    return [p for p in found if p.open_on(day)]


def label(programme: Programme) -> str:
    """How a programme reads in a select box (shown as plain text by Streamlit's widgets)."""
    if programme.code == GENERAL_CODE:
        return f"{programme.name} (no budget limit)"
    left = programme.remaining
    shown = "no limit" if left is None else f"{points(left)} points left"
    return f"{programme.name} · {programme.code} · {shown}"


def programme_select(key: str, *, disabled: bool = False) -> str | None:
    """A select box of open programmes under widget key ``key``; returns the chosen code.

    Defaults to the programme this person chose last (General the first time)."""
    choices = open_programmes()
    by_code = {p.code: p for p in choices}
    codes = list(by_code)
    remembered = st.session_state.get(_remembered_key(), GENERAL_CODE)
    if st.session_state.get(key) not in by_code:
        st.session_state[key] = remembered if remembered in by_code else codes[0]
    chosen = st.selectbox(
        "Programme",
        codes,
        key=key,
        format_func=lambda code: label(by_code[code]),
        disabled=disabled,
        help="The programme whose budget these points count against.",
    )
    if chosen:
        st.session_state[_remembered_key()] = chosen
    return chosen


# --- the Programmes page ------------------------------------------------------------------------

_FIELDS = (
    "name",
    "budget",
    "starts_on",
    "ends_on",
    "owner",
    "description",
    "monthly_operator_limit",
    "debit_threshold",
)


def _amount_text(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def _or_none(value: Decimal | None, none: str = "no limit") -> str:
    return none if value is None else points(value)


def _state(programme: Programme) -> str:
    if programme.state != "active":
        return programme.state
    return "active" if programme.open_on(today_ist()) else "not open today"


def programme_table() -> None:
    """Every programme with its budget, used, reserved (in flight) and remaining."""
    show_notices()
    rows = []
    for p in desk().ledger.list_programmes():
        rows.append(
            {
                "Code": p.code,
                "Name": p.name,
                "State": _state(p),
                "Budget": _or_none(p.budget),
                "Used": points(p.used),
                "Reserved": points(p.reserved),
                "Remaining": _or_none(p.remaining),
                "Starts": f"{p.starts_on:%d %b %Y}" if p.starts_on else "—",
                "Ends": f"{p.ends_on:%d %b %Y}" if p.ends_on else "—",
                "Owner": p.owner or "—",
                "Monthly limit per operator": _or_none(p.monthly_operator_limit),
                "Debit approval above": _or_none(p.debit_threshold, "the global threshold"),
            }
        )
    # A dataframe shows its cells as plain text: names and owners are never read as Markdown.
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="programmes_table")


def _field_error(prefix: str, field: str) -> None:
    message = st.session_state.get(f"{prefix}_errors", {}).get(field)
    if message:
        st.markdown(f":red[{md(message)}]")


def _fields(prefix: str, *, with_code: bool) -> None:
    """The programme form's widgets (keys ``{prefix}_{field}``) with an error under each."""
    if with_code:
        code_col, name_col = st.columns([1, 3])
        with code_col:
            st.text_input(
                "Short code",
                key=f"{prefix}_code",
                max_chars=16,
                placeholder="e.g. Q3-SALES",
                help="Used in files; cannot change later.",
            )
            _field_error(prefix, "code")
        with name_col:
            st.text_input("Name", key=f"{prefix}_name", max_chars=80)
            _field_error(prefix, "name")
    else:
        st.text_input("Name", key=f"{prefix}_name", max_chars=80)
        _field_error(prefix, "name")
    budget_col, start_col, end_col = st.columns(3)
    with budget_col:
        st.text_input(
            "Budget (points)",
            key=f"{prefix}_budget",
            placeholder="e.g. 5,00,000",
            help="Empty: no limit.",
        )
        _field_error(prefix, "budget")
    with start_col:
        st.date_input("Starts on (IST)", key=f"{prefix}_starts_on", value=None, format="DD/MM/YYYY")
        _field_error(prefix, "starts_on")
    with end_col:
        st.date_input("Ends on (IST)", key=f"{prefix}_ends_on", value=None, format="DD/MM/YYYY")
        _field_error(prefix, "ends_on")
    owner_col, limit_col, threshold_col = st.columns(3)
    with owner_col:
        st.text_input("Owner", key=f"{prefix}_owner", max_chars=80)
        _field_error(prefix, "owner")
    with limit_col:
        st.text_input(
            "Monthly limit per operator",
            key=f"{prefix}_monthly_operator_limit",
            help="Empty: no limit. A credit past it waits for approval.",
        )
        _field_error(prefix, "monthly_operator_limit")
    with threshold_col:
        st.text_input(
            "Debit approval above",
            key=f"{prefix}_debit_threshold",
            help="Empty: the global debit approval threshold.",
        )
        _field_error(prefix, "debit_threshold")
    st.text_area("Description", key=f"{prefix}_description", max_chars=500, height=80)
    _field_error(prefix, "description")


def _read(prefix: str, *, with_code: bool) -> tuple[dict, dict[str, str]]:
    names = (("code",) if with_code else ()) + _FIELDS
    return programmes.read_form({f: st.session_state.get(f"{prefix}_{f}") for f in names})


def _create() -> None:
    fields, errors = _read("new_prog", with_code=True)
    st.session_state["new_prog_errors"] = errors
    if errors:
        return
    the_desk = desk()
    try:
        created = programmes.create(
            the_desk.ledger, fields, actor=operator(), settings=the_desk.settings
        )
    except PointsDeskError as error:
        st.session_state["new_prog_errors"] = {"code": error_message(error)}
        return
    for field in ("code", *_FIELDS):
        key = f"new_prog_{field}"
        st.session_state[key] = None if field in ("starts_on", "ends_on") else ""
    if created.raise_request is not None:
        # A large budget, no budget limit or a high debit threshold waits for a second person.
        until = (
            "it takes no credits"
            if "budget" in created.raise_request.changes
            else "the global debit approval threshold applies to it"
        )
        set_notice(
            "warning",
            f"Created {created.name} ({created.code}); waiting for approval by a second "
            f"person: {'; '.join(created.held)}. Until then {until}.",
            icon="👥",
        )
    else:
        set_notice("success", f"Created {created.name} ({created.code}).")


def new_programme() -> None:
    """The form that creates a programme."""
    with st.form("new_prog_form", enter_to_submit=False):
        _fields("new_prog", with_code=True)
        st.form_submit_button(
            "Create programme", key="new_prog_submit", type="primary", on_click=_create
        )


def _load(code: str) -> None:
    """Put a programme's values into the edit form's widgets."""
    found = desk().ledger.programme(code)
    if found is None:
        return
    state = st.session_state
    state["edit_prog_name"] = found.name
    state["edit_prog_budget"] = _amount_text(found.budget)
    state["edit_prog_starts_on"] = found.starts_on
    state["edit_prog_ends_on"] = found.ends_on
    state["edit_prog_owner"] = found.owner
    state["edit_prog_description"] = found.description
    state["edit_prog_monthly_operator_limit"] = _amount_text(found.monthly_operator_limit)
    state["edit_prog_debit_threshold"] = _amount_text(found.debit_threshold)
    state["edit_prog_loaded"] = code
    state.pop("edit_prog_errors", None)


#: A money rule a change may wait on: how the page names it, and how it reads when unset.
_RULE_WORDS = {
    "budget": ("its budget of", "no budget limit"),
    "debit_threshold": ("its debit approval limit of", "the global debit approval threshold"),
    "monthly_operator_limit": (
        "its monthly limit per operator of",
        "no monthly limit per operator",
    ),
}


def _kept(programme: Programme, changes: dict[str, Decimal | None]) -> str:
    """What a programme keeps while a change to the rules in ``changes`` waits ("it keeps its
    budget of 2,000.00 and the global debit approval threshold")."""
    kept = []
    for rule, (words, unset) in _RULE_WORDS.items():
        if rule in changes:
            value = getattr(programme, rule)
            kept.append(unset if value is None else f"{words} {points(value)}")
    return "it keeps " + " and ".join(kept) if kept else "it stays as it was"


def waiting_changes(code: str) -> list[approvals.Approval]:
    """The changes to a programme that wait for a second person."""
    return [
        a
        for a in approvals.pending(desk().ledger)
        if a.subject_kind == "budget" and a.programme_code == code
    ]


def _save(code: str) -> None:
    fields, errors = _read("edit_prog", with_code=False)
    st.session_state["edit_prog_errors"] = errors
    if errors:
        return
    the_desk = desk()
    try:
        saved = programmes.save(the_desk.ledger, the_desk.settings, code, fields, actor=operator())
    except PointsDeskError as error:
        st.session_state["edit_prog_errors"] = {"budget": error_message(error)}
        return
    if saved.raise_request is not None:
        set_notice(
            "warning",
            f"Saved {saved.programme.name}; waiting for approval by a second person "
            f"(Approvals page): {'; '.join(saved.held)}. Until then "
            f"{_kept(saved.programme, saved.raise_request.changes)}.",
            icon="👥",
        )
    else:
        set_notice("success", f"Saved {saved.programme.name}.")
    _load(code)


def _close(code: str) -> None:
    try:
        closed = programmes.close(desk().ledger, code, actor=operator())
    except PointsDeskError as error:
        set_error(error)
        return
    set_notice("success", f"Closed {closed.name}: it takes no new credits; its history stays.")
    st.session_state.pop("edit_prog_loaded", None)
    st.session_state.pop("edit_prog_choice", None)


def edit_programme() -> None:
    """Choose an active programme; change its fields, or close it."""
    active = {p.code: p for p in desk().ledger.list_programmes(["active"])}
    code = st.selectbox(
        "Programme",
        list(active),
        key="edit_prog_choice",
        format_func=lambda c: f"{active[c].name} ({c})",
    )
    if code is None:
        return
    if st.session_state.get("edit_prog_loaded") != code:
        _load(code)
    for waiting in waiting_changes(code):
        # The reasons name only codes and figures; escaped all the same.
        st.info(
            "Waiting for approval by a second person (Approvals page): "
            + md("; ".join(waiting.reasons) or "a change to its money rules")
            + ". The form shows the values that apply now.",
            icon="👥",
        )
    with st.form("edit_prog_form", enter_to_submit=False):
        _fields("edit_prog", with_code=False)
        st.form_submit_button(
            "Save changes", key="edit_prog_submit", type="primary", on_click=_save, args=(code,)
        )
    events = desk().ledger.programme_events(code)
    if events:
        # Labels are read as Markdown: the name is escaped so it reads as typed.
        with st.expander(f"Changes to {md(active[code].name)} ({len(events):,})"):
            # Plain-text cells: names and details are never read as Markdown.
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "When (IST)": ist(e.at, "%d %b %Y, %H:%M"),
                            "Who": e.actor,
                            "What": e.action,
                            "Detail": e.detail,
                        }
                        for e in reversed(events)
                    ]
                ),
                hide_index=True,
                width="stretch",
            )
    if code != GENERAL_CODE:
        st.button(
            f"Close {md(active[code].name)}",
            key="edit_prog_close",
            on_click=_close,
            args=(code,),
            help="It takes no new credits; its movements and statement stay.",
        )


# --- reports --------------------------------------------------------------------------------------


#: Up to this many active programmes the Overview shows a card each (figures and a burn-down
#: chart); more read as one table with a burn-down sparkline per row. Fifty cards would be a long
#: scroll, and each plotly chart costs ~45 ms of CPU to build and send: 2 s for fifty.
CARD_LIMIT = 6


def _overview_table(reports: list[programme_reports.ProgrammeReport]) -> None:
    """Every active programme as one row: the card's figures and its burn-down as a sparkline."""
    rows = []
    for report in reports:
        p = report.programme
        rows.append(
            {
                # Plain cells (st.dataframe renders no Markdown): names are text people typed.
                "Programme": p.name,
                "Code": p.code,
                "Budget": _or_none(p.budget),
                "Used": points(p.used),
                "Reserved": points(p.reserved),
                "Remaining": _or_none(p.remaining),
                "Burn per day": points(report.burn_per_day),
                "Runs out on": (
                    f"{report.exhausts_on:%d %b %Y}" if report.exhausts_on is not None else ""
                ),
                "Remaining, last 30 days": [
                    float(left) for _, left in report.burn_down if left is not None
                ],
            }
        )
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        key="overview_programmes_table",
        column_config={
            "Remaining, last 30 days": st.column_config.AreaChartColumn(y_min=0),
        },
    )


def overview_cards() -> None:
    """A card per active programme: budget, used, reserved, remaining, burn, exhaustion, chart."""
    from ui import charts

    reports = programme_reports.active_reports(desk().ledger)
    if not reports:
        return
    st.subheader("Programmes")
    st.caption(
        f"Burn is what a programme used per day over the last {programme_reports.BURN_DAYS} "
        "days (credits less debits that succeeded); reserved is credits still in flight."
    )
    if len(reports) > CARD_LIMIT:
        _overview_table(reports)
        return
    for report in reports:
        p = report.programme
        with st.container(border=True, key=f"overview_programme_{p.code}"):
            st.markdown(f"**{md(p.name)}** · {code(p.code)}")
            figures, chart = st.columns([3, 2])
            top = figures.columns(3)
            top[0].metric("Budget", _or_none(p.budget))
            top[1].metric("Used", points(p.used))
            top[2].metric("Reserved", points(p.reserved))
            bottom = figures.columns(3)
            bottom[0].metric("Remaining", _or_none(p.remaining))
            bottom[1].metric("Burn per day", points(report.burn_per_day))
            if report.exhausts_on is not None:
                figures.caption(
                    f"At this rate the budget runs out on **{report.exhausts_on:%d %b %Y}**"
                    + (
                        f", after the programme ends ({p.ends_on:%d %b %Y})."
                        if p.ends_on is not None and p.ends_on < report.exhausts_on
                        else "."
                    )
                )
            elif p.budget is not None:
                figures.caption("Nothing used in the last 30 days: no exhaustion in sight.")
            if p.budget is None:
                chart.caption("No budget limit: nothing to burn down.")
                continue
            with chart:
                st.plotly_chart(
                    charts.burn_down_figure(report.burn_down),
                    key=f"overview_burn_{p.code}",
                    config={"displayModeBar": False},
                )


def statement_downloads() -> None:
    """A programme's statement for finance, as CSV and XLSX."""
    everyone = {p.code: p for p in desk().ledger.list_programmes()}
    with st.expander("Programme statement (for finance)", icon=":material/receipt_long:"):
        st.caption(
            "Opening budget, every movement with its maker and checker, and the closing remainder."
        )
        chosen = st.selectbox(
            "Programme",
            list(everyone),
            key="statement_programme",
            format_func=lambda c: f"{everyone[c].name} ({c})",
        )
        if chosen is None:
            return
        ledger = desk().ledger
        try:
            as_csv = programme_reports.statement_csv(ledger, chosen)
            as_xlsx = programme_reports.statement_xlsx(ledger, chosen)
        except PointsDeskError as error:
            st.error(md(error_message(error)))
            return
        left, right = st.columns(2)
        left.download_button(
            "Statement (CSV)",
            as_csv,
            programme_reports.statement_name(chosen, "csv"),
            "text/csv",
            key="statement_csv",
            on_click="ignore",
            icon="⬇️",
        )
        right.download_button(
            "Statement (Excel)",
            as_xlsx,
            programme_reports.statement_name(chosen, "xlsx"),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            key="statement_xlsx",
            on_click="ignore",
            icon="⬇️",
        )
