"""In a real browser at 1440×900: the sidebar search opens a transaction by its reference and an
employee by their card id; an outcome card links to its History row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser_support import browser_page, running_dashboard, screenshot, wait_idle
from tests.test_browser_money import _choose, _fill, _open

pytestmark = pytest.mark.browser


def _search(page, query: str) -> None:
    box = page.get_by_test_id("stSidebar").get_by_label("Search", exact=True)
    box.fill(query)
    box.press("Enter")
    wait_idle(page)


def test_the_search_box_opens_a_transaction_by_reference_and_an_employee_by_card(tmp_path: Path):
    with running_dashboard(tmp_path) as url, browser_page(1440, 900) as page:
        page.goto(url)
        wait_idle(page)
        # A fresh session's first look at the Overview draws the box with the charts, 2 s later.
        page.get_by_test_id("stSidebar").get_by_label("Search", exact=True).wait_for(timeout=10_000)
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
        card = page.get_by_test_id("stMain").inner_text()
        reference = re.search(r"Reference\s+(PD\d{12}[0-9A-F]{8})", card).group(1)
        card_id = re.search(r"Card id\s+(\S+)", card).group(1)

        # From another page, the reference opens History on that transaction.
        _open(page, url, "Overview")
        _search(page, reference.lower())
        assert "/history" in page.url and f"ref={reference}" in page.url
        main = page.get_by_test_id("stMain")
        main.get_by_text("Create of 1,500.00 points").wait_for()
        assert reference in main.inner_text()
        assert main.get_by_text("Audit trail").is_visible()
        screenshot(page, "screens/search-reference")

        # A card id opens the employee: balance and every movement.
        _search(page, card_id)
        assert "/employee" in page.url
        main.get_by_role("heading", name="Mr Ravi").wait_for()
        assert "1,500.00" in main.inner_text()
        screenshot(page, "screens/search-employee")

        # A name lists who matches; the link opens the employee.
        _open(page, url, "Overview")
        _search(page, "rav")
        page.get_by_test_id("stSidebar").get_by_role("link", name=re.compile("Mr Ravi")).click()
        wait_idle(page)
        main.get_by_role("heading", name="Mr Ravi").wait_for()
        assert "/employee" in page.url
