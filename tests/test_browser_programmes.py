"""End to end in a real browser: create a programme, credit against it until its budget refuses,
and see the remainder and the burn-down on the Overview."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser_support import browser_page, running_dashboard, screenshot, wait_idle

pytestmark = pytest.mark.browser


def _fill(page, key: str, value: str) -> None:
    page.locator(f".st-key-{key} input").fill(value)


def _choose(page, key: str, option: str) -> None:
    page.locator(f".st-key-{key}").click()
    page.get_by_role("option", name=option, exact=True).click()


def _open(page, title: str) -> None:
    page.get_by_role("link", name=title).click()
    wait_idle(page)


def test_a_programme_budget_refuses_a_credit_and_the_overview_shows_the_remainder(
    tmp_path: Path,
):
    with running_dashboard(tmp_path) as url, browser_page() as page:
        page.goto(url)
        wait_idle(page)

        _open(page, "Programmes")
        _fill(page, "new_prog_code", "q3")
        _fill(page, "new_prog_name", "Q3 sales")
        _fill(page, "new_prog_budget", "1,000")
        page.get_by_role("button", name="Create programme").click()
        wait_idle(page)
        page.get_by_text("Created Q3 sales (Q3).").wait_for()

        _open(page, "Create account")
        page.get_by_label("First name", exact=True).fill("Ravi")
        _choose(page, "new_title", "Mr")
        _choose(page, "new_gender", "Male")
        page.get_by_label("Email", exact=True).fill("ravi@example.com")
        page.get_by_label("Mobile", exact=True).fill("+91 96000 98867")
        page.get_by_label("First credit (points)", exact=True).fill("600")
        _choose(page, "new_programme", "Q3 sales · Q3 · 1,000.00 points left")
        page.get_by_role("button", name="Create account and credit").click()
        wait_idle(page)
        page.get_by_text("600.00 points credited to Ravi").wait_for()

        _open(page, "Credit")
        page.get_by_label("Find the employee", exact=True).fill("ravi")
        page.keyboard.press("Enter")
        wait_idle(page)
        page.get_by_label("Points to credit", exact=True).fill("500")
        # Not chosen again: the form opens on the programme used last (General would take it).
        page.get_by_role("button", name="Credit points").click()
        wait_idle(page)
        page.get_by_text("Q3 sales has 400.00 points left, not enough for 500.00").wait_for()
        screenshot(page, "screens/programme-budget-refused")

        _open(page, "Overview")
        card = page.locator(".st-key-overview_programme_Q3")
        card.get_by_text("Q3 sales").wait_for()
        text = card.inner_text()
        assert "Remaining" in text and "400.00" in text and "600.00" in text
        card.locator(".js-plotly-plot").wait_for()
        screenshot(page, "screens/programme-overview")
