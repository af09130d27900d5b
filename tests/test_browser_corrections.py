"""In a real browser, two people on one dashboard (EnKash's sandbox runs in this test process):

- a credit is reversed: the maker clicks its row in History, which opens its detail at the top,
  asks for a reversal there, a second person approves it, and History shows the link both ways;
- a batch row EnKash refuses (the employee spent points elsewhere, so the debit is more than the
  card holds) is downloaded from the Bulk page as a correction file, fixed, uploaded and sent.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from services.sandbox import start_sandbox
from services.sandbox.store import AllocationRequest
from tests.auth_support import secrets_toml
from tests.browser_support import running_dashboard, screenshot, wait_idle
from tests.test_browser_auth import _open_card, open_page, sign_in, two_people
from tests.test_bulk_page import HEADER
from tests.test_no_leaks import known_identity, live_env

pytestmark = pytest.mark.browser


def click_history_row(page, number: int) -> None:
    """Click the ``number``-th row (0 = newest) of History's transactions table."""
    open_page(page, "History")
    table = page.locator("[class*='st-key-history_table_']")
    heading = page.get_by_role("heading", name="Transaction", exact=True)
    for attempt in range(3):
        # The grid draws on a canvas: on a busy machine it may take a click before it is ready
        # to select (nothing is selected then, and the page stays as it was). Click again.
        table.scroll_into_view_if_needed()
        box = table.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + 15, box["y"] + 35 * (number + 1) + 17)  # the row's marker
        wait_idle(page)
        try:
            heading.wait_for(timeout=10_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            if "ref=" in page.url:  # it was selected (a second click would unselect it)
                heading.wait_for(timeout=20_000)
                return


def test_reverse_a_credit_with_approval_then_fix_a_refused_batch_row(tmp_path: Path):
    (tmp_path / "no-secrets.toml").write_text(secrets_toml())
    with (
        start_sandbox(identity=known_identity()) as sandbox,
        running_dashboard(tmp_path, live_env(sandbox)) as url,
        two_people() as (maker, approver),
    ):
        sign_in(maker, url, "asha")
        _open_card(maker)  # Ravi's card with 50,000 points
        (card,) = [c["enKashCardId"] for c in sandbox.store.cards()]

        # Clicking the row opens its detail at the top, addressable by ?ref=.
        click_history_row(maker, 0)
        assert "ref=" in maker.url
        original = maker.url.split("ref=", 1)[1].split("&", 1)[0]
        main = maker.get_by_test_id("stMain")
        main.get_by_text("Reverse", exact=True).click()
        main.get_by_label("Points to reverse").fill("49900")
        main.get_by_label("Reason", exact=True).fill("Credited twice")
        main.get_by_role("button", name="Ask for approval to reverse").click()
        wait_idle(maker)
        main.get_by_text("waits for a second person's approval").wait_for()
        assert sandbox.store.card_balance(card) == Decimal("50000")

        sign_in(approver, url, "vikram")
        open_page(approver, "Approvals")
        approver.get_by_text("Reversal of").first.wait_for()
        approver.get_by_role("button", name="Approve and send").click()
        wait_idle(approver)
        approver.get_by_text("Nothing is waiting for approval.").wait_for()
        assert sandbox.store.card_balance(card) == Decimal("100")

        click_history_row(maker, 1)  # the original, under its newer reversal
        assert f"ref={original}" in maker.url
        main.get_by_text("Reversed by").wait_for()
        screenshot(maker, "screens/history-reversed-by")
        click_history_row(maker, 0)  # the reversal
        main.get_by_text(f"Reverses {original}").wait_for()

        # Ravi spends 60 points elsewhere: EnKash holds 40, the ledger last saw 100.
        spent = sandbox.store.allocate(
            AllocationRequest(
                reference="SHOP-1", transaction_type="DR", amount=Decimal("60"), card_id=card
            )
        )
        assert spent.ok
        batch = tmp_path / "recovery.csv"
        batch.write_text(f"{HEADER}\ncredit,,,,,,{card},10,Bonus\ndebit,,,,,,{card},80,Recovery\n")
        open_page(maker, "Bulk allocation")
        maker.locator("input[type=file]").set_input_files(str(batch))
        wait_idle(maker)
        maker.get_by_role("button", name="Send 2 rows…").click()
        maker.get_by_role("button", name="Send now").click()
        maker.get_by_text("2 of 2 rows done").wait_for(timeout=60_000)
        wait_idle(maker)
        fix = maker.get_by_role("button", name="Download failed rows (1) as a correction file")
        with maker.expect_download() as download:
            fix.click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text("utf-8-sig"))))
        assert len(rows) == 1 and rows[0]["corrects"].endswith("-000003")
        rows[0]["amount"] = "30"  # within the 40 EnKash holds now
        fixed = tmp_path / "corrections.csv"
        with fixed.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

        maker.locator(".st-key-bulk_close button").click()
        wait_idle(maker)
        maker.locator("input[type=file]").set_input_files(str(fixed))
        wait_idle(maker)
        maker.get_by_role("button", name="Send 1 row…").click()
        maker.get_by_role("button", name="Send now").click()
        maker.get_by_text("1 of 1 rows done").wait_for(timeout=60_000)
        wait_idle(maker)
        screenshot(maker, "screens/bulk-correction-sent")
        assert sandbox.store.card_balance(card) == Decimal("20")  # 40 + 10 - 30
        # Opening, reversal, the shop, the credit, the corrected debit: the refused one never.
        assert len(sandbox.store.transactions()) == 5
