"""The bulk allocation page under AppTest, and one end-to-end run in a real browser."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services import bulk
from services.models import Status
from tests.browser_support import browser_page, running_dashboard, screenshot, wait_idle

BULK = "pages/bulk.py"
HEADER = "Type,First Name,Title,Gender,Email,Phone,Card ID,Points,Reason"
GOOD = [
    f"create,{name},Ms,F,{name.lower()}@example.com,98000000{n:02d},,{100 * (n + 1)},October"
    for n, name in enumerate(["Priya", "Ananya", "Diya", "Sara", "Myra"])
]
BAD = [
    "create,R2D2,Dr,X,not-an-email,12345,,1e3,",
    "credit,,,,,,,250,",
]


def content(*lines: str) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def page_text(at) -> str:
    parts = []
    for kind in ("markdown", "success", "error", "warning", "info", "caption"):
        parts.extend(str(element.value) for element in getattr(at, kind))
    return "\n".join(parts)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def upload(at, name: str, data: bytes):
    at.file_uploader[0].upload(name, data, "text/csv")
    at.run()
    assert not at.exception, at.exception
    return at


def send_and_wait(at, the_desk) -> tuple[str, str]:
    """Send the uploaded file; returns the batch id and the page text right after confirming."""
    at.button(key="bulk_send").click().run()
    assert "Send now" in [b.label for b in at.button]
    at.button(key="bulk_confirm").click().run()
    assert not at.exception, at.exception
    notice = page_text(at)  # the one-time notice shows on this run
    batch_id = the_desk.ledger.list_batches()[0].batch_id
    assert the_desk.runner.wait(batch_id, timeout=30)
    at.run()
    return batch_id, notice


def test_preview_shows_totals_the_pool_verdict_and_each_rejected_row(app, app_desk):
    app.switch_page(BULK).run()
    assert [b.label for b in app.get("download_button")][:2] == ["CSV template", "Excel template"]
    upload(app, "october.csv", content(*GOOD, *BAD))
    shown = metrics(app)
    assert shown["Ready to send"] == "5" and shown["Rejected"] == "2"
    assert shown["Credits (points)"] == "1,500.00" and shown["Debits (points)"] == "0.00"
    text = page_text(app)
    assert "Fits the pool: 1,500.00 points of credits, 1,00,00,000.00 available" in text
    rejected = app.dataframe[1].value
    assert list(rejected["Row"]) == [7, 8]
    assert "Title must be one of Mr, Mrs, Ms" in rejected["Problem"][0]
    assert "card_id: Give the card id" in rejected["Problem"][1]
    assert "Download rejected rows (CSV)" in [b.label for b in app.get("download_button")]
    assert not app.button(key="bulk_send").disabled
    assert app_desk.ledger.rows() == [] and app_desk.sandbox.store.allocate_requests() == 0


def test_confirming_sends_in_the_background_and_the_report_is_offered(app, app_desk):
    app.switch_page(BULK).run()
    upload(app, "october.csv", content(*GOOD, *BAD))
    batch_id, notice = send_and_wait(app, app_desk)
    counts = app_desk.ledger.batch_counts(batch_id)
    assert counts[Status.SUCCEEDED] == 5 and sum(counts.values()) == 5
    assert app_desk.sandbox.store.commit_count() == 5
    shown = metrics(app)
    assert shown["Succeeded"] == "5" and shown["Refused / not sent"] == "0"
    labels = [b.label for b in app.get("download_button")]
    assert "Report (CSV)" in labels and "Report (Excel)" in labels
    assert f"Batch {batch_id} is sending: 5 rows." in notice
    assert app.file_uploader[0].value is None  # a fresh uploader for the next file


def test_the_same_file_again_is_refused_and_points_to_the_first_batch(app, app_desk):
    app.switch_page(BULK).run()
    upload(app, "october.csv", content(*GOOD))
    batch_id, _ = send_and_wait(app, app_desk)
    upload(app, "october-copy.csv", content(*GOOD))
    assert f"already queued as batch **{batch_id}**" in page_text(app)
    assert app.button(key="bulk_send").disabled
    assert app_desk.sandbox.store.commit_count() == 5


def test_a_file_without_the_needed_columns_says_which(app, app_desk):
    app.switch_page(BULK).run()
    upload(app, "wrong.csv", b"Name,Emial\nRavi,ravi@example.com\n")
    errors = [e.value for e in app.error]
    assert any("Missing column(s): kind, amount" in e and "'Emial'" in e for e in errors)
    assert not app.metric


def test_a_batch_larger_than_the_pool_cannot_be_sent(app, app_desk):
    app_desk.sandbox.store.set_pool_balance(Decimal("1000"))
    app.switch_page(BULK).run()
    upload(app, "october.csv", content(*GOOD))
    assert "Does not fit the pool" in page_text(app)
    assert "short by 500.00" in page_text(app)
    assert app.button(key="bulk_send").disabled


@pytest.fixture
def idle_worker(desk_env, monkeypatch):
    """The app's embedded worker looks for running batches only at start (not again during the
    test), so a batch left "running" stays interrupted until someone presses Resume."""
    monkeypatch.setenv("POINTS_DESK_WORKER_POLL_SECONDS", "3600")


def test_an_interrupted_batch_is_listed_and_resumes_to_the_end(idle_worker, app, app_desk):
    ledger = app_desk.ledger
    preview = bulk.preview_upload(
        app_desk.ledger, app_desk.client, app_desk.settings, "crashed.csv", content(*GOOD)
    )
    record = bulk.queue_batch(ledger, preview, operator="someone")
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    ledger.update_batch(
        record.batch_id, state="running", started_at=long_ago, heartbeat_at=long_ago
    )
    app.switch_page(BULK).run()
    app.button(key=f"bulk_open_{record.batch_id}").click().run()
    assert "The worker sending this batch stopped" in page_text(app)
    app.button(key="bulk_resume").click().run()
    assert app_desk.runner.wait(record.batch_id, timeout=30)
    app.run()
    assert ledger.batch_counts(record.batch_id)[Status.SUCCEEDED] == 5
    assert ledger.get_batch(record.batch_id).state == "finished"
    assert metrics(app)["Succeeded"] == "5"


@pytest.mark.browser
def test_upload_run_and_download_the_report_in_a_browser(tmp_path: Path):
    upload_file = tmp_path / "october.csv"
    upload_file.write_bytes(content(*GOOD, *BAD))
    with running_dashboard(tmp_path) as url, browser_page() as page:
        page.goto(url)
        wait_idle(page)
        page.get_by_role("link", name="Bulk allocation").click()
        wait_idle(page)
        page.locator("input[type=file]").set_input_files(str(upload_file))
        page.get_by_text("Fits the pool").wait_for()
        wait_idle(page)
        screenshot(page, "screens/bulk-preview")
        page.get_by_role("button", name="Send 5 rows…").click()
        page.get_by_role("button", name="Send now").click()
        page.get_by_text("5 of 5 rows done").wait_for(timeout=60_000)
        # The sidebar's pool is read again once the batch is seen finished (1,500 points sent).
        page.get_by_test_id("stSidebar").get_by_text("99,98,500.00").wait_for(timeout=10_000)
        wait_idle(page)
        page.get_by_role("button", name="Report (CSV)").wait_for()
        page.locator("[data-testid='stMain']").evaluate("el => el.scrollTo(0, 0)")
        screenshot(page, "screens/bulk-after-run")
        with page.expect_download() as download_info:
            page.get_by_role("button", name="Report (CSV)").click()
        report = Path(download_info.value.path()).read_bytes().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(report)))
    # Every input row, in file order: the five sent, then the two rejected at preview.
    assert [row["row"] for row in rows] == ["2", "3", "4", "5", "6", "7", "8"]
    sent, rejected = rows[:5], rows[5:]
    assert {row["status"] for row in sent} == {"SUCCEEDED"}
    assert {row["status"] for row in rejected} == {"REJECTED"}
    assert all(row["card_id"].startswith("EKC") and row["transaction_id"] for row in sent)
    assert sent[4]["amount"] == "500.00" and sent[4]["balance_after"] == "500.00"


def test_a_batch_above_the_threshold_waits_for_approval_then_runs(desk_env, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import PROJECT
    from ui.context import _desk

    monkeypatch.setenv("POINTS_DESK_APPROVAL_BATCH_THRESHOLD", "1000")
    at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=30)
    at.run()
    at.switch_page(BULK).run()
    upload(at, "october.csv", content(*GOOD))  # 1,500 points
    at.button(key="bulk_send").click().run()
    assert "it waits for a second person's approval" in page_text(at)
    at.button(key="bulk_confirm").click().run()
    assert not at.exception, at.exception
    the_desk = _desk()
    record = the_desk.ledger.list_batches()[0]
    assert "waits for a second person to approve it" in page_text(at)
    assert record.state == "queued"
    assert the_desk.sandbox.store.commit_count() == 0
    assert "bulk_resume" not in [b.key for b in at.button]
    assert at.button(key="bulk_cancel").label == "Withdraw"

    at.switch_page("pages/approvals.py").run()
    at.button(key="approve_1").click().run()
    assert not at.exception, at.exception
    assert the_desk.runner.wait(record.batch_id, timeout=30)
    assert the_desk.ledger.batch_counts(record.batch_id)[Status.SUCCEEDED] == 5
    assert the_desk.sandbox.store.commit_count() == 5


@pytest.mark.browser
def test_approve_a_large_batch_in_a_browser(tmp_path: Path):
    upload_file = tmp_path / "november.csv"
    upload_file.write_bytes(content(*GOOD))
    extra = {"POINTS_DESK_APPROVAL_BATCH_THRESHOLD": "1000"}
    with running_dashboard(tmp_path, extra) as url, browser_page() as page:
        page.goto(url)
        wait_idle(page)
        page.get_by_role("link", name="Bulk allocation").click()
        wait_idle(page)
        page.locator("input[type=file]").set_input_files(str(upload_file))
        page.get_by_text("Fits the pool").wait_for()
        page.get_by_role("button", name="Send 5 rows…").click()
        page.get_by_text("it waits for a second person's approval").wait_for()
        page.get_by_role("button", name="Queue for approval").click()
        page.get_by_text("Awaiting approval").first.wait_for()
        wait_idle(page)
        screenshot(page, "screens/bulk-awaiting-approval")

        page.get_by_role("link", name="Approvals (1)").click()  # the menu counts what waits
        wait_idle(page)
        page.get_by_text("Batch november.csv · 5 rows").wait_for()
        screenshot(page, "screens/approvals-batch")
        page.get_by_role("button", name="Approve and start").click()
        page.get_by_text("It is sending now").wait_for()

        page.get_by_role("link", name="Bulk allocation").click()
        wait_idle(page)
        page.get_by_role("button", name="Open").first.click()
        page.get_by_text("5 of 5 rows done").wait_for(timeout=60_000)
        # The sidebar's pool is read again once the batch is seen finished (1,500 points sent).
        page.get_by_test_id("stSidebar").get_by_text("99,98,500.00").wait_for(timeout=10_000)
        wait_idle(page)
        body = page.locator("[data-testid='stMain']").inner_text()
    assert "Traceback" not in body
    assert "Finished" in body


def _row_number(row) -> int:
    return row.row_number


def test_a_file_repeating_a_recent_batch_needs_the_acknowledgement_before_sending(app, app_desk):
    app.switch_page(BULK).run()
    upload(app, "cards.csv", content(*GOOD[:4]))
    opened, _ = send_and_wait(app, app_desk)
    cards = [r.card_id for r in sorted(app_desk.ledger.rows(batch_id=opened), key=_row_number)]
    credits = [f"credit,,,,,,{card},{100 * (n + 1)},October" for n, card in enumerate(cards)]
    upload(app, "october.csv", content(*credits))
    first, _ = send_and_wait(app, app_desk)
    paid = app_desk.sandbox.store.commit_count()

    # The same rows with one space changed: another digest, the same cards and amounts.
    again = [
        credits[0].replace(",October", ", October"),
        *credits[1:3],
        credits[3].replace("400", "401"),
    ]
    upload(app, "october-again.csv", content(*again))
    text = page_text(app)
    assert f"3 of 4 rows repeat batch `{first}`" in text and "(rows 2, 3, 4;" in text
    marked = next(d.value for d in app.dataframe if "Paid before" in d.value.columns)
    assert [bool(v) for v in marked["Paid before"]] == [True, True, True, False]
    assert marked["Paid before"][0] == f"🔁 {first} row 2"
    box = app.checkbox(key="bulk_ack_repeats")
    assert box.label == "I know these rows were paid before; pay them again" and not box.value
    assert app.button(key="bulk_send").disabled

    box.check().run()
    assert not app.button(key="bulk_send").disabled
    second, notice = send_and_wait(app, app_desk)
    assert second != first and f"Batch {second} is sending: 4 rows." in notice
    assert app_desk.sandbox.store.commit_count() == paid + 4
    record = app_desk.ledger.get_batch(second)
    row = next(r for r in app_desk.ledger.rows(batch_id=second) if r.row_number == 2)
    assert "paid again as" in app_desk.ledger.audit_trail(row.reference)[0].detail
    assert record.operator in app_desk.ledger.audit_trail(row.reference)[0].detail


def test_a_file_debiting_one_card_heavily_says_it_waits_and_why(app, app_desk):
    from services import movements
    from services.allocations import new_reference
    from services.models import Allocation

    opening = Allocation.model_validate(
        {
            "reference": new_reference(),
            "kind": "create",
            "amount": "150000",
            "employee": {
                "email": "priya@example.com",
                "mobile": "9800000001",
                "title": "Ms",
                "first_name": "Priya",
                "gender": "F",
            },
        }
    )
    with app_desk.client() as client:
        opened = movements.request(
            app_desk.ledger, client, opening, app_desk.settings, operator="asha"
        )
    card = opened.row.card_id
    app.switch_page(BULK).run()
    upload(app, "recover.csv", content(f"debit,,,,,,{card},99999,Recovery"))
    app.button(key="bulk_send").click().run()
    expected = "holds a debit of 99,999 points (row 2), above the 10,000 debit limit"
    assert expected in page_text(app)
    # The button says what it does: nothing is sent now, the batch waits for a second person.
    assert app.button(key="bulk_confirm").label == "Queue for approval"
    assert app.button(key="bulk_send").label == "Send 1 row…"
    app.button(key="bulk_confirm").click().run()
    assert not app.exception, app.exception
    assert expected in page_text(app)
    record = app_desk.ledger.list_batches()[0]
    assert record.state == "queued" and app_desk.sandbox.store.card_balance(card) == Decimal(
        "150000.00"
    )
    app.switch_page("pages/approvals.py").run()
    assert f"Waits because it {expected}." in page_text(app)


def test_the_untouched_templates_pay_nobody(app, app_desk):
    from services.bulk_files import template_csv, template_xlsx

    app.switch_page(BULK).run()
    assert "one example row" in page_text(app)
    for name, data in (("template.csv", template_csv()), ("template.xlsx", template_xlsx())):
        upload(app, name, data)
        shown = metrics(app)
        assert shown["Ready to send"] == "0" and shown["Rejected"] == "1", name
        problem = next(d.value for d in app.dataframe if "Problem" in d.value.columns)["Problem"][0]
        assert problem == "row: This is the template's example row; replace it", name
        assert app.button(key="bulk_send").disabled
    assert app_desk.ledger.rows() == [] and app_desk.sandbox.store.allocate_requests() == 0


def test_the_sending_speed_sits_under_advanced(app, app_desk):
    app.switch_page(BULK).run()
    upload(app, "october.csv", content(*GOOD))
    (advanced,) = [e for e in app.expander if e.label == "Advanced"]
    inside = {getattr(element, "label", None) for element in _walk(advanced)}
    assert {"Rows sent at a time", "Max rows per second"} <= inside
    assert app.number_input(key="bulk_concurrency").value == bulk.DEFAULT_CONCURRENCY


def _walk(node):
    children = getattr(node, "children", None)
    if children is None:
        yield node
        return
    for key in sorted(children):
        yield from _walk(children[key])


def test_recent_batches_say_where_demo_batches_are(app, app_desk):
    app.switch_page(BULK).run()
    expected = "Demo data (Overview → Load demo data) sends its monthly files as batches"
    assert expected in page_text(app)


def test_the_batch_panel_explains_its_statuses(app, app_desk):
    app.switch_page(BULK).run()
    upload(app, "october.csv", content(*GOOD))
    send_and_wait(app, app_desk)
    glossary = [e for e in app.expander if e.label == "What do these statuses mean?"]
    assert len(glossary) == 1
    assert "**Unknown**" in "".join(str(e.value) for e in _walk(glossary[0]))


def test_the_pool_is_read_again_when_a_watched_batch_finishes(
    idle_worker, app, app_desk, monkeypatch
):
    """The worker finishes the batch between the page's run and its live panel's next look:
    the sidebar's pool balance must then be read again, not kept from before the batch."""
    ledger = app_desk.ledger
    preview = bulk.preview_upload(
        ledger, app_desk.client, app_desk.settings, "october.csv", content(*GOOD)
    )
    record = bulk.queue_batch(ledger, preview, operator="someone")
    now = datetime.now(UTC)
    ledger.update_batch(record.batch_id, state="running", started_at=now, heartbeat_at=now)
    app.switch_page(BULK).run()
    app.button(key=f"bulk_open_{record.batch_id}").click().run()
    # AppTest drops the sidebar after switch_page: what the sidebar reads is checked through
    # pool_generation, which moves when the pool is forgotten (the next drawing asks EnKash).
    from ui.sidebar import pool_generation

    before = pool_generation()
    app.run()
    assert pool_generation() == before  # watching a running batch forgets nothing

    real = bulk.progress
    armed = [True]

    def progress(the_ledger, batch_id):
        seen = real(the_ledger, batch_id)
        if armed and batch_id == record.batch_id and seen.active:
            armed.clear()  # the worker sends the whole batch now, after this look
            bulk.start_batch(
                ledger, app_desk.settings, batch_id, actor="worker", wake=app_desk.pick_up
            )
            assert app_desk.runner.wait(batch_id, timeout=30)
        return seen

    monkeypatch.setattr(bulk, "progress", progress)
    app.run()
    assert not app.exception, app.exception
    assert ledger.get_batch(record.batch_id).state == "finished"
    shown = metrics(app)
    assert shown["Succeeded"] == "5"
    assert pool_generation() == before + 1  # forgotten once, then the whole app drawn again
    app.run()
    assert pool_generation() == before + 1  # a finished batch forgets nothing more
