"""What one re-run costs the browser and the server: Points Desk's pages against bare Streamlit.

    .venv/bin/python -m benchmarks.rerun_cost [--reruns 8] [--employees 60]

benchmarks/sessions.py puts ten chromium pages on the server's two cores, and they use about
three quarters of the machine's CPU. This says how much of that any Streamlit page costs and
how much is Points Desk's own. In Debian's chromium (one page, 1280x900, headless, as there),
with nothing else running, it re-runs, ``--reruns`` times each:

- ``bare``: a page that is only Streamlit, a text box and one line under it: type, Enter;
- ``credit``: Points Desk's Credit page, a search for an employee nobody is ("No employee
  matches"): type, Enter;
- ``history``: Points Desk's History page on demo data for ``--employees`` people, a change of
  its employee filter: type, Enter.

Each re-run is measured from the keystroke until the script has finished, the page is idle and
a further second has passed (the browser's last frames), with that second's idle CPU taken off:
the wall seconds, the CPU seconds of all of chromium's processes (the page's renderer apart),
and the CPU seconds of the server's process. Printed: the medians, each page's chromium CPU as a
multiple of the bare page's, and what the bare figure means for benchmarks/sessions.py: a credit
there is three re-runs (find the employee, credit, "New credit"), so ten sessions that never
pause spend, on two cores, at least 10 x 3 x (bare chromium CPU) / 2 seconds per credit in the
browsers alone, whatever the server does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.bulk_real import PIDS, cpu_seconds, running_app
from benchmarks.sessions import CHROMIUM, CHROMIUM_ARGS, IDLE, _processes
from benchmarks.sessions_open import _demo_data, bare_streamlit

BARE_PAGE = """
import streamlit as st

query = st.text_input("Find the employee", key="query")
st.caption(f"Searched for {len(query)} characters.")
"""
SETTLE_SECONDS = 1.0


def _chromium() -> tuple[float, float]:
    """CPU seconds of chromium's processes so far: (the page's renderers, all of chromium)."""
    renderer = total = 0.0
    for pid, (name, seconds) in _processes().items():
        if not name.startswith("chrom"):
            continue
        total += seconds
        try:
            if b"--type=renderer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                renderer += seconds
        except OSError:  # it exited meanwhile
            continue
    return renderer, total


def _idle(page) -> None:
    page.wait_for_selector(IDLE)
    page.wait_for_timeout(100)
    page.wait_for_selector(IDLE)


def _rerun_costs(
    page, server_pid: int, rerun: Callable[[int], None], reruns: int
) -> list[dict[str, float]]:
    """Measure ``reruns`` calls of ``rerun`` (each starts one script run) on an idle page."""
    _idle(page)
    time.sleep(2)
    renderer0, chromium0 = _chromium()
    server0 = cpu_seconds(server_pid)
    time.sleep(3)
    renderer1, chromium1 = _chromium()
    idle = {  # CPU per second with nothing happening: taken off each re-run's settling second
        "renderer": (renderer1 - renderer0) / 3,
        "chromium": (chromium1 - chromium0) / 3,
        "server": (cpu_seconds(server_pid) - server0) / 3,
    }
    costs = []
    for n in range(reruns):
        renderer0, chromium0 = _chromium()
        server0 = cpu_seconds(server_pid)
        started = time.perf_counter()
        rerun(n)
        page.wait_for_timeout(50)  # the run starts
        _idle(page)
        wall = time.perf_counter() - started
        time.sleep(SETTLE_SECONDS)
        renderer1, chromium1 = _chromium()
        spent = {
            "renderer": renderer1 - renderer0,
            "chromium": chromium1 - chromium0,
            "server": cpu_seconds(server_pid) - server0,
        }
        costs.append(
            {"wall": wall} | {k: max(0.0, v - idle[k] * SETTLE_SECONDS) for k, v in spent.items()}
        )
    return costs


def _type(page, selector: str, texts: list[str]) -> Callable[[int], None]:
    def rerun(n: int) -> None:
        field = page.locator(selector)
        field.fill(texts[n % len(texts)])
        field.press("Enter")

    return rerun


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reruns", type=int, default=8)
    parser.add_argument("--employees", type=int, default=60)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results: dict[str, list[dict[str, float]]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            with bare_streamlit(BARE_PAGE) as (url, process):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url)
                results["bare"] = _rerun_costs(
                    page,
                    process.pid,
                    _type(page, "input[type='text']", [f"nobody{i}" for i in range(5)]),
                    args.reruns,
                )
                page.close()
            with tempfile.TemporaryDirectory() as folder:
                data_dir = Path(folder)
                if args.employees:
                    _demo_data(data_dir, args.employees)
                with running_app(data_dir) as (url, _):
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    page.goto(url)
                    _idle(page)
                    page.get_by_role("link", name="Credit").first.click()
                    results["credit"] = _rerun_costs(
                        page,
                        PIDS["dashboard"],
                        _type(
                            page,
                            ".st-key-credit_query input",
                            [f"nobody{i}@nowhere.example" for i in range(5)],
                        ),
                        args.reruns,
                    )
                    page.get_by_role("link", name="History").first.click()
                    _idle(page)
                    time.sleep(3)  # the charts come in a second run (ui/first_paint.py)
                    results["history"] = _rerun_costs(
                        page,
                        PIDS["dashboard"],
                        _type(page, ".st-key-history_employee input", ["a", "", "e", "r", ""]),
                        args.reruns,
                    )
                    page.close()
        finally:
            browser.close()

    print(f"\nper re-run, medians of {args.reruns} (CPU seconds; idle CPU taken off):")
    print(f"  {'page':8} {'wall':>6} {'chromium':>9} {'renderer':>9} {'server':>7} {'x bare':>7}")
    medians = {
        name: {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        for name, runs in results.items()
    }
    bare = medians["bare"]["chromium"]
    for name, m in medians.items():
        print(
            f"  {name:8} {m['wall']:5.2f}s {m['chromium']:8.3f}s {m['renderer']:8.3f}s "
            f"{m['server']:6.3f}s {m['chromium'] / bare:6.1f}x"
        )
    cores = os.cpu_count() or 1
    print(
        f"\nten sessions with no pause, three re-runs a credit, {cores} cores: at least "
        f"10 x 3 x {bare:.3f} / {cores} = {10 * 3 * bare / cores:.2f} s per credit in the "
        "browsers for bare Streamlit; with Points Desk's Credit page "
        f"{10 * 3 * medians['credit']['chromium'] / cores:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
