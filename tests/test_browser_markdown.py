"""In a real browser, hostile text on the Approvals page renders as text: no link, no image."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from services import approvals
from services.models import Allocation
from services.store import Ledger
from tests.auth_support import secrets_toml
from tests.browser_support import browser_page, running_dashboard, screenshot, wait_idle
from tests.markdown_support import hostile
from tests.test_pages_markdown import CHECKER_NAME, DEBIT_REASON, MAKER_NAME, PEOPLE

pytestmark = pytest.mark.browser


def test_the_approvals_page_shows_a_hostile_request_without_links_or_images(tmp_path: Path):
    (tmp_path / "no-secrets.toml").write_text(secrets_toml(PEOPLE))
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    allocation = Allocation.model_validate(
        {
            "reference": "PD000000000001ABCDEF01",
            "kind": "debit",
            "card_id": "EKC04AZHXP",
            "amount": Decimal("500"),
            "reason": hostile(DEBIT_REASON),
        }
    )
    approvals.request_debit(ledger, allocation, maker="maker")
    ledger.dispose()
    with (
        running_dashboard(tmp_path, {"POINTS_DESK_APPROVAL_DEBIT_THRESHOLD": "100"}) as url,
        browser_page() as page,
    ):
        page.goto(url)
        wait_idle(page)
        page.get_by_label("Username").fill("checker")
        page.get_by_label("Password", exact=True).fill(PEOPLE["checker"][0])
        page.get_by_role("button", name="Sign in").click()
        wait_idle(page)
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Approvals").click()
        wait_idle(page)
        page.get_by_text("Points to debit").wait_for()
        screenshot(page, "screens/approvals-hostile-text")
        app = page.get_by_test_id("stApp")
        assert app.locator("a[href*='evil']").count() == 0
        assert app.locator("img[src*='evil']").count() == 0
        assert app.locator("b").count() == 0  # the raw <b>
        for marker in (DEBIT_REASON, MAKER_NAME, CHECKER_NAME):  # the **marker** in each text
            assert app.locator("strong", has_text=re.compile(f"^{marker}$")).count() == 0
        assert app.locator(".katex").count() == 0
        # The text reads as it was typed, link syntax and all.
        shown = app.inner_text().replace("\u2060", "")
        assert " ".join(hostile(DEBIT_REASON).split()) in shown
        assert " ".join(PEOPLE["maker"][2].split()) in shown  # the maker's display name
        assert " ".join(PEOPLE["checker"][2].split()) in shown  # the sidebar names the approver
