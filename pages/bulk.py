"""Bulk allocation: upload a file, check every row, confirm, and watch it send in the background."""

import streamlit as st

from services.bulk import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from services.numbers import plural
from ui import bulk as ui
from ui.access import require
from ui.notice import show_notices
from ui.programmes import programme_select
from ui.sidebar import mode_banner

mode_banner()
require("move")
st.title("Bulk allocation")
st.caption(
    "Open, credit or debit many cards from one CSV or Excel file. Every row is checked before "
    "anything is sent; once confirmed, the batch keeps sending even if you leave this page."
)
show_notices()
ui.template_downloads()

with st.container():  # drawn when empty too, so the upload below keeps its place
    if st.session_state.get(ui.OPEN):
        st.subheader("Batch")
        ui.batch_panel(st.session_state[ui.OPEN])

st.subheader("Upload a file")
programme = programme_select("bulk_programme")
st.caption(
    "Rows with a `programme` column (code or name) count against the programme they name; "
    "the others against the one chosen here."
)
uploaded = st.file_uploader(
    "CSV or Excel file",
    type=["csv", "xlsx"],
    key=f"bulk_upload_{ui.upload_round()}",
    max_upload_size=10,
    help="Up to 50,000 rows or 10 MB. Download a template above to see the columns.",
)
if uploaded is not None:
    preview = ui.load_preview(uploaded, programme)
    if preview is not None:
        sendable = ui.render_preview(preview)
        with st.expander("Advanced", icon=":material/tune:"):
            st.caption(
                "How fast the batch is sent. The defaults suit EnKash; change them only "
                "if EnKash asks partners to slow down."
            )
            speed, cap = st.columns(2)
        concurrency = speed.number_input(
            "Rows sent at a time",
            min_value=1,
            max_value=MAX_CONCURRENCY,
            value=DEFAULT_CONCURRENCY,
            key="bulk_concurrency",
            help="Parallel calls to EnKash (1–32).",
        )
        rate = cap.number_input(
            "Max rows per second",
            min_value=0.0,
            value=0.0,
            step=10.0,
            key="bulk_rate",
            help="0 means no cap. Lower it if EnKash asks partners to slow down.",
        )
        if st.button(
            f"Send {plural(preview.totals.valid, 'row')}…",
            type="primary",
            key="bulk_send",
            disabled=not sendable,
        ):
            ui.confirm_dialog(preview, int(concurrency), float(rate))

st.subheader("Recent batches")
ui.batch_history()
