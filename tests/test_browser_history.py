"""The Overview and History pages in a real browser, on a realistic demo ledger, at 1280x800
and on a 390x844 phone."""

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


# Every axis title and tick label of every chart, as drawn, must lie inside its chart: the
# margins are worked out from the labels (ui/charts.py), not measured by Plotly in the browser.
_CLIPPED_LABELS = """() => {
  const clipped = [];
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    const box = plot.getBoundingClientRect();
    const labels = plot.querySelectorAll(
      '.g-xtitle text, .g-ytitle text, .xtick text, .ytick text');
    for (const label of labels) {
      const r = label.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1
          || r.bottom > box.bottom + 1) clipped.push(label.textContent);
    }
  }
  return clipped;
}"""


@pytest.mark.parametrize("size", [(1280, 800), (390, 844)], ids=["laptop", "phone"])
def test_chart_labels_and_axis_titles_are_inside_their_charts(demo_data_dir: Path, size):
    extra = {"POINTS_DESK_SETTLE_INTERVAL_SECONDS": "0"}
    with running_dashboard(demo_data_dir, extra) as url, browser_page(*size) as page:
        for path, charts in (("", 3), ("/history", 4)):
            page.goto(f"{url}{path}")
            wait_idle(page)
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .xtick text').length >= {charts}"
            )
            page.wait_for_timeout(500)  # the last chart's labels
            titles = page.locator(
                ".js-plotly-plot .g-xtitle text, .js-plotly-plot .g-ytitle text"
            ).count()
            assert titles >= 2, f"{path or '/'}: the charts' axis titles are not drawn"
            assert page.evaluate(_CLIPPED_LABELS) == [], f"{path or '/'} at {size}"
