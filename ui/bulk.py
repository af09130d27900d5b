"""The pieces of the bulk allocation page: templates, preview, confirmation, live batch, history."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from services import approvals, bulk, corrections
from services.bulk_files import (
    COLUMNS,
    OPTIONAL_COLUMNS,
    BulkFileError,
    Preview,
    error_file,
    template_csv,
    template_xlsx,
)
from services.errors import ApprovalRequired, NotFound, PointsDeskError
from services.models import Kind, Status
from services.numbers import plural
from services.store import BatchRecord, DuplicateBatchFile
from ui.context import desk, operator, session_id
from ui.format import ist, points
from ui.glossary import status_glossary
from ui.notice import set_error, set_notice
from ui.preflight import preflight_lines, rows_of
from ui.sidebar import forget_pool, pool_read_at
from ui.text import code, md

OPEN = "bulk_open_batch"
UPLOADS = "bulk_upload_round"
REPEATS = "bulk_repeats"  # (file digest, Repeats) of the previewed file
ACKNOWLEDGE = "bulk_ack_repeats"
ACKNOWLEDGE_LABEL = "I know these rows were paid before; pay them again"
_STATE_LOOK = {
    "queued": ("Queued", "gray", "⏳"),
    "running": ("Running", "blue", "▶️"),
    "paused": ("Paused", "orange", "⏸️"),
    "cancelled": ("Cancelled", "gray", "⏹️"),
    "finished": ("Finished", "green", "✅"),
    "settling": ("Settling", "orange", "⏳"),
    "interrupted": ("Interrupted", "red", "⚠️"),
    "approval": ("Awaiting approval", "violet", "👥"),
}
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def template_downloads() -> None:
    with st.expander("Templates and column guide", icon="📄"):
        csv_col, xlsx_col, _ = st.columns([1, 1, 3])
        csv_col.download_button(
            "CSV template",
            template_csv(),
            "points-desk-bulk.csv",
            "text/csv",
            key="bulk_template_csv",
            on_click="ignore",
            icon="⬇️",
        )
        xlsx_col.download_button(
            "Excel template",
            template_xlsx(),
            "points-desk-bulk.xlsx",
            XLSX_MIME,
            key="bulk_template_xlsx",
            on_click="ignore",
            icon="⬇️",
        )
        st.markdown(
            "One row per movement. **kind**: `create` (new card with its first points), "
            "`credit` or `debit` (CR/DR work too). **create** needs first_name, title (Mr/Mrs/Ms), "
            "gender (M/F), email and a 10-digit mobile; **credit/debit** need the card_id. "
            "**amount** in points (up to 2 decimals); **reason** is optional. Headers may be "
            "spelled loosely (`First Name`, `Phone`, `Points`, `Type`). Up to 50,000 rows or "
            "10 MB per file; CSV (comma or semicolon) or .xlsx."
        )
        st.caption(
            "Each template holds one example row (reason “Example — delete this row”): replace "
            "it with your own rows. Left in, it is refused, so a template uploaded as it is "
            "pays nobody."
        )


def upload_round() -> int:
    return st.session_state.setdefault(UPLOADS, 0)


def load_preview(uploaded: Any, programme: str | None = None) -> Preview | None:
    """Parse and check an upload once per file and programme (reruns reuse the result).
    ``programme``: the code of the programme for rows without a ``programme`` cell."""
    content = uploaded.getvalue()
    cache_key = (uploaded.name, len(content), hash(content), programme)
    cached = st.session_state.get("bulk_preview")
    if cached and cached[0] == cache_key:
        return cached[1]
    the_desk = desk()
    try:
        with st.spinner("Checking every row…"):
            preview = bulk.preview_upload(
                the_desk.ledger,
                the_desk.client,
                the_desk.settings,
                uploaded.name,
                content,
                programme=programme,
            )
    except (BulkFileError, NotFound) as error:
        st.error(md(error), icon="🚫")
        return None
    st.session_state["bulk_preview"] = (cache_key, preview)
    return preview


def repeats_of(preview: Preview) -> bulk.Repeats:
    """The previewed file's rows that repeat recent batches (asked once per file)."""
    cached = st.session_state.get(REPEATS)
    if cached and cached[0] == preview.file.digest:
        return cached[1]
    repeats = bulk.find_repeats(desk().ledger, preview)
    st.session_state[REPEATS] = (preview.file.digest, repeats)
    st.session_state.pop(ACKNOWLEDGE, None)  # a new file is acknowledged afresh
    return repeats


def acknowledged(preview: Preview) -> bulk.Repeats | None:
    """The repeats the manager ticked the acknowledgement for (``None`` if not ticked)."""
    repeats = repeats_of(preview)
    return repeats if repeats and st.session_state.get(ACKNOWLEDGE) else None


def _repeats_notice(repeats: bulk.Repeats) -> None:
    lines = [
        f"**{len(mine):,} of {repeats.checked:,} rows repeat batch `{batch_id}` of "
        f"{ist(at, '%d %b')}** (rows {bulk.row_list(mine)}; its rows {bulk.row_list(theirs)})"
        for batch_id, at, mine, theirs in repeats.by_batch()
    ]
    st.warning(
        "  \n".join(lines) + "  \nSame card or employee, kind and amount as a batch of the last "
        "30 days: these people may be paid twice. The repeated rows are marked in the table.",
        icon="🔁",
    )
    st.checkbox(ACKNOWLEDGE_LABEL, key=ACKNOWLEDGE)


def _valid_table(preview: Preview, repeats: bulk.Repeats | None = None) -> pd.DataFrame:
    earlier = repeats.rows if repeats else {}
    return pd.DataFrame(
        [
            {
                "Row": row.number,
                **(
                    {
                        "Paid before": "🔁 "
                        + ", ".join(f"{e.batch_id} row {e.row_number}" for e in earlier[row.number])
                        if row.number in earlier
                        else ""
                    }
                    if earlier
                    else {}
                ),
                "Kind": row.allocation.kind.value,
                "Name": row.values.get("first_name", ""),
                "Email": row.allocation.employee.email if row.allocation.employee else "",
                "Mobile": row.allocation.employee.mobile if row.allocation.employee else "",
                "Card id": row.allocation.card_id or "",
                "Points": float(row.allocation.amount),
                "Reason": row.allocation.reason,
                "Programme": row.allocation.programme or "",
            }
            for row in preview.valid
        ]
    )


def _rejected_table(preview: Preview) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"Row": row.number, "Problem": row.reason}
            | {
                column: row.values.get(column, "")
                for column in (*COLUMNS, *OPTIONAL_COLUMNS)
                if column in COLUMNS or column in preview.file.columns
            }
            for row in preview.rejected
        ]
    )


def _programme_totals(preview: Preview) -> None:
    """Per programme the file touches: its credits against what its budget has left."""
    if not preview.programmes:
        return
    # A static table: st.table reads its cells and index as Markdown, so the programme's name
    # (typed by people) is escaped to read as typed.
    st.table(
        pd.DataFrame(
            [
                {
                    "Programme": md(f"{t.name} ({t.code})"),
                    "Credits": f"{points(t.credit_points)} ({t.credit_rows:,} rows)",
                    "Debits": f"{points(t.debit_points)} ({t.debit_rows:,} rows)",
                    "Remaining now": "no limit" if t.remaining is None else points(t.remaining),
                    "Remaining after": "no limit"
                    if t.remaining_after is None
                    else points(t.remaining_after),
                    "Refused (over budget)": f"{t.refused_rows:,} rows" if t.refused_rows else "",
                }
                for t in preview.programmes
            ]
        ).set_index("Programme"),
    )
    over = sum(t.refused_rows for t in preview.programmes)
    if over:
        st.warning(
            f"{over:,} credit rows do not fit their programme's remaining budget; they are in the "
            "Rejected tab, each with how much is left.",
            icon="🎯",
        )


def render_preview(preview: Preview) -> bool:
    """Totals, pool verdict, valid and rejected rows. Returns whether the batch may be sent."""
    totals = preview.totals
    existing = desk().ledger.batch_by_digest(preview.file.digest)
    if existing is not None:
        st.error(
            f"This exact file was already queued as batch **{md(existing.batch_id)}** on "
            f"{ist(existing.created_at)} by {md(existing.operator)} ({existing.state}). "
            "It will not be sent again, so nobody is paid twice.",
            icon="🛑",
        )
        st.button(
            "Open that batch",
            key="bulk_open_existing",
            on_click=open_batch,
            args=(existing.batch_id,),
        )
    cells = st.columns([1, 1, 1.5, 1.5])
    cells[0].metric(
        "Ready to send",
        f"{totals.valid:,}",
        f"of {totals.rows:,} rows",
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    cells[1].metric(
        "Rejected",
        f"{totals.rejected:,}",
        "see the tab below" if totals.rejected else "none",
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    cells[2].metric(
        "Credits (points)",
        points(totals.credit_points),
        f"{totals.credit_rows:,} rows",
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    cells[3].metric(
        "Debits (points)",
        points(totals.debit_points),
        f"{totals.debit_rows:,} rows",
        delta_color="off",
        delta_arrow="off",
        border=True,
    )
    fits = preview.fits_pool
    if fits is None:
        st.warning(
            "EnKash did not say how much is in the pool; EnKash refuses credits beyond it.",
            icon="⚠️",
        )
    elif fits:
        st.success(
            f"Fits the pool: {points(totals.credit_points)} points of credits, "
            f"{points(preview.pool_balance)} available. Net change "
            f"{points(totals.net_points)}.",
            icon="✅",
        )
    else:
        st.error(
            f"Does not fit the pool: credits need {points(totals.credit_points)} points, "
            f"the pool holds {points(preview.pool_balance)} (short by "
            f"{points(preview.shortfall)}). Top up the pool or split the file.",
            icon="🚫",
        )
    for warning in preview.warnings:
        st.info(md(warning), icon="ℹ️")
    _programme_totals(preview)
    repeats = repeats_of(preview)
    if repeats:
        _repeats_notice(repeats)
    ready, rejected = st.tabs(
        [f"Ready to send ({totals.valid:,})", f"Rejected ({totals.rejected:,})"]
    )
    with ready:
        if preview.valid:
            st.dataframe(
                _valid_table(preview, repeats),
                hide_index=True,
                height=260,
                column_config={"Points": st.column_config.NumberColumn(format="%.2f")},
            )
        else:
            st.caption("No row is ready to send.")
    with rejected:
        if preview.rejected:
            st.dataframe(_rejected_table(preview), hide_index=True, height=260)
            st.download_button(
                "Download rejected rows (CSV)",
                error_file(preview),
                f"rejected-{preview.file.name.rsplit('.', 1)[0]}.csv",
                "text/csv",
                key="bulk_error_file",
                on_click="ignore",
                icon="⬇️",
            )
        else:
            st.caption("Every row passed the checks.")
    acknowledged_or_none = not repeats or bool(st.session_state.get(ACKNOWLEDGE))
    return existing is None and bool(preview.valid) and fits is not False and acknowledged_or_none


def _confirm(
    preview: Preview,
    concurrency: int,
    rate: float,
    the_desk: Any,
    actor: str,
    sid: str,
    repeats: bulk.Repeats | None = None,
) -> None:
    # Runs as the dialog button's callback (the documented way; see DESIGN.md "Streamlit notes").
    st.session_state["bulk_confirmed"] = preview.file.digest
    try:
        record = bulk.queue_batch(
            the_desk.ledger,
            preview,
            operator=actor,
            concurrency=concurrency,
            rate_limit=rate or None,
            session_id=sid,
            acknowledged=repeats,
        )
        held = bulk.start_or_ask_approval(
            the_desk.ledger, the_desk.settings, record.batch_id, actor=actor, wake=the_desk.pick_up
        )
    except bulk.RepeatedRows as repeated:
        # Another batch repeating these rows was queued since the preview: show it and ask again.
        st.session_state.pop(REPEATS, None)
        set_notice("error", f"Nothing was sent: {repeated}.")
        return
    except DuplicateBatchFile as duplicate:
        set_notice(
            "error",
            f"This file was already queued as batch {duplicate.existing.batch_id}; "
            "nothing new was sent.",
        )
        return
    except PointsDeskError as error:
        set_error(error, lead="Nothing was sent: ")
        return
    st.session_state[OPEN] = record.batch_id
    st.session_state[UPLOADS] = upload_round() + 1  # a fresh uploader: the file is done with
    st.session_state.pop("bulk_preview", None)
    st.session_state.pop(REPEATS, None)
    st.session_state.pop(ACKNOWLEDGE, None)
    forget_pool()
    if held:
        why = " and ".join(bulk.approval_reasons(the_desk.ledger, the_desk.settings, record))
        set_notice(
            "info",
            f"Batch {record.batch_id} ({record.row_count:,} rows) {why}: it waits for a second "
            "person to approve it on the Approvals page. Nothing is sent until then.",
        )
    else:
        set_notice("success", f"Batch {record.batch_id} is sending: {record.row_count:,} rows.")


def _fallback_reasons(preview: Preview) -> list[str]:
    """Why the batch waits by the global thresholds alone, for when the pre-flight could not
    be worked out (it knows neither programmes' thresholds nor operators' monthly limits)."""
    totals = preview.totals
    debits = [v for v in preview.valid if v.allocation.kind is Kind.DEBIT]
    largest = max(debits, key=lambda v: v.allocation.amount) if debits else None
    return approvals.batch_approval_reasons(
        totals.credit_points + totals.debit_points,
        (largest.number, largest.allocation.amount) if largest else None,
        desk().settings,
    )


@st.dialog("Send this batch?")
def confirm_dialog(preview: Preview, concurrency: int, rate: float) -> None:
    if st.session_state.pop("bulk_confirmed", None) == preview.file.digest:
        st.rerun()  # the callback queued it: close the dialog and show the live batch
    # (A mark left by an earlier file, when its dialog was not rerun, must not close this one.)
    totals = preview.totals
    credits, debits = plural(totals.credit_rows, "row"), plural(totals.debit_rows, "row")
    st.markdown(
        f"**{plural(totals.valid, 'row')}** from {code(preview.file.name)}  \n"
        f"Credits: **{points(totals.credit_points)}** points ({credits})  \n"
        f"Debits: **{points(totals.debit_points)}** points ({debits})  \n"
        f"Net from the pool: **{points(totals.net_points)}** points"
    )
    if totals.rejected:
        st.caption(f"{totals.rejected:,} rejected rows are left out.")
    touched = [t for t in preview.programmes if t.credit_rows or t.debit_rows]
    if touched:
        st.markdown(
            "Programmes: "
            + "; ".join(
                f"**{md(t.name)}** {points(t.credit_points)} credited"
                + ("" if t.remaining_after is None else f", {points(t.remaining_after)} left")
                for t in touched
            )
        )
    # Why the batch will wait comes from the pre-flight below (the rules the service holds a
    # queued batch by: per-programme debit thresholds, the operator's monthly limits); it is
    # said here, above the repeats and the figures.
    waits = st.container()
    repeats = acknowledged(preview)
    if repeats:
        st.warning(
            f"Pays again {len(repeats.rows):,} rows that repeat an earlier batch, as you "
            "acknowledged.",
            icon="🔁",
        )
    found = preflight_lines(
        rows_of(preview),
        pool_balance=preview.pool_balance,
        concurrency=concurrency,
        rate_limit=rate or None,
        operator=operator(),
    )
    why = found.batch_reasons if found is not None else _fallback_reasons(preview)
    if why:
        # The reasons name programmes and operators: text people typed.
        waits.info(
            f"This batch {md(' and '.join(why))}: it waits for a second person's approval "
            "before anything is sent.",
            icon="👥",
        )
    elif found is None:
        waits.caption("If the batch needs a second person's approval, it waits for it.")
    st.caption(
        f"Sent {concurrency} at a time"
        + (f", at most {rate:g} per second." if rate else ".")
        + " Sending continues if you close this page."
    )
    send, back = st.columns(2)
    send.button(
        "Queue for approval" if why else "Send now" if found is not None else "Confirm",
        type="primary",
        key="bulk_confirm",
        on_click=_confirm,
        args=(preview, concurrency, rate, desk(), operator(), session_id(), repeats),
        width="stretch",
    )
    if back.button("Not yet", key="bulk_cancel_dialog", width="stretch"):
        st.rerun()


def open_batch(batch_id: str) -> None:
    st.session_state[OPEN] = batch_id


def _act(action: str, batch_id: str, the_desk: Any, actor: str) -> None:
    try:
        if action == "pause":
            bulk.pause_batch(the_desk.ledger, batch_id, actor=actor, stop=the_desk.runner.stop)
        elif action == "resume":
            bulk.start_batch(
                the_desk.ledger, the_desk.settings, batch_id, actor=actor, wake=the_desk.pick_up
            )
        elif action == "cancel":
            count = bulk.cancel_batch(
                the_desk.ledger, batch_id, actor=actor, stop=the_desk.runner.stop
            )
            set_notice("info", f"Batch {batch_id} cancelled: {count:,} rows were not sent.")
        elif action == "close":
            st.session_state.pop(OPEN, None)
    except ApprovalRequired as error:
        set_error(error, lead="Not started: ")
    except PointsDeskError as error:
        set_error(error, lead=f"Could not {action} the batch: ")


def _state_of(progress: bulk.Progress) -> str:
    if progress.awaiting_approval:
        return "approval"
    return "interrupted" if progress.interrupted else progress.state


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


def batch_panel(batch_id: str) -> None:
    """The open batch: live while it runs (polled every second), with its report when done."""
    try:
        first = bulk.progress(desk().ledger, batch_id)
    except NotFound:
        st.session_state.pop(OPEN, None)
        return
    live = first.active

    @st.fragment(run_every=1.0 if live else None)
    def panel() -> None:
        p = bulk.progress(desk().ledger, batch_id)
        record = p.batch
        state = _state_of(p)
        label, color, icon = _STATE_LOOK[state]
        with st.container(border=True, key="bulk_batch_panel"):
            head, badge = st.columns([4, 1])
            head.markdown(
                f"**{md(record.file_name)}** · batch {code(record.batch_id)} · "
                f"{ist(record.created_at)} · {md(record.operator)}"
            )
            badge.badge(label, icon=icon, color=color)
            st.progress(p.fraction, text=f"{p.done:,} of {p.total:,} rows done")
            c = p.counts
            cells = st.columns(5)
            cells[0].metric("Succeeded", f"{c[Status.SUCCEEDED]:,}")
            cells[1].metric("Refused / not sent", f"{c[Status.FAILED]:,}")
            cells[2].metric(
                "Unknown",
                f"{c[Status.UNKNOWN]:,}",
                help="Sent, no readable answer: settled by lookup, never resent "
                "blindly. Left-over ones appear on the Reconcile page.",
            )
            cells[3].metric("Waiting", f"{p.remaining:,}")
            if record.finished_at and record.started_at and not p.active:
                took = (record.finished_at - record.started_at).total_seconds()
                cells[4].metric("Took", _eta(max(took, 1.0)))
            else:
                cells[4].metric(
                    "Rate · ETA",
                    f"{p.rate:.0f}/s · {_eta(p.eta_seconds)}" if p.rate is not None else "—",
                )
            if state == "interrupted":
                st.warning(
                    "The worker sending this batch stopped. A running worker picks it up "
                    "again by itself; rows that were in flight are looked up at EnKash "
                    "before anything is sent again. If nothing moves, check that a worker "
                    "is running (`scripts/run` starts one).",
                    icon="⚠️",
                )
            elif (
                record.note
                and record.note not in ("finished",)
                and not record.note.startswith("started by")
            ):
                st.caption(md(record.note))
            _controls(p, state)
        read_at = pool_read_at()
        stale_pool = bool(
            not p.active and record.finished_at and read_at and read_at < record.finished_at
        )
        if p.active != live or stale_pool:
            if live or stale_pool:
                # It finished while this page watched, or after the pool shown was read: points
                # moved, so the sidebar's pool (and the rest of the page) are drawn again from
                # fresh figures, once (the pool read then is newer than the finish).
                forget_pool()
            st.rerun(scope="app")

    panel()
    if not live:
        batch_rows(batch_id)
    status_glossary(key="bulk_glossary")


ROW_STATUSES = ("SUCCEEDED", "FAILED", "UNKNOWN", "QUEUED", "SENDING", bulk.REJECTED)


def batch_rows(batch_id: str) -> None:
    """Every input row of the batch with what EnKash said, filterable by status; the failed rows
    as a correction file; a link to History filtered by the batch."""
    ledger = desk().ledger
    lines = bulk.report_rows(ledger, batch_id)
    header = bulk.REPORT_HEADER
    at = {name: header.index(name) for name in header}
    with st.expander(f"Rows ({len(lines):,})", icon=":material/table_rows:", expanded=True):
        shown = st.multiselect(
            "Status",
            [s for s in ROW_STATUSES if any(line[at["status"]] == s for line in lines)],
            key="bulk_rows_status",
            placeholder="All statuses",
        )
        chosen = [line for line in lines if not shown or line[at["status"]] in shown]
        st.dataframe(
            pd.DataFrame(
                {
                    "Row": [line[at["row"]] for line in chosen],
                    "Status": [str(line[at["status"]]).title() for line in chosen],
                    "Employee": [
                        line[at["first_name"]] or line[at["email"]] or line[at["card_id"]]
                        for line in chosen
                    ],
                    "Points": [str(line[at["amount"]]) for line in chosen],
                    "EnKash's message": [line[at["message"]] for line in chosen],
                    "Reference": [line[at["reference"]] for line in chosen],
                    "Corrects": [line[at["corrects"]] for line in chosen],
                }
            ),
            hide_index=True,
            key="bulk_rows_table",
        )
        st.page_link(
            "pages/history.py",
            label="Open these rows in History",
            query_params={"batch": batch_id},
            icon=":material/history:",
        )
        failed, unsettled = bulk.correction_rows(ledger, batch_id)
        if failed:
            st.download_button(
                f"Download failed rows ({len(failed):,}) as a correction file",
                lambda: bulk.correction_file(ledger, batch_id),
                f"corrections-{batch_id}.csv",
                "text/csv",
                key="bulk_correction_file",
                on_click="ignore",
                icon=":material/build:",
                help="The failed rows, pre-filled, each naming the row it corrects: fix what "
                "EnKash refused and upload it here. Each failed row can be paid only once.",
            )
        if unsettled:
            st.caption(
                f"{len(unsettled):,} rows are not correctable yet: their outcome is not known "
                f"({', '.join(code(r.reference) for r in unsettled[:5])}"
                f"{', …' if len(unsettled) > 5 else ''}). Settle them on Reconcile first; "
                "correcting them now could pay twice."
            )
        record = ledger.get_batch(batch_id)
        if (
            record is not None
            and record.state == "finished"
            and any(line[at["status"]] == Status.SUCCEEDED.value for line in lines)
            and not ledger.is_reversal_batch(batch_id)
            and st.button(
                "Reverse this batch…",
                key="bulk_reverse",
                icon=":material/undo:",
                help="Take back every succeeded row, as one reversal batch a second person "
                "approves. You see first which rows cannot be reversed fully, and why.",
            )
        ):
            reverse_dialog(batch_id)


REVERSE_REASON = "bulk_reverse_reason"


def _reverse(batch_id: str, the_desk: Any, actor: str, sid: str) -> None:
    # Runs as the dialog button's callback, like _confirm.
    try:
        asked = corrections.request_batch_reversal(
            the_desk.ledger,
            the_desk.settings,
            batch_id,
            maker=actor,
            reason=st.session_state.get(REVERSE_REASON, ""),
            session_id=sid,
        )
    except PointsDeskError as error:
        set_error(error, lead="Nothing was reversed: ")
        return
    st.session_state["bulk_reversed"] = batch_id
    st.session_state.pop(REVERSE_REASON, None)
    record = asked.batch
    st.session_state[OPEN] = record.batch_id
    short = asked.preview.short
    set_notice(
        "info",
        f"Reversal batch {record.batch_id} ({record.row_count:,} rows, "
        f"{points(record.credit_points + record.debit_points)} points) waits for a second person "
        "to approve it on the Approvals page; nothing is sent until then."
        + (f" {len(short):,} rows cannot be reversed fully; its report says why." if short else ""),
    )


@st.dialog("Reverse this batch?", width="large")
def reverse_dialog(batch_id: str) -> None:
    if st.session_state.pop("bulk_reversed", None) == batch_id:
        st.rerun()  # the callback queued it: close the dialog and show the reversal batch
    try:
        preview = corrections.preview_batch_reversal(desk().ledger, batch_id)
    except PointsDeskError as error:
        st.error(md(str(error)))
        return
    st.markdown(
        f"**{len(preview.reversible):,} of {len(preview.lines):,} succeeded rows** can be "
        f"reversed now: **{points(preview.total)}** points taken back, as one reversal batch. "
        "A second person approves it on the Approvals page before anything is sent."
    )
    if preview.short:
        st.warning(
            f"{len(preview.short):,} rows cannot be reversed fully: what can be is reversed, "
            "the rest is left and the report says why.",
            icon="⚠️",
        )
        st.dataframe(
            pd.DataFrame(
                {
                    "Row": [line.row_number for line in preview.short],
                    "Employee": [line.first_name or line.card_id for line in preview.short],
                    "Points": [str(line.amount) for line in preview.short],
                    "Can reverse": [str(line.reversible) for line in preview.short],
                    "Why not in full": [line.why for line in preview.short],
                    "Reference": [line.reference for line in preview.short],
                }
            ),
            hide_index=True,
            key="bulk_reverse_short",
        )
    st.text_input(
        "Reason",
        key=REVERSE_REASON,
        max_chars=200,
        placeholder="Why these movements are taken back (the approver and History show it)",
    )
    ask, back = st.columns(2)
    ask.button(
        "Ask for approval",
        type="primary",
        key="bulk_reverse_confirm",
        on_click=_reverse,
        args=(batch_id, desk(), operator(), session_id()),
        disabled=not preview.reversible,
        width="stretch",
    )
    if back.button("Not now", key="bulk_reverse_back", width="stretch"):
        st.rerun()


def _controls(p: bulk.Progress, state: str) -> None:
    batch_id = p.batch.batch_id
    args = (batch_id, desk(), operator())
    row = st.container(horizontal=True, key="bulk_controls")
    if state == "running":
        row.button("Pause", key="bulk_pause", on_click=_act, args=("pause", *args), icon="⏸️")
    if state in ("paused", "interrupted", "queued"):
        row.button(
            "Resume",
            key="bulk_resume",
            on_click=_act,
            args=("resume", *args),
            icon="▶️",
            type="primary",
        )
    if state == "approval":
        row.caption("Waiting for a second person on the Approvals page.")
    if state in ("running", "paused", "interrupted", "queued", "approval"):
        row.button(
            "Cancel the rest" if state != "approval" else "Withdraw",
            key="bulk_cancel",
            on_click=_act,
            args=("cancel", *args),
            icon="⏹️",
            help="Rows not yet sent are marked cancelled; rows in flight finish.",
        )
    if not p.active and state != "approval":
        ledger = desk().ledger
        name = f"report-{batch_id}"
        row.download_button(
            "Report (CSV)",
            lambda: bulk.report_csv(ledger, batch_id),
            f"{name}.csv",
            "text/csv",
            key="bulk_report_csv",
            on_click="ignore",
            icon="⬇️",
            type="primary",
        )
        row.download_button(
            "Report (Excel)",
            lambda: bulk.report_xlsx(ledger, batch_id),
            f"{name}.xlsx",
            XLSX_MIME,
            key="bulk_report_xlsx",
            on_click="ignore",
            icon="⬇️",
        )
    row.button("Close", key="bulk_close", on_click=_act, args=("close", *args))


def batch_history() -> None:
    ledger = desk().ledger
    records: list[BatchRecord] = ledger.list_batches(limit=10)
    if desk().is_sandbox:
        st.caption(
            "Demo data (Overview → Load demo data) sends its monthly files as batches: they are "
            "listed here with the dates they were planned for."
        )
    if not records:
        st.caption("No batches yet.")
        return
    for record in records:
        p = bulk.progress(ledger, record.batch_id)
        label, color, icon = _STATE_LOOK[_state_of(p)]
        name, state, done, when, action = st.columns(
            [3, 1.8, 1.6, 1.8, 1], vertical_alignment="center"
        )
        name.markdown(f"**{md(record.file_name)}**  \n{code(record.batch_id)}")
        state.badge(label, icon=icon, color=color)
        done.markdown(f"{p.done:,} / {p.total:,} rows  \n{points(record.credit_points)} points")
        when.caption(f"{ist(record.created_at)}  \n{md(record.operator)}")
        action.button(
            "Open",
            key=f"bulk_open_{record.batch_id}",
            on_click=open_batch,
            args=(record.batch_id,),
            width="stretch",
        )
