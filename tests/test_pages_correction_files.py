"""The Bulk page's batch rows (filterable, linked to History by batch) and the failed-rows round
trip under AppTest: download the failed rows as a correction file, upload it, send it; a second
file for the same rows is refused row by row."""

from __future__ import annotations

from services import bulk
from services.models import Status
from tests.test_bulk_page import BAD, BULK, GOOD, content, page_text, send_and_wait, upload


def rows_table(app):
    return next(d.value for d in app.dataframe if "EnKash's message" in d.value.columns)


def test_a_batch_shows_every_row_filterable_and_links_to_history_by_batch(app, app_desk):
    app_desk.sandbox.knobs.refuse_with = "Daily limit reached"
    app.switch_page(BULK).run()
    upload(app, "october.csv", content(*GOOD, *BAD))
    batch_id, _ = send_and_wait(app, app_desk)
    table = rows_table(app)
    assert list(table["Row"]) == [2, 3, 4, 5, 6, 7, 8]
    assert list(table["Status"]) == ["Failed"] * 5 + ["Rejected"] * 2
    assert table["Employee"][0] == "Priya" and table["Employee"][5] == "R2D2"
    assert table["EnKash's message"][0] == "Daily limit reached"
    assert table["Reference"][0] == f"{batch_id}-000002"
    app.multiselect(key="bulk_rows_status").select("REJECTED").run()
    assert list(rows_table(app)["Row"]) == [7, 8]
    links = [link for link in app.get("page_link") if "History" in link.proto.label]
    assert links and f"batch={batch_id}" in links[0].proto.query_string

    app.query_params["batch"] = batch_id
    app.switch_page("pages/history.py").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="history_batch").value == batch_id


def test_failed_rows_round_trip_pays_each_once(app, app_desk):
    app_desk.sandbox.knobs.refuse_with = "Daily limit reached"
    app.switch_page(BULK).run()
    upload(app, "october.csv", content(*GOOD))
    batch_id, _ = send_and_wait(app, app_desk)
    labels = [b.label for b in app.get("download_button")]
    assert "Download failed rows (5) as a correction file" in labels
    app_desk.sandbox.knobs.refuse_with = ""

    fixes = bulk.correction_file(app_desk.ledger, batch_id)  # what the button hands out
    app.button(key="bulk_close").click().run()
    upload(app, "corrections.csv", fixes)
    fixed, _ = send_and_wait(app, app_desk)
    rows = app_desk.ledger.rows(batch_id=fixed, order="row_number")
    assert [r.status for r in rows] == [Status.SUCCEEDED] * 5
    originals = app_desk.ledger.rows(batch_id=batch_id, order="row_number")
    assert [r.corrects for r in rows] == [r.reference for r in originals]
    assert list(rows_table(app)["Corrects"]) == [r.reference for r in originals]
    assert "Download failed rows" not in " ".join(b.label for b in app.get("download_button"))

    upload(app, "corrections-again.csv", fixes + b"\r\n")
    text = page_text(app)
    rejected = next(d.value for d in app.dataframe if "Problem" in d.value.columns)
    assert len(rejected) == 5 and "already corrected by" in rejected["Problem"][0]
    assert app.button(key="bulk_send").disabled, text
    assert app_desk.sandbox.store.commit_count() == 5
