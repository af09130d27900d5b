"""In a real browser: local sign-in (a wrong password, then the right one) and a large debit
approved by a second person in a second browser context; then the Streamlit server's own log
and the ledger files are searched for every secret the run knew."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from services.sandbox import start_sandbox
from tests.auth_support import PEOPLE, secrets_toml
from tests.browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    require_chromium,
    running_dashboard,
    screenshot,
    wait_idle,
)
from tests.test_no_leaks import WRONG_PASSWORD, assert_clean, known_identity, live_env

pytestmark = pytest.mark.browser


@contextmanager
def two_people(width: int = 1280, height: int = 800):
    """Two browser contexts (two people, separate cookies and sessions) in one chromium."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = []
            for _ in range(2):
                context = browser.new_context(viewport={"width": width, "height": height})
                page = context.new_page()
                page.set_default_timeout(20_000)
                pages.append(page)
            yield pages
        finally:
            browser.close()


def sign_in(page, url: str, username: str, password: str | None = None) -> None:
    page.goto(url)
    wait_idle(page)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(password or PEOPLE[username][0])
    page.get_by_role("button", name="Sign in").click()
    wait_idle(page)


def open_page(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    wait_idle(page)


def test_sign_in_and_a_second_person_approves_a_large_debit(tmp_path: Path):
    (tmp_path / "no-secrets.toml").write_text(secrets_toml())
    with (
        start_sandbox(identity=known_identity()) as sandbox,
        running_dashboard(tmp_path, live_env(sandbox)) as url,
        two_people() as (maker, approver),
    ):
        # Sign-in page first, whatever the URL; a wrong password is refused in words.
        maker.goto(f"{url}/debit")
        wait_idle(maker)
        maker.get_by_role("heading", name="Sign in to Points Desk").wait_for()
        assert maker.get_by_test_id("stSidebarNav").count() == 0
        screenshot(maker, "screens/sign-in")
        sign_in(maker, url, "asha", WRONG_PASSWORD)
        maker.get_by_text("Wrong username or password.").wait_for()
        screenshot(maker, "screens/sign-in-wrong-password")
        sign_in(maker, url, "asha")
        sidebar = maker.get_by_test_id("stSidebar")
        sidebar.get_by_text("Signed in as Asha Menon · operator").wait_for()
        assert sidebar.get_by_role("link", name="Approvals").count() == 0  # operator only

        # The maker opens a card, then asks for a debit above the approval limit.
        _open_card(maker)
        (sandbox_card,) = [card["enKashCardId"] for card in sandbox.store.cards()]
        open_page(maker, "Debit")
        maker.get_by_label("Find the employee").fill("ravi")
        maker.keyboard.press("Enter")
        wait_idle(maker)
        maker.get_by_label("Points to debit").fill("15000")
        maker.get_by_label("Reason").fill("Reversal of duplicate award")
        maker.get_by_role("button", name="Review debit").click()
        dialog = maker.get_by_role("dialog")
        dialog.get_by_text("goes for approval").wait_for()
        dialog.get_by_role("button", name="Send for approval").click()
        wait_idle(maker)
        maker.get_by_text("Waiting for approval by a second person").wait_for()
        screenshot(maker, "screens/debit-waiting-for-approval")
        assert sandbox.store.card_balance(sandbox_card) == 50000

        # The approver, in another browser, approves it with a comment.
        sign_in(approver, url, "vikram")
        open_page(approver, "Approvals")
        approver.get_by_text("Debit from Mr Ravi").wait_for()
        approver.get_by_label("Comment").fill("Confirmed with HR")
        screenshot(approver, "screens/approvals")
        approver.get_by_role("button", name="Approve and send").click()
        wait_idle(approver)
        approver.get_by_text("15,000.00 points debited from Ravi").wait_for()
        approver.get_by_text("Nothing is waiting for approval.").wait_for()
        screenshot(approver, "screens/approvals-done")
        assert sandbox.store.card_balance(sandbox_card) == 35000

        # Signing out ends the session: the sign-in page is all there is again.
        approver.get_by_test_id("stSidebar").get_by_role("button", name="Sign out").click()
        wait_idle(approver)
        approver.get_by_role("heading", name="Sign in to Points Desk").wait_for()

    log = (tmp_path / "streamlit.log").read_text()
    assert "signed in: vikram" in log  # the log was captured
    assert_clean("the streamlit server log", log)
    for path in tmp_path.glob("ledger.db*"):
        assert_clean(path.name, path.read_bytes())


def _open_card(page) -> None:
    """The maker opens Ravi's card with 50,000 points on the Create account page."""
    open_page(page, "Create account")
    page.get_by_label("First name", exact=True).fill("Ravi")
    for key, option in (("new_title", "Mr"), ("new_gender", "Male")):
        page.locator(f".st-key-{key}").click()
        page.get_by_role("option", name=option, exact=True).click()
    for label, value in {
        "Email": "ravi@example.com",
        "Mobile": "9600098867",
        "First credit (points)": "50000",
        "Reason": "Opening",
    }.items():
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Create account and credit").click()
    wait_idle(page)
    page.get_by_text("50,000.00 points credited to Ravi").wait_for()
