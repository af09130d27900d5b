"""The Schedules page's pieces: the list (next run, total, maker, approval, runs and their
actions) and the forms that set a schedule up or change its future runs."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st

from services import bulk, schedules
from services.bulk import DEFAULT_CONCURRENCY
from services.bulk_files import BulkFileError
from services.errors import Conflict, PointsDeskError
from services.models import Kind
from services.preflight import PlannedRow
from services.recurrence import IST, WEEKDAYS, Repeat, Rule
from services.schedules import ScheduleView
from services.store.schedules import ScheduleRecord
from ui.access import allowed
from ui.approvals import open_sandbox
from ui.auth import auth_config, current_person
from ui.context import desk, operator
from ui.format import ist, points
from ui.notice import error_message, set_error, set_notice, show_notices
from ui.preflight import preflight_lines
from ui.programmes import programme_select
from ui.sidebar import pool_details
from ui.text import code, md

_REPEATS = {
    Repeat.ONCE.value: "Once",
    Repeat.MONTHLY.value: "Monthly",
    Repeat.WEEKLY.value: "Weekly",
}
_STATES = {
    "pending_approval": "waiting for approval",
    "active": "active",
    "paused": "paused",
    "cancelled": "cancelled",
    "finished": "finished",
}
_RUNS_LATER = ("active", "pending_approval")
_RUN_STATES = {
    "sent": "sent (a batch)",
    "waiting": "waiting for a person (late)",
    "skipped": "skipped",
    "refused": "refused by the programme",
}


# --- the list -------------------------------------------------------------------------------------


def _act(action: str, schedule_id: str, seen: ScheduleRecord | None = None) -> None:
    """Pause / Resume / Cancel / Approve button callback. ``seen``: the schedule as the page
    showed it (a worker recording a run since does not make the approval refused)."""
    ledger = desk().ledger
    try:
        if action == "approve":
            person = current_person()
            identities = auth_config().identities(person) if person is not None else frozenset()
            done = schedules.approve(
                ledger,
                schedule_id,
                approver=operator(),
                identities=identities,
                allow_self=open_sandbox(),
                seen=seen,  # what the approver saw is what gets approved
                settings=desk().settings,  # the catch-up window for a run due meanwhile
            )
            words = (
                f"Approved {done.label}: it runs on its own from now on; next run "
                f"{ist(done.next_due_at)}."
            )
        elif action == "pause":
            done = schedules.pause(ledger, schedule_id, actor=operator())
            words = f"Paused {done.label}: no runs until you resume it."
        elif action == "resume":
            done = schedules.resume(ledger, schedule_id, actor=operator())
            words = f"Resumed {done.label}: next run {ist(done.next_due_at)}."
        else:
            done = schedules.cancel(ledger, schedule_id, actor=operator())
            words = f"Cancelled {done.label}: it sends nothing more."
    except PointsDeskError as error:
        set_error(error)
        return
    set_notice("success", words)


def _run_act(action: str, run_id: int) -> None:
    """Send now / Skip of a late or refused run."""
    the_desk = desk()
    try:
        if action == "send":
            batch_id = schedules.send_now(the_desk.ledger, run_id, actor=operator())
            the_desk.pick_up(batch_id, actor=operator())
            set_notice("success", f"Sending it now as batch {batch_id} (Bulk allocation page).")
        else:
            schedules.skip(the_desk.ledger, run_id, actor=operator())
            set_notice("success", "Skipped: that run sends nothing.")
    except PointsDeskError as error:
        set_error(error)


def _summary(view: ScheduleView) -> dict[str, Any]:
    record = view.record
    # What a manager looks for first (next run, total, state), the rule's long words last.
    return {
        "Name": record.label,
        "Next run": ist(view.next_run) if record.state in _RUNS_LATER else "—",
        "Total per run": points(view.total),
        "State": _STATES.get(record.state, record.state),
        # "waiting for approval" is already the State: say what is missing instead.
        "Approval": "needs a second person"
        if record.state == "pending_approval"
        else view.approval,
        "Set up by": record.maker,
        "Programme": record.programme,
        "Rows": len(view.rows),
        "When": view.describe,
        "Id": record.id,
    }


def schedule_list() -> None:
    """Every schedule with its next run, total, maker and approval; its runs and actions."""
    show_notices()
    found = schedules.views(desk().ledger)
    if not found:
        st.info("No schedules yet. Set one up below.", icon="🗓️")
        return
    # A dataframe shows cells as plain text: names typed by people are never read as Markdown.
    st.dataframe(
        pd.DataFrame([_summary(view) for view in found]),
        hide_index=True,
        width="stretch",
        key="schedules_table",
        # On a phone the table scrolls sideways: the name stays in view, and is no wider than
        # it needs to be for the next run and total to show beside it.
        column_config={"Name": st.column_config.TextColumn(width="medium", pinned=True)},
    )
    may_move, may_approve = allowed("move"), allowed("approve")
    for view in found:
        record = view.record
        waiting = [run for run in view.runs if run.state in ("waiting", "refused")]
        # An expander's label is Markdown: the name a person typed is escaped.
        title = f"{md(record.label)} · {record.id} · {_STATES.get(record.state, record.state)}"
        if waiting:
            title += f" · {len(waiting)} run(s) need a decision"
        with st.expander(title, expanded=bool(waiting) or record.state == "pending_approval"):
            st.markdown(
                f"**{md(record.label)}** {code(record.id)} from programme {code(record.programme)}:"
                f" {md(view.describe)}. Set up by {md(record.maker)}; {md(view.approval)}."
            )
            pending = schedules.pending_rule(record)
            if pending is not None:
                rows = desk().ledger.schedule_rows(record.id, record.pending_version or 0)
                st.caption(
                    f"Edit waiting for approval: {md(pending.describe())}, {len(rows):,} row(s)"
                )
            if view.next_run_if_approved is not None and may_approve:
                st.caption(f"If approved now, its first run is {ist(view.next_run_if_approved)}.")
            actions: list[tuple[str, str, bool]] = []  # (label, action, primary)
            if may_approve and (record.state == "pending_approval" or pending is not None):
                actions.append(("Approve", "approve", True))
            if may_move and record.state == "active":
                actions.append(("Pause", "pause", False))
            if may_move and record.state == "paused":
                actions.append(("Resume", "resume", False))
            if may_move and record.state in ("pending_approval", "active", "paused"):
                actions.append(("Cancel schedule", "cancel", False))
            # No row of empty columns when there is nothing to do (on a phone they stack into a
            # blank gap).
            columns = st.columns(4) if actions else []
            for column, (label, action, primary) in zip(columns, actions, strict=False):
                column.button(
                    label,
                    key=f"sched_{action}_{record.id}",
                    type="primary" if primary else "secondary",
                    on_click=_act,
                    args=(action, record.id, record),
                    width="stretch",
                )
            for run in waiting if may_move else []:
                # One sentence, not a state with a note in brackets: what happened, then what to do.
                if run.state == "refused":
                    why = "was refused by the programme" + (f": {md(run.note)}" if run.note else "")
                else:  # late: the note ("due more than 24 hours ago: not sent late") is said here
                    why = (
                        "was not sent: no worker reached it in time, and a run that late never "
                        "sends on its own"
                    )
                st.markdown(f"Run due **{ist(run.due_at)}** {why}. Send it now, or skip it.")
                left, right, _ = st.columns([1, 1, 3])
                left.button(
                    "Send now", key=f"sched_send_{run.id}", on_click=_run_act,
                    args=("send", run.id),
                )  # fmt: skip
                right.button(
                    "Skip", key=f"sched_skip_{run.id}", on_click=_run_act, args=("skip", run.id)
                )
            if view.runs:
                st.dataframe(
                    pd.DataFrame(
                        [
                            {
                                "Due": ist(run.due_at),
                                "Run": _RUN_STATES.get(run.state, run.state),
                                "Batch": run.batch_id or "—",
                                "Rows": run.rows,
                                "Total": points(run.net),
                                "Note": run.note,
                            }
                            for run in view.runs
                        ]
                    ),
                    hide_index=True,
                    width="stretch",
                    key=f"sched_runs_{record.id}",
                )
            events = schedules.history(desk().ledger, record.id)
            if events:
                st.caption("Changes and decisions")
                st.dataframe(
                    pd.DataFrame(
                        [
                            {
                                "When": ist(e.at),
                                "Who": e.actor,
                                "What": e.action,
                                "Detail": e.detail,
                            }
                            for e in reversed(events)
                        ]
                    ),
                    hide_index=True,
                    width="stretch",
                    key=f"sched_events_{record.id}",
                )


# --- the forms ------------------------------------------------------------------------------------


def _error(prefix: str, field: str) -> None:
    message = st.session_state.get(f"{prefix}_errors", {}).get(field)
    if message:
        st.markdown(f":red[{md(message)}]")


def _fields(prefix: str, *, with_programme: bool) -> None:
    """The schedule form's widgets (keys ``{prefix}_{field}``), an error under each."""
    state = st.session_state
    # Defaults a person expects: today in India, 09:00 (not the server's clock and minute).
    state.setdefault(f"{prefix}_start_on", datetime.now(UTC).astimezone(IST).date())
    state.setdefault(f"{prefix}_time", time(9, 0))
    st.text_input(
        "Name", key=f"{prefix}_label", max_chars=100, placeholder="e.g. Monthly allowance"
    )
    _error(prefix, "label")
    if with_programme:
        programme_select(f"{prefix}_programme")
    _error(prefix, "programme")  # an edit's programme may have closed since
    repeat = st.radio(
        "Repeat",
        list(_REPEATS),
        key=f"{prefix}_repeat",
        format_func=_REPEATS.__getitem__,
        horizontal=True,
    )
    day_col, time_col, rule_col = st.columns(3)
    with day_col:
        st.date_input(
            "Date (IST)" if repeat == Repeat.ONCE.value else "From (IST)",
            key=f"{prefix}_start_on",
            format="DD/MM/YYYY",
        )
        _error(prefix, "start_on")
    with time_col:
        st.time_input("Time (IST)", key=f"{prefix}_time", step=900)
    with rule_col:
        if repeat == Repeat.MONTHLY.value:
            st.number_input(
                "Day of the month", 1, 31, key=f"{prefix}_day",
                help="29, 30 or 31 run on the last day of shorter months.",
            )  # fmt: skip
            _error(prefix, "day_of_month")
        elif repeat == Repeat.WEEKLY.value:
            st.selectbox(
                "Weekday", range(7), key=f"{prefix}_weekday", format_func=WEEKDAYS.__getitem__
            )
            _error(prefix, "weekday")
    if repeat != Repeat.ONCE.value:
        end_col, count_col = st.columns(2)
        with end_col:
            st.date_input(
                "Until (IST, optional)", key=f"{prefix}_end_on", value=None, format="DD/MM/YYYY"
            )
            _error(prefix, "end_on")
        with count_col:
            st.number_input("Number of runs (0: no limit)", 0, 1000, key=f"{prefix}_count", step=1)
            _error(prefix, "count")
    st.markdown("**Employees**")
    kind_col, reason_col = st.columns(2)
    kind_col.radio(
        "Kind",
        [Kind.CREDIT.value, Kind.DEBIT.value],
        key=f"{prefix}_kind",
        format_func=str.capitalize,
        horizontal=True,
    )
    reason_col.text_input("Reason", key=f"{prefix}_reason", max_chars=200)
    st.text_area(
        "Card ids and amounts, one per line",
        key=f"{prefix}_rows",
        placeholder="EKC04AZHXP, 500\nEKC9QW2ERT, 750",
        height=120,
    )
    st.file_uploader(
        "…or a bulk file (CSV or Excel, the Bulk allocation page's columns)",
        type=["csv", "xlsx"],
        key=f"{prefix}_file",
    )
    _error(prefix, "rows")


def _read(prefix: str) -> tuple[str, Rule, list[dict[str, Any]], dict[str, str]]:
    """What the form says: the name, the rule, the rows; and problems by field."""
    state = st.session_state
    the_desk = desk()
    repeat = Repeat(state.get(f"{prefix}_repeat") or Repeat.ONCE.value)
    count = int(state.get(f"{prefix}_count") or 0)
    rule = Rule(
        repeat=repeat,
        start_on=state.get(f"{prefix}_start_on") or datetime.now(UTC).astimezone(IST).date(),
        time_of_day=state.get(f"{prefix}_time") or time(9, 0),
        day_of_month=int(state.get(f"{prefix}_day") or 1) if repeat is Repeat.MONTHLY else None,
        weekday=int(state.get(f"{prefix}_weekday") or 0) if repeat is Repeat.WEEKLY else None,
        end_on=state.get(f"{prefix}_end_on") if repeat is not Repeat.ONCE else None,
        count=count or None if repeat is not Repeat.ONCE else None,
    )
    problems: dict[str, str] = {}
    upload = state.get(f"{prefix}_file")
    if upload is not None:
        # One check per uploaded file: the form reruns on every widget change (the pre-flight
        # reads the rows too), and checking a file asks EnKash about its new accounts.
        checked = state.get(f"{prefix}_checked")
        if checked is not None and checked[0] == upload.file_id:
            preview = checked[1]
        else:
            try:
                preview = bulk.preview_upload(
                    the_desk.ledger,
                    the_desk.client,
                    the_desk.settings,
                    upload.name,
                    upload.getvalue(),
                )
            except BulkFileError as error:
                return "", rule, [], {"rows": error_message(error)}
            state[f"{prefix}_checked"] = (upload.file_id, preview)
        rows = schedules.rows_from_preview(preview)
        if preview.rejected:
            first = preview.rejected[0]
            problems["rows"] = (
                f"{len(preview.rejected):,} row(s) of the file are wrong (row {first.number}: "
                f"{first.reason}); fix the file first"
            )
    else:
        rows, wrong = schedules.rows_from_text(
            state.get(f"{prefix}_rows") or "",
            state.get(f"{prefix}_kind") or Kind.CREDIT.value,
            state.get(f"{prefix}_reason") or "",
            the_desk.settings,
        )
        if wrong:
            line, message = next(iter(wrong.items()))
            where = f"line {line}: " if line else ""
            problems["rows"] = f"{where}{message}"
    return state.get(f"{prefix}_label") or "", rule, rows, problems


def _fail(prefix: str, error: PointsDeskError) -> None:
    """Field problems go next to their fields; anything else (someone changed the schedule
    meanwhile) is a notice."""
    fields = getattr(error, "fields", None)
    if fields:
        st.session_state[f"{prefix}_errors"] = fields
    else:
        set_error(error)


def _create() -> None:
    prefix = "new_sched"
    label, rule, rows, problems = _read(prefix)
    st.session_state[f"{prefix}_errors"] = problems
    if problems:
        return
    try:
        made = schedules.create(
            desk().ledger,
            label=label,
            programme=st.session_state.get(f"{prefix}_programme") or "",
            rule=rule,
            rows=rows,
            maker=operator(),
        )
    except PointsDeskError as error:
        _fail(prefix, error)
        return
    for field in ("label", "rows", "reason"):
        st.session_state[f"{prefix}_{field}"] = ""
    set_notice(
        "success",
        f"Set up {made.label} ({made.id}): it waits for a second person's approval before "
        "it sends anything.",
    )


def _preflight(prefix: str, programme: str | None) -> None:
    """What one run would do if it were sent now (services/preflight.py), once the form names
    its rows: how long it takes, the pool and the programme's budget after, rows that need
    approval. Nothing while a row is wrong (the form says what)."""
    _, _, rows, problems = _read(prefix)
    if problems or not rows:
        return
    planned = [
        PlannedRow(number, Kind(row["kind"]), Decimal(row["amount_cents"]) / 100, programme)
        for number, row in enumerate(rows, start=1)
    ]
    details = pool_details()
    with st.container(border=True):
        st.markdown("**Each run, were it sent now**")
        preflight_lines(
            planned,
            pool_balance=details.available_balance if details is not None else None,
            concurrency=DEFAULT_CONCURRENCY,
            rate_limit=None,
        )


def new_schedule() -> None:
    """The form that sets a schedule up (it then waits for approval)."""
    _fields("new_sched", with_programme=True)
    _preflight("new_sched", st.session_state.get("new_sched_programme") or None)
    st.button("Set up schedule", key="new_sched_submit", type="primary", on_click=_create)


def _load(schedule_id: str) -> None:
    """Put a schedule's current rule and rows into the edit form."""
    record = desk().ledger.get_schedule(schedule_id)
    if record is None:
        return
    # An edit waiting for approval is the latest word: a further edit starts from it, not from
    # the approved version (which would quietly drop the waiting change).
    rule = schedules.pending_rule(record) or schedules.rule_of(record)
    rows = desk().ledger.schedule_rows(record.id, record.pending_version or record.version)
    state = st.session_state
    state["edit_sched_label"] = (
        str(record.pending.get("label") or record.label) if record.pending_version else record.label
    )
    state["edit_sched_repeat"] = rule.repeat.value
    state["edit_sched_start_on"] = rule.start_on
    state["edit_sched_time"] = rule.time_of_day
    state["edit_sched_day"] = rule.day_of_month or 1
    state["edit_sched_weekday"] = rule.weekday or 0
    state["edit_sched_end_on"] = rule.end_on
    state["edit_sched_count"] = rule.count or 0
    # The text box holds rows of one kind and reason, by card id. Rows it cannot hold exactly (a
    # file's new accounts, mixed kinds or reasons) are not put in it, never changed silently:
    # the person uploads the changed file instead.
    plain = len({(r.kind, r.reason) for r in rows}) <= 1 and all(
        r.card_id and r.kind is not Kind.CREATE for r in rows
    )
    state["edit_sched_from_file"] = not plain
    state["edit_sched_kind"] = rows[0].kind.value if plain and rows else Kind.CREDIT.value
    state["edit_sched_reason"] = rows[0].reason if plain and rows else ""
    state["edit_sched_rows"] = "\n".join(f"{r.card_id}, {r.amount}" for r in rows) if plain else ""
    state["edit_sched_loaded"] = schedule_id
    state["edit_sched_seen"] = record  # what this person's edit is based on
    state.pop("edit_sched_errors", None)


def _save(schedule_id: str) -> None:
    prefix = "edit_sched"
    label, rule, rows, problems = _read(prefix)
    st.session_state[f"{prefix}_errors"] = problems
    if problems:
        return
    try:
        saved = schedules.edit(
            desk().ledger,
            schedule_id,
            actor=operator(),
            label=label,
            rule=rule,
            rows=rows,
            seen=st.session_state.get("edit_sched_seen"),
        )
    except Conflict as error:
        set_error(error)
        # The next run loads what is there now, so the person edits the latest version.
        st.session_state.pop("edit_sched_loaded", None)
        return
    except PointsDeskError as error:
        _fail(prefix, error)
        return
    set_notice(
        "warning",
        f"Changed the future runs of {saved.label}: the change waits for a second person's "
        "approval; runs already made keep their rows"
        + (
            "."
            if saved.state == "pending_approval"
            else ", and the approved version runs meanwhile."
        ),
        icon="👥",
    )
    st.session_state.pop("edit_sched_loaded", None)


def edit_schedule() -> None:
    """Choose a schedule that still runs and change its future runs."""
    open_ones = {
        s.id: s
        for s in desk().ledger.list_schedules(states=("pending_approval", "active", "paused"))
    }
    # A choice made when there was nothing to choose (None), or of a schedule that has ended
    # since, would keep the form empty: the first open schedule is chosen instead.
    if st.session_state.get("edit_sched_choice") not in open_ones:
        st.session_state.pop("edit_sched_choice", None)
    chosen = st.selectbox(
        "Schedule",
        list(open_ones),
        key="edit_sched_choice",
        format_func=lambda i: f"{open_ones[i].label} ({i})",
    )
    if chosen is None:
        st.caption("No schedule runs now.")
        return
    if st.session_state.get("edit_sched_loaded") != chosen:
        _load(chosen)
    if st.session_state.get("edit_sched_from_file"):
        st.info(
            "This schedule's rows came from a file (new accounts, or several kinds or reasons): "
            "upload the changed file below to save its future runs.",
            icon="📄",
        )
    _fields("edit_sched", with_programme=False)
    _preflight("edit_sched", open_ones[chosen].programme)
    st.button(
        "Save future runs", key="edit_sched_submit", type="primary", on_click=_save,
        args=(chosen,),
    )  # fmt: skip
