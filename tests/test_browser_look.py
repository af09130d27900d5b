"""How the pages look to a program manager, in a real browser at 1440×900 and on a 390×844 phone:
the outcome after submit is on screen, the sidebar closes after choosing a page on a phone,
metrics keep their half points, the XLSX export groups in lakhs, dark mode follows the browser.

One dashboard for the whole module; each test opens its own browser context.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    require_chromium,
    running_dashboard,
    screenshot,
    wait_idle,
)

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
AMOUNT = "1860.50"


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_chromium()
    data_dir = tmp_path_factory.mktemp("look")
    with running_dashboard(data_dir, {"POINTS_DESK_SETTLE_INTERVAL_SECONDS": "0"}) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _page(browser, viewport: dict, **options):
    context = browser.new_context(viewport=viewport, accept_downloads=True, **options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page


def _in_viewport(locator) -> bool:
    """On screen and not hidden under Streamlit's header: what is at its centre is itself."""
    return locator.evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " if (r.height === 0 || r.top < 0 || r.bottom > window.innerHeight) return false;"
        " const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
        " return hit !== null && (e.contains(hit) || hit.contains(e)); }"
    )


def _sidebar_open(page) -> bool:
    return page.get_by_test_id("stSidebar").bounding_box()["width"] > 0


@pytest.fixture(scope="module")
def created(dashboard: str, browser) -> dict:
    """On a phone: create an account with 1,860.50 points; what was on screen right after."""
    page = _page(browser, PHONE, has_touch=True)
    page.goto(dashboard)  # a first visit lands on the Overview, whatever the URL
    wait_idle(page)
    page.goto(f"{dashboard}/create_account")
    wait_idle(page)
    page.get_by_label("First name", exact=True).fill("Meera")
    for key, option in (("new_title", "Ms"), ("new_gender", "Female")):
        page.locator(f".st-key-{key}").click()
        page.get_by_role("option", name=option, exact=True).click()
    page.get_by_label("Email", exact=True).fill("meera@example.com")
    page.get_by_label("Mobile", exact=True).fill("96000 11223")
    page.get_by_label("First credit (points)", exact=True).fill(AMOUNT)
    page.get_by_label("Reason", exact=True).fill("Q3 incentive")
    page.get_by_role("button", name="Create account and credit").click()
    wait_idle(page)
    headline = page.get_by_text("1,860.50 points credited to Meera")
    headline.wait_for()
    page.wait_for_timeout(300)
    seen = {"outcome_on_screen": _in_viewport(headline)}
    screenshot(page, "look/phone-create-outcome")
    page.context.close()
    return seen


def test_on_a_phone_the_outcome_is_on_screen_after_submit(created: dict):
    assert created["outcome_on_screen"]


def test_on_a_phone_a_credit_outcome_is_on_screen_after_submit(
    dashboard: str, browser, created: dict
):
    page = _page(browser, PHONE, has_touch=True)
    page.goto(dashboard)
    wait_idle(page)
    page.goto(f"{dashboard}/credit")
    wait_idle(page)
    page.get_by_label("Find the employee", exact=True).fill("meera@example.com")
    page.keyboard.press("Enter")
    wait_idle(page)
    page.get_by_label("Points to credit", exact=True).fill("10")
    page.get_by_label("Reason", exact=True).fill("Spot award")
    page.get_by_role("button", name="Credit points").click()
    wait_idle(page)
    headline = page.get_by_text("10.00 points credited to Meera")
    headline.wait_for()
    page.wait_for_timeout(300)
    screenshot(page, "look/phone-credit-outcome")
    assert _in_viewport(headline)
    page.context.close()


def test_on_a_phone_the_sidebar_closes_after_choosing_a_page(dashboard: str, browser):
    page = _page(browser, PHONE, has_touch=True)
    page.goto(dashboard)
    wait_idle(page)
    assert not _sidebar_open(page)
    page.get_by_test_id("stExpandSidebarButton").click()
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="History").wait_for()
    page.wait_for_function(  # it slides in: 0 px wide at the click, 300 px a moment later
        "() => document.querySelector('[data-testid=stSidebar]').getBoundingClientRect().width > 0",
        timeout=5_000,
    )
    assert _sidebar_open(page)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="History").click()
    wait_idle(page)
    page.get_by_role("heading", name="History").wait_for()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=stSidebar]')"
        ".getBoundingClientRect().width === 0",
        timeout=5_000,
    )
    assert _in_viewport(page.get_by_role("heading", name="History"))
    page.context.close()


def test_metrics_keep_the_half_point(dashboard: str, browser, created: dict):
    page = _page(browser, DESKTOP)
    page.goto(dashboard)
    wait_idle(page)
    # 1,860.50 created (plus 10 if the phone credit ran first): the half point stays.
    credited = page.get_by_test_id("stMetric").filter(has_text="Credited").inner_text()
    assert "1,860.50" in credited or "1,870.50" in credited, credited
    pool = page.get_by_test_id("stSidebar").get_by_test_id("stMetric").inner_text()
    assert "99,98,139.50" in pool or "99,98,129.50" in pool, pool
    screenshot(page, "look/desktop-overview")
    page.context.close()


def test_the_xlsx_export_groups_points_in_lakhs(dashboard: str, browser, created: dict):
    from openpyxl import load_workbook

    page = _page(browser, DESKTOP)
    page.goto(f"{dashboard}/history")
    wait_idle(page)
    with page.expect_download() as download:
        page.get_by_role("button", name="Export XLSX").click()
    data = Path(download.value.path()).read_bytes()
    sheet = load_workbook(io.BytesIO(data)).active
    header = [cell.value for cell in sheet[1]]
    cells = [row[header.index("Points")] for row in sheet.iter_rows(min_row=2)]
    assert any(cell.value == pytest.approx(1860.5) for cell in cells)
    assert {cell.number_format for cell in cells} == {"#,##,##0.00"}
    page.context.close()


def test_dark_mode_follows_the_browser(dashboard: str, browser):
    page = _page(browser, DESKTOP, color_scheme="dark")
    page.goto(dashboard)
    wait_idle(page)
    background = page.get_by_test_id("stApp").evaluate("e => getComputedStyle(e).backgroundColor")
    red, green, blue = (int(part) for part in background[background.index("(") + 1 : -1].split(","))
    assert max(red, green, blue) < 80, background  # a dark background, not white
    # The sidebar (drawn with the page) keeps its buttons in the dark theme too.
    page.get_by_test_id("stSidebar").get_by_test_id("stBaseButton-tertiary").first.wait_for()
    screenshot(page, "look/desktop-overview-dark")
    page.context.close()


def test_on_a_phone_the_picker_shows_the_whole_card_id(dashboard: str, browser, created: dict):
    page = _page(browser, PHONE, has_touch=True)
    page.goto(dashboard)
    wait_idle(page)
    page.goto(f"{dashboard}/credit")
    wait_idle(page)
    page.get_by_label("Find the employee", exact=True).fill("meera")
    page.keyboard.press("Enter")
    wait_idle(page)
    chosen = page.locator(".st-key-credit_card input[role='combobox']")
    page.wait_for_function(
        "() => /EKC/.test(document.querySelector(\".st-key-credit_card input\")?.value || '')"
    )
    screenshot(page, "look/phone-picker")
    # The chosen label is an input's value, shown from its start: the card id's own width (in
    # the input's font) fits inside the input, so nothing of it is scrolled or cut away.
    fit = chosen.evaluate(
        """input => {
          const card = input.value.match(/EKC[A-Z0-9]+/);
          if (!card) return null;
          const style = getComputedStyle(input);
          const context = document.createElement('canvas').getContext('2d');
          context.font = style.font;
          const before = context.measureText(input.value.slice(0, card.index)).width;
          const width = context.measureText(card[0]).width;
          const room = input.clientWidth - parseFloat(style.paddingLeft)
            - parseFloat(style.paddingRight);
          return {card: card[0], end: before + width, room, scrolled: input.scrollLeft};
        }"""
    )
    assert fit is not None, "no card id in the chosen label"
    assert fit["scrolled"] == 0 and fit["end"] <= fit["room"], fit
    page.context.close()
