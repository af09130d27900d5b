"""In a real browser, signed in as two people: the maker sets up a monthly allowance for three
employees from a programme; it waits for approval (the Overview's runway does not count it); a
second person approves it; the Schedules page shows it active with its next run and total, and the
Overview's runway counts its runs and lists the one the small pool cannot pay."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from services.recurrence import IST
from services.sandbox import start_sandbox
from tests.auth_support import secrets_toml
from tests.browser_support import running_dashboard, screenshot, wait_idle
from tests.test_browser_auth import open_page, sign_in, two_people
from tests.test_no_leaks import known_identity, live_env

pytestmark = pytest.mark.browser

ROWS = "EKC04AZHXP, 5000\nEKC9QW2ERT, 4500\nEKC7PL3MNB, 3000"  # 12,500.00 a run
POOL = Decimal("20000")  # the first run fits, the second does not


def _schedules_table(page) -> str:
    """The cells of the Schedules page's summary table (a data grid: its cells are ARIA cells)."""
    grid = page.get_by_test_id("stDataFrame").first
    grid.locator("[role=gridcell]").first.wait_for(state="attached")
    return " | ".join(grid.locator("[role=gridcell]").all_inner_texts())


def _runway(page, *, short: bool) -> tuple[str, str]:
    """The Overview's runway horizons table and (if any) its table of runs that will not fit."""
    open_page(page, "Overview")
    page.get_by_role("heading", name="Runway").wait_for()
    horizons = page.get_by_test_id("stTable").inner_text()
    if not short:
        assert page.get_by_test_id("stDataFrame").count() == 0
        return horizons, ""
    cells = page.get_by_test_id("stDataFrame").locator("[role=gridcell]")
    cells.first.wait_for(state="attached")
    return horizons, " | ".join(cells.all_inner_texts())


def test_a_monthly_allowance_is_approved_by_a_second_person_and_shows_in_the_runway(
    tmp_path: Path,
):
    (tmp_path / "no-secrets.toml").write_text(secrets_toml())
    # Two days ahead (IST), so the next run is always inside the first 30 days.
    run_day = (datetime.now(IST) + timedelta(days=2)).date()
    with start_sandbox(identity=known_identity()) as sandbox:
        sandbox.store.set_pool_balance(POOL)
        with (
            running_dashboard(tmp_path, live_env(sandbox)) as url,
            two_people(1440, 900) as (maker, approver),
        ):
            sign_in(maker, url, "asha")  # operator: may set up, may not approve
            open_page(maker, "Programmes")
            maker.locator(".st-key-new_prog_code input").fill("allow")
            maker.locator(".st-key-new_prog_name input").fill("Field allowance")
            maker.locator(".st-key-new_prog_budget input").fill("1,00,000")
            maker.get_by_role("button", name="Create programme").click()
            wait_idle(maker)
            maker.get_by_text("Created Field allowance (ALLOW).").wait_for()

            open_page(maker, "Schedules")
            maker.get_by_text("No schedules yet.").wait_for()
            maker.locator(".st-key-new_sched_label input").fill("Monthly allowance")
            maker.locator(".st-key-new_sched_programme").click()
            maker.get_by_role("option", name="Field allowance", exact=False).click()
            maker.locator(".st-key-new_sched_repeat").get_by_text("Monthly").click()
            wait_idle(maker)
            day = maker.locator(".st-key-new_sched_day input")
            day.fill(str(run_day.day))
            day.press("Enter")
            wait_idle(maker)
            maker.locator(".st-key-new_sched_reason input").fill("Field allowance")
            maker.locator(".st-key-new_sched_rows textarea").fill(ROWS)
            maker.get_by_role("button", name="Set up schedule").click()
            wait_idle(maker)
            maker.get_by_text("it waits for a second person's approval").wait_for()
            assert "waiting for approval" in _schedules_table(maker)
            assert maker.get_by_role("button", name="Approve").count() == 0  # not the maker's
            screenshot(maker, "screens/schedule-waiting-for-approval")

            # Not approved: nothing is scheduled yet, so the runway counts nothing.
            horizons, short = _runway(maker, short=False)
            assert "12,500.00" not in horizons and short == ""

            sign_in(approver, url, "vikram")
            open_page(approver, "Schedules")
            approver.get_by_role("button", name="Approve").click()
            wait_idle(approver)
            approver.get_by_text("Approved Monthly allowance: it runs on its own").wait_for()

            # The maker's Schedules page: active, its next run on the chosen day, its total.
            open_page(maker, "Schedules")
            text = _schedules_table(maker)
            assert "active" in text.split(" | "), text
            assert "12,500.00" in text and "Monthly allowance" in text
            assert f"{run_day:%d %b %Y}" in text, text  # the next run
            assert "vikram" in text, text  # who approved it
            screenshot(maker, "screens/schedule-active")

            # The runway counts its runs; the second one does not fit a pool of 20,000.00.
            horizons, short = _runway(maker, short=True)
            screenshot(maker, "screens/schedule-runway")
            assert "12,500.00" in horizons, horizons
            assert "Monthly allowance" in short and "12,500.00" in short, short
            assert "5,000.00" in short, short  # the pool is short by 25,000 - 20,000

            # On a phone the same runway still names the run that does not fit.
            maker.set_viewport_size({"width": 390, "height": 844})
            maker.get_by_role("heading", name="Runway").scroll_into_view_if_needed()
            cells = maker.get_by_test_id("stDataFrame").locator("[role=gridcell]")
            assert "Monthly allowance" in cells.all_inner_texts()
            screenshot(maker, "screens/schedule-runway-phone")
