"""The Reconcile page in a real browser: check an unknown, resend one proved absent, run drift."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services import reconcile
from services.allocations import submit
from services.config import load_settings
from services.desk import Desk
from services.models import Allocation, Employee
from services.store import transactions
from tests.browser_support import browser_page, running_dashboard, screenshot, wait_idle
from tests.fault_support import NO_GRACE, reference

pytestmark = pytest.mark.browser


def person(name: str, n: int) -> Employee:
    return Employee(
        email=f"{name.lower()}@example.com",
        mobile=f"98765432{n:02d}",
        title="Ms" if name in ("Meera", "Kiran") else "Mr",
        first_name=name,
        gender="F" if name in ("Meera", "Kiran") else "M",
    )


def move(kind: str, amount: str, *, card: str | None = None, who: Employee | None = None):
    return Allocation(reference=reference(), kind=kind, amount=amount, card_id=card, employee=who)


def prepare(data_dir: Path) -> dict[str, str]:
    """A ledger and sandbox with a few unknown outcomes of different ages and states."""
    settings = load_settings(
        None, points_desk_data_dir=data_dir, points_desk_settle_interval_seconds=0
    )
    desk = Desk(settings)
    ledger, knobs = desk.ledger, desk.sandbox.knobs
    ages: dict[str, float] = {}
    refs: dict[str, str] = {}
    try:
        with desk.client() as client:

            def send(allocation, minutes, **faults):
                for name, value in faults.items():
                    setattr(knobs, name, value)
                try:
                    row = submit(ledger, client, allocation, operator="asha", settings=settings).row
                finally:
                    for name in faults:
                        setattr(knobs, name, 0)
                ages[row.reference] = minutes
                return row

            ravi = send(move("create", "1500", who=person("Ravi", 1)), 45).card_id
            meera = send(move("create", "2000", who=person("Meera", 2)), 44).card_id
            refs["committed"] = send(
                move("credit", "250", card=ravi), 12, error_after_commit_rate=1
            ).reference
            refs["proven"] = send(
                move("debit", "300", card=meera), 8, fail_before_commit_rate=1
            ).reference
            refs["mismatch"] = send(
                move("credit", "75", card=ravi), 6, wrong_reference_rate=1
            ).reference
            refs["fresh"] = send(
                move("create", "500", who=person("Kiran", 3)), 0, fail_before_commit_rate=1
            ).reference
            interrupted = move("credit", "120", card=meera)
            ledger.record_intent(interrupted, operator="asha")
            ledger.recover_interrupted(actor="startup")
            ages[interrupted.reference] = 3
        now = datetime.now(UTC)
        with ledger.engine.begin() as conn:
            for ref, minutes in ages.items():
                then = now - timedelta(minutes=minutes)
                conn.execute(
                    transactions.update()
                    .where(transactions.c.reference == ref)
                    .values(created_at=then, updated_at=then)
                )
        with desk.client() as client:
            assert reconcile.check(
                ledger, client, refs["proven"], actor="asha", absence_grace=NO_GRACE
            ).resend_allowed
    finally:
        desk.close()
        desk.sandbox.store.close()
    return refs


def test_reconcile_page_checks_resends_and_runs_drift(tmp_path: Path):
    refs = prepare(tmp_path)
    env = {"POINTS_DESK_SETTLE_INTERVAL_SECONDS": "0"}
    with running_dashboard(tmp_path, env) as url, browser_page(1280, 800) as page:
        page.goto(url)
        wait_idle(page)
        page.get_by_role("link", name="Reconcile").click()
        wait_idle(page)
        page.get_by_role("heading", name="Unknown outcomes").wait_for()
        body = page.inner_text("body")
        assert "12 min ago" in body and "Credit of 250.00 points to Ravi" in body
        assert page.locator(f".st-key-resend_{refs['proven']}").is_visible()
        assert page.locator(f".st-key-resend_{refs['fresh']}").count() == 0
        page.screenshot(path=str(screenshot_path("reconcile-unknowns")))
        screenshot(page, "screens/reconcile-unknowns-full")

        page.locator(f".st-key-check_{refs['committed']} button").click()
        wait_idle(page)
        page.get_by_text("EnKash has it: the transaction went through").wait_for()
        assert page.locator(f".st-key-check_{refs['committed']}").count() == 0

        page.locator(f".st-key-resend_{refs['proven']} button").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("same reference").first.wait_for()
        page.screenshot(path=str(screenshot_path("reconcile-resend-dialog")))
        dialog.get_by_role("button", name="Resend", exact=True).click()
        wait_idle(page)
        page.get_by_text(f"Resent {refs['proven']}").wait_for()
        assert page.get_by_role("dialog").count() == 0

        page.get_by_role("button", name="Run drift check").click()
        wait_idle(page)
        page.get_by_text("differ from EnKash").wait_for()
        screenshot(page, "screens/reconcile-after-actions")

    from services.sandbox import SandboxIdentity, SandboxStore

    store = SandboxStore(tmp_path / "sandbox.db", SandboxIdentity())
    try:
        per_reference = Counter(t["pgReferenceNumber"] for t in store.transactions())
        assert per_reference[refs["proven"]] == 1
        assert max(per_reference.values()) == 1
    finally:
        store.close()


def screenshot_path(name: str) -> Path:
    from tests.browser_support import ARTIFACTS

    folder = ARTIFACTS / "screens"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.png"
