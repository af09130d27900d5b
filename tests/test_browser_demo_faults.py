"""Demo a bad day in a real browser: turn on "timeout after commit" for one call from Overview →
Sandbox tools, credit a card (outcome unknown), settle it on Reconcile."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from services.allocations import submit
from services.config import load_settings
from services.desk import Desk
from services.models import Allocation, Employee, Status
from services.store import Ledger
from tests.browser_support import browser_page, running_dashboard, screenshot, wait_idle
from tests.fault_support import reference

pytestmark = pytest.mark.browser


def prepare(data_dir: Path) -> None:
    """Ravi's card with 1,500 points, in the ledger and the sandbox the dashboard will use."""
    settings = load_settings(None, points_desk_data_dir=data_dir)
    desk = Desk(settings)
    ravi = Employee(
        email="ravi@example.com", mobile="9876543201", title="Mr", first_name="Ravi", gender="M"
    )
    try:
        with desk.client() as client:
            opened = submit(
                desk.ledger,
                client,
                Allocation(reference=reference(), kind="create", amount="1500", employee=ravi),
                operator="asha",
                settings=settings,
            )
        assert opened.status is Status.SUCCEEDED
    finally:
        desk.close()
        desk.sandbox.store.close()


def credit(page, amount: str) -> None:
    page.get_by_role("link", name="Credit").click()
    wait_idle(page)
    page.get_by_label("Find the employee", exact=True).fill("ravi")
    page.keyboard.press("Enter")
    wait_idle(page)
    page.get_by_label("Points to credit", exact=True).fill(amount)
    page.get_by_role("button", name="Credit points").click()
    wait_idle(page)


def test_a_sandbox_fault_turned_on_from_the_overview_is_settled_on_reconcile(tmp_path: Path):
    prepare(tmp_path)
    env = {"POINTS_DESK_SETTLE_INTERVAL_SECONDS": "0"}  # leave the unknown for Reconcile
    with running_dashboard(tmp_path, env) as url, browser_page(1280, 900) as page:
        page.goto(url)
        wait_idle(page)
        page.get_by_text("Sandbox tools").click()
        page.get_by_text("Demo a bad day").wait_for()
        # "Timeout after commit" for the next 1 call are the defaults.
        page.get_by_role("button", name="Turn on").click()
        wait_idle(page)
        page.get_by_text("Fault on: timeout after commit for the next 1 credit").wait_for()
        screenshot(page, "screens/overview-sandbox-fault-on")

        credit(page, "250")
        page.get_by_text("Outcome unknown: EnKash did not give a readable answer").wait_for()

        page.get_by_role("link", name="Reconcile").click()
        wait_idle(page)
        page.get_by_role("heading", name="Unknown outcomes").wait_for()
        page.locator("[class*='st-key-check_'] button").first.click()
        wait_idle(page)
        page.get_by_text("EnKash has it: the transaction went through").wait_for()
        screenshot(page, "screens/reconcile-demo-fault-settled")

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        statuses = Counter(r.status for r in ledger.rows())
        assert statuses == Counter({Status.SUCCEEDED: 2})  # the account, the credit
    finally:
        ledger.dispose()
