"""How long a new browser session waits for the Overview: its title, then its pool balance.

    .venv/bin/python -m benchmarks.sessions_open [--sessions 10] [--no-baseline]

Loads demo data for ``--employees`` people (and prints how long that took), then starts the
real ``streamlit run app.py`` on it (sandbox, own data dir) and opens ``--sessions`` new
browser sessions one after another in Debian's chromium (a new browser context each: no cookie,
no session state, as a manager opening the dashboard). For each it records the seconds from
``goto`` to

- title    the Overview's heading is visible,
- pool     the Overview's "Pool balance" metric shows a number,
- sidebar  the sidebar's pool balance shows a number,

and prints the first session after the server started (cold) apart from the others (warm,
p50/p95). ``--browser`` says how each session's browser comes: ``fresh`` (a new browser context
each time: nothing cached, a first visit, the worst case), ``returning`` (new tabs of one browser
context: the first session is its first visit, the later ones find Streamlit's scripts in the
browser's cache, which the server marks immutable for a year; this is a manager opening the
dashboard again) or ``both`` (the default).

The baseline is the same run against a second server with the shared pool cache off
(``POINTS_DESK_POOL_CACHE_SECONDS=0``: every session asks EnKash itself), and the ratios are
warm baseline / warm. Targets: warm pool under 1 s, cold pool under 2 s.

``--floor`` also opens the same number of sessions on a page that is nothing but Streamlit: a
title and a "Pool balance" metric in the sidebar and the main area, with no Python work at all.
Its figures are what a fresh browser needs for Streamlit's own front end (scripts, fonts, the
websocket) on this machine right now: Points Desk cannot open faster than that.

Each report also splits the warm sessions' wait: when the page's scripts had loaded and sent
their first message on the websocket (the request for the first run), when the last message
before the pool showed arrived, and how long the browser drew after it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, free_port, running_dashboard

TARGET_WARM = 1.0
TARGET_COLD = 2.0


def _open_one(browser, url: str, context=None) -> dict[str, float]:
    """One new session: in a new browser context (a browser that never opened the dashboard),
    or, with ``context``, in a new tab of that context (its cache holds Streamlit's scripts)."""
    fresh = context is None
    if fresh:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    frames: list[tuple[float, str]] = []  # (seconds after goto, "sent" or "received")

    def watch(socket) -> None:
        socket.on("framesent", lambda _: frames.append((time.perf_counter() - started, "sent")))
        socket.on(
            "framereceived", lambda _: frames.append((time.perf_counter() - started, "received"))
        )

    page.on("websocket", watch)
    try:
        page.set_default_timeout(30_000)
        started = time.perf_counter()
        page.goto(url, wait_until="commit")
        main = page.get_by_test_id("stMain")
        main.get_by_role("heading", name="Overview").wait_for()
        title = time.perf_counter() - started
        main.get_by_test_id("stMetric").filter(has_text="Pool balance").get_by_test_id(
            "stMetricValue"
        ).get_by_text(_re_number()).wait_for()
        pool = time.perf_counter() - started
        page.get_by_test_id("stSidebar").get_by_test_id("stMetricValue").get_by_text(
            _re_number()
        ).wait_for()
        sidebar = time.perf_counter() - started
        # The browser's part and the server's: when the page's scripts had loaded and asked the
        # server for its first run (the first message on the websocket), and when the last
        # message before the pool showed had come (the rest is the browser drawing).
        asked = min((t for t, way in frames if way == "sent"), default=float("nan"))
        answered = max(
            (t for t, way in frames if way == "received" and t <= pool), default=float("nan")
        )
        return {
            "title": title,
            "pool": pool,
            "sidebar": sidebar,
            "asked": asked,
            "answered": answered,
        }
    finally:
        page.close()
        if fresh:
            context.close()


def _re_number():
    import re

    return re.compile(r"^[\d,]+\.\d\d$")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _demo_data(data_dir: Path, employees: int) -> None:
    """Load demo data into ``data_dir`` (sandbox state and ledger) before the server starts."""
    from services import demo
    from services.config import load_settings
    from services.desk import Desk

    saved = dict(os.environ)
    try:
        for name in list(os.environ):
            if name.startswith(("ENKASH_", "POINTS_DESK_")) or name == "DATABASE_URL":
                del os.environ[name]
        os.environ.update(
            POINTS_DESK_DATA_DIR=str(data_dir),
            POINTS_DESK_SECRETS_FILE=str(data_dir / "no-secrets.toml"),
            POINTS_DESK_SETTLE_INTERVAL_SECONDS="0",
        )
        desk = Desk(load_settings())
        try:
            report = demo.load(
                desk.ledger,
                desk.new_client,
                desk.settings,
                desk.sandbox.store,
                employees,
                runner=desk.runner,
            )
        finally:
            desk.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    print(
        f"demo data: {report.transactions:,} transactions for {report.employees:,} employees "
        f"in {report.seconds:.1f} s"
    )


def measure(
    sessions: int, extra_env: dict[str, str], employees: int, *, returning: bool = False
) -> list[dict[str, float]]:
    """Open ``sessions`` new sessions one after another on a freshly started dashboard. Each in
    a fresh browser context; with ``returning``, the first one's context is kept and every later
    session is a new tab in it (a manager's browser that opened the dashboard before)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as data_dir:
        if employees:
            _demo_data(Path(data_dir), employees)
        env = {"POINTS_DESK_SETTLE_INTERVAL_SECONDS": "0", **extra_env}
        with running_dashboard(Path(data_dir), env) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                return _sessions(browser, url, sessions, returning)
            finally:
                browser.close()


def _sessions(browser, url: str, sessions: int, returning: bool) -> list[dict[str, float]]:
    if not returning:
        return [_open_one(browser, url) for _ in range(sessions)]
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        first = _open_one(browser, url, context)  # a first visit: it fills the browser's cache
        return [first, *(_open_one(browser, url, context) for _ in range(sessions - 1))]
    finally:
        context.close()


FLOOR_PAGE = """
import streamlit as st

st.set_page_config(page_title="floor", layout="wide")
st.sidebar.metric("Pool balance", "1,23,456.00")
st.title("Overview")
st.columns(3)[0].metric("Pool balance", "1,23,456.00", border=True)
"""


@contextmanager
def _floor_page() -> Iterator[str]:
    """A Streamlit server for FLOOR_PAGE; yields its URL."""
    with bare_streamlit(FLOOR_PAGE) as (url, _):
        yield url


@contextmanager
def bare_streamlit(source: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """A Streamlit server for a page whose script is ``source`` (nothing of Points Desk);
    yields its URL and its process."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "floor.py").write_text(source)
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "floor.py",
                "--server.headless",
                "true",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if requests.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    time.sleep(0.2)
            yield url, process
        finally:
            process.terminate()
            process.wait(timeout=10)


def measure_floor(sessions: int, *, returning: bool = False) -> list[dict[str, float]]:
    from playwright.sync_api import sync_playwright

    with _floor_page() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            return _sessions(browser, url, sessions, returning)
        finally:
            browser.close()


def _report(name: str, runs: list[dict[str, float]]) -> dict[str, float]:
    cold, warm = runs[0], runs[1:]
    print(f"\n{name}: {len(runs)} new sessions")
    print(f"  {'':8} {'cold':>7} {'warm p50':>9} {'warm p95':>9}")
    figures = {}
    for what in ("title", "pool", "sidebar"):
        values = [run[what] for run in warm] or [cold[what]]
        figures[what] = statistics.median(values)
        print(f"  {what:8} {cold[what]:6.2f}s {figures[what]:8.2f}s {_p95(values):8.2f}s")
    figures["cold_pool"] = cold["pool"]
    measured = warm or [cold]
    asked = statistics.median(run["asked"] for run in measured)
    answered = statistics.median(run["answered"] for run in measured)
    print(
        f"  warm p50: the page's scripts asked for the first run at {asked:.2f}s, the last "
        f"message before the pool came at {answered:.2f}s ({answered - asked:.2f}s on the "
        f"websocket), the pool was drawn {figures['pool'] - answered:.2f}s after it"
    )
    return figures


BROWSERS = {
    "fresh": "a fresh browser each time (nothing cached: a first visit)",
    "returning": "new tabs of a browser that opened the dashboard before (scripts cached)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--employees", type=int, default=300, help="demo data loaded first (0: an empty desk)"
    )
    parser.add_argument(
        "--floor", action="store_true", help="also measure a page that is nothing but Streamlit"
    )
    parser.add_argument(
        "--browser",
        choices=("fresh", "returning", "both"),
        default="both",
        help="how each new session's browser comes: " + "; ".join(BROWSERS.values()),
    )
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"no chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    print(f"load average {os.getloadavg()[0]:.1f} before the sessions")
    kinds = list(BROWSERS) if args.browser == "both" else [args.browser]
    ok = True
    for kind in kinds:
        returning = kind == "returning"
        print(f"\n== {BROWSERS[kind]}")
        now = _report(
            "Points Desk", measure(args.sessions, {}, args.employees, returning=returning)
        )
        if args.floor:
            floor = _report(
                "Floor: a page that is only Streamlit",
                measure_floor(args.sessions, returning=returning),
            )
            print(
                "\nPoints Desk / floor, warm p50: "
                + ", ".join(f"{what} {now[what] / floor[what]:.2f}x" for what in ("title", "pool"))
            )
        if not args.no_baseline:
            base = _report(
                "Baseline (pool cache off)",
                measure(
                    args.sessions,
                    {"POINTS_DESK_POOL_CACHE_SECONDS": "0"},
                    args.employees,
                    returning=returning,
                ),
            )
            print(
                "\nwarm baseline / warm: "
                + ", ".join(
                    f"{what} {base[what] / now[what]:.2f}x" for what in ("title", "pool", "sidebar")
                )
            )
        met = now["pool"] < TARGET_WARM and now["cold_pool"] < TARGET_COLD
        ok = ok and met
        print(
            f"\ntarget ({kind} browser): warm pool < {TARGET_WARM:.0f} s "
            f"(p50 {now['pool']:.2f} s), cold pool < {TARGET_COLD:.0f} s "
            f"({now['cold_pool']:.2f} s): "
            f"{'met' if met else 'NOT met'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
