"""Screenshots of every page, light and dark, desktop (1440×900) and phone (390×844).

    .venv/bin/python -m benchmarks.screenshots [--employees 40] [--out test-artifacts/screens]

Starts the dashboard on its sandbox in a temporary data directory, loads demo data through the
Overview's *Load demo data* (the real allocate flow), credits one card (so an outcome card shows),
then opens each page in headless Debian chromium with the browser preferring light or dark and
saves full-page PNGs named ``<theme>-<size>-<page>.png``. Not a test: for people to look at.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.browser_support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    running_dashboard,
    wait_idle,
)

SIZES = {"desktop": (1440, 900), "phone": (390, 844)}
PAGES = {
    "overview": "",
    "history": "history",
    "create-account": "create_account",
    "credit": "credit",
    "debit": "debit",
    "bulk": "bulk",
    "reconcile": "reconcile",
    "approvals": "approvals",
    "programmes": "programmes",
    "schedules": "schedules",
}


def load_demo(browser, url: str, employees: int) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    wait_idle(page)
    page.get_by_text("Sandbox tools").click()
    field = page.get_by_label("Employees", exact=True)
    field.fill(str(employees))
    field.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Load demo data").click()
    page.get_by_text("Loaded ").wait_for()
    context.close()


def shoot(browser, url: str, out: Path, pages, themes, sizes) -> list[Path]:
    saved = []
    for theme in themes:
        for size in sizes:
            width, height = SIZES[size]
            context = browser.new_context(
                viewport={"width": width, "height": height},
                color_scheme=theme,
                is_mobile=size == "phone",
                has_touch=size == "phone",
            )
            page = context.new_page()
            page.set_default_timeout(30_000)
            for name in pages:
                path = PAGES[name]
                page.set_viewport_size({"width": width, "height": height})
                page.goto(f"{url}/{path}")
                wait_idle(page)
                # A session's first look at a page draws its charts' places, and the charts
                # themselves 2 s later (ui/first_paint.py): shoot the page with its charts.
                page.get_by_text("Drawing the chart…").first.wait_for(state="detached")
                wait_idle(page)
                page.wait_for_timeout(400)  # charts draw after the script is done
                # The page scrolls inside Streamlit's main block, not the document: grow the
                # viewport to the content so the PNG holds the whole page.
                tall = page.evaluate(
                    "Math.max(...[...document.querySelectorAll('section, div')]"
                    ".map(e => e.scrollHeight))"
                )
                page.set_viewport_size({"width": width, "height": max(height, min(tall, 6000))})
                page.wait_for_timeout(300)
                target = out / f"{theme}-{size}-{name}.png"
                page.screenshot(path=str(target), full_page=True)
                saved.append(target)
            context.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--employees", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ARTIFACTS / "screens")
    parser.add_argument("--pages", default=",".join(PAGES), help="comma-separated page names")
    parser.add_argument("--themes", default="light,dark")
    parser.add_argument("--sizes", default=",".join(SIZES))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory() as data,
        running_dashboard(Path(data)) as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            load_demo(browser, url, args.employees)
            for path in shoot(
                browser,
                url,
                args.out,
                args.pages.split(","),
                args.themes.split(","),
                args.sizes.split(","),
            ):
                print(path)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
