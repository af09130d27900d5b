"""The Overview and History pages in a real browser, on a realistic demo ledger, at 1280x800."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser_support import ARTIFACTS, browser_page, running_dashboard, wait_idle

pytestmark = pytest.mark.browser
SCREENS = ARTIFACTS / "screens"


@pytest.fixture
def demo_data_dir(desk_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir holding a sandbox and a ledger seeded with demo data (then closed)."""
    from services import demo
    from services.desk import Desk

    monkeypatch.setenv("POINTS_DESK_SETTLE_INTERVAL_SECONDS", "0")
    desk = Desk()
    try:
        assert demo.load(
            desk.ledger, desk.new_client, desk.settings, desk.sandbox.store, 80, seed=3
        ).agrees
    finally:
        desk.close()
    return desk_env


def test_overview_and_history_render_their_charts(demo_data_dir: Path):
    SCREENS.mkdir(parents=True, exist_ok=True)
    extra = {"POINTS_DESK_SETTLE_INTERVAL_SECONDS": "0"}
    with running_dashboard(demo_data_dir, extra) as url, browser_page(1280, 800) as page:
        page.goto(url)
        wait_idle(page)
        # The charts come a moment after the figures (ui/first_paint.py), all in one run: points
        # moved, largest balances and the runway's projection (and any programme burn-downs).
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3")
        assert page.get_by_text("This month in Points Desk").is_visible()
        page.screenshot(path=str(SCREENS / "overview-test.png"))

        page.goto(f"{url}/history")
        wait_idle(page)
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length == 4")
        assert page.get_by_text("Points moved", exact=True).is_visible()
        body = page.locator("[data-testid='stMain']").inner_text()
        assert "Traceback" not in body and "Error" not in body
        assert "(IST)" in body
        page.screenshot(path=str(SCREENS / "history-test.png"))
