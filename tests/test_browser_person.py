"""In a real browser: a create for a mobile that already has a card names the holder and sends
nothing until the manager chooses; "Create another account" starts blank."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser_support import browser_page, running_dashboard, screenshot, wait_idle
from tests.test_browser_money import _choose, _fill, _open

pytestmark = pytest.mark.browser


def _create(page, name: str, title: str, gender: str, email: str, mobile: str, amount: str):
    _fill(page, "First name", name)
    _choose(page, "new_title", title)
    _choose(page, "new_gender", gender)
    _fill(page, "Email", email)
    _fill(page, "Mobile", mobile)
    _fill(page, "First credit (points)", amount)
    _fill(page, "Reason", "Referral bonus")
    page.get_by_role("button", name="Create account and credit").click()
    wait_idle(page)


def _sandbox_commits(data_dir: Path) -> int:
    from services.sandbox import SandboxIdentity, SandboxStore

    store = SandboxStore(data_dir / "sandbox.db", SandboxIdentity())
    try:
        return store.commit_count()
    finally:
        store.close()


def test_a_mobile_with_a_card_names_its_holder_and_nothing_is_sent(tmp_path: Path):
    with running_dashboard(tmp_path) as url, browser_page() as page:
        page.goto(url)
        wait_idle(page)
        _open(page, url, "Create account")
        _create(page, "Zoya", "Ms", "Female", "zoya@example.com", "96000 98867", "100")
        page.get_by_text("100.00 points credited to Zoya").wait_for()
        page.get_by_role("button", name="Create another account").click()
        wait_idle(page)
        # A new account starts blank.
        for label in ("First name", "Email", "Mobile", "First credit (points)", "Reason"):
            assert page.get_by_label(label, exact=True).input_value() == "", label
        assert _sandbox_commits(tmp_path) == 1

        # Rahul, typed with Zoya's mobile: held, Zoya's card named, nothing sent.
        _create(page, "Rahul", "Mr", "Male", "rahul@example.com", "+91 96000 98867", "10")
        page.get_by_text("This employee already has a card").wait_for()
        main = page.get_by_test_id("stMain")
        body = main.inner_text()
        assert "Ms Zoya" in body and "zoya@example.com" in body
        screenshot(page, "screens/create-existing-card")
        assert "points credited to Rahul" not in body
        assert _sandbox_commits(tmp_path) == 1

        # The manager chooses: credit Zoya's card instead, on the Credit page.
        page.get_by_role("button", name="Credit Zoya's card instead").click()
        wait_idle(page)
        assert "/credit" in page.url
        assert page.get_by_label("Points to credit", exact=True).input_value() == "10"
        assert page.get_by_label("Reason", exact=True).input_value() == "Referral bonus"
        assert _sandbox_commits(tmp_path) == 1  # still nothing sent until the manager clicks
        page.get_by_role("button", name="Credit points").click()
        wait_idle(page)
        page.get_by_text("10.00 points credited to Zoya").wait_for()
        screenshot(page, "screens/create-existing-card-credited")
    assert _sandbox_commits(tmp_path) == 2
