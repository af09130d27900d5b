"""End to end in a real browser: create an account, credit it, debit it, read the final balance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser_support import browser_page, running_dashboard, screenshot, wait_idle

pytestmark = pytest.mark.browser


def _fill(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)


def _choose(page, key: str, option: str) -> None:
    page.locator(f".st-key-{key}").click()
    page.get_by_role("option", name=option, exact=True).click()


def _open(page, url: str, title: str) -> None:
    page.get_by_role("link", name=title).click()
    wait_idle(page)
    assert page.url.startswith(url)


def test_create_credit_debit_and_read_the_final_balance(tmp_path: Path):
    with running_dashboard(tmp_path) as url, browser_page() as page:
        page.goto(url)
        wait_idle(page)
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_text("1,00,00,000.00").wait_for()
        assert page.get_by_text("Sandbox — no real points move").is_visible()

        # Create: an account with 1,500 points.
        _open(page, url, "Create account")
        _fill(page, "First name", "Ravi")
        _choose(page, "new_title", "Mr")
        _choose(page, "new_gender", "Male")
        _fill(page, "Email", "ravi@example.com")
        _fill(page, "Mobile", "+91 96000 98867")
        _fill(page, "First credit (points)", "1500")
        _fill(page, "Reason", "Q3 incentive")
        page.get_by_role("button", name="Create account and credit").click()
        wait_idle(page)
        page.get_by_text("1,500.00 points credited to Ravi").wait_for()
        screenshot(page, "screens/create-account-done")
        page.get_by_text("✓ EnKash echoed this reference").wait_for()
        # The pool in the sidebar follows the points that moved (the sidebar is drawn last).
        sidebar.get_by_text("99,98,500.00").wait_for()

        # Credit 250.50 more.
        _open(page, url, "Credit")
        _fill(page, "Find the employee", "ravi")
        page.keyboard.press("Enter")
        wait_idle(page)
        assert "1,500.00" in page.get_by_test_id("stMain").get_by_test_id("stMetric").inner_text()
        _fill(page, "Points to credit", "250.50")
        page.get_by_role("button", name="Credit points").click()
        wait_idle(page)
        page.get_by_text("250.50 points credited to Ravi").wait_for()
        screenshot(page, "screens/credit-done")

        # Debit 40, confirmed in the dialog.
        _open(page, url, "Debit")
        _fill(page, "Find the employee", "ravi@example.com")
        page.keyboard.press("Enter")
        wait_idle(page)
        _fill(page, "Points to debit", "40")
        page.get_by_role("button", name="Review debit").click()
        dialog = page.get_by_role("dialog")
        # The dialog opens first and fills in as its script runs: wait for the balance line.
        dialog.get_by_text("1,750.50 → 1,710.50 after").wait_for()
        screenshot(page, "screens/debit-confirm")
        dialog.get_by_role("button", name="Debit now").click()
        wait_idle(page)
        screenshot(page, "screens/debit-after-click")
        page.get_by_text("40.00 points debited from Ravi").wait_for()
        screenshot(page, "screens/debit-done")

        # The final balance, as the page shows it: on the outcome card and in the picker.
        body = page.inner_text("body")
        assert re.search(r"Balance after\s+1,710\.50", body), body
        assert "Known balance" in body and "1,710.50" in body
