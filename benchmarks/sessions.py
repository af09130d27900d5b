"""Many people at once: 10 browser sessions working while a 10,000-row batch sends.

    .venv/bin/python -m benchmarks.sessions [--sessions 10] [--credits 10] [--filters 5]
        [--batch-rows 10000] [--latency-ms 100] [--concurrency 16]

Starts, with a fresh data directory, the dashboard (``streamlit run app.py``, sandbox mode) and
one worker process (benchmarks/bulk_real.py's ``running_app``). A first browser uploads a
``--batch-rows`` file of new cards on the Bulk page and confirms it; the sandbox answers each
call after ``--latency-ms``. After the batch has sent alone for a while, ``--sessions`` browser
contexts in Debian's chromium (Playwright, one page each, all at once) each:

- open an account for their own employee on Create account (1 movement),
- credit it ``--credits`` times on Credit (each: "New credit", find the employee, points, click),
- change History's filters ``--filters`` times (the employee search, kinds, statuses),
- open the running batch on Bulk and wait for its live panel.

Printed: p50 / p95 click-to-answer seconds per action (the click until the outcome or the
re-run page is there), the dashboard's RSS growth per session (its process hosts the sandbox
too), the batch's rate while the sessions ran against its rate alone, and whether every credit
is in the ledger exactly once, succeeded. Targets: p95 < 1.5 s, RSS growth < 40 MB a session,
batch rate >= 80% of its rate alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from benchmarks.bulk import bulk_file
from benchmarks.bulk_real import PIDS, _admin, _sandbox, running_app

CHROMIUM = os.environ.get("POINTS_DESK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
CONNECTED = "[data-testid='stApp'][data-test-connection-state='CONNECTED']"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _idle(page) -> None:
    await page.wait_for_selector(CONNECTED)
    await page.wait_for_selector(IDLE)
    await page.wait_for_timeout(100)
    await page.wait_for_selector(IDLE)


async def _open(page, url: str, title: str) -> None:
    await page.get_by_role("link", name=title).first.click()
    await _idle(page)


async def _fill(page, label: str, value: str) -> None:
    await page.get_by_label(label, exact=True).fill(value)


async def _choose(page, key: str, option: str) -> None:
    """Pick ``option`` in a selectbox. A re-run landing while its list is open closes the list,
    so a list that does not show its option within a few seconds is opened again."""
    choice = page.get_by_role("option", name=option, exact=True)
    for attempt in range(5):
        await page.locator(f".st-key-{key}").click()
        try:
            await choice.click(timeout=5_000)
            return
        except Exception:
            if attempt == 4:
                raise
            await page.keyboard.press("Escape")
            await _idle(page)


async def one_session(browser, url: str, n: int, args, timings: dict[str, list[float]]) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(60_000)
    name, email = f"Bench {_letters(n)}", f"session{n}@bench.example"  # names hold no digits
    try:
        await page.goto(url)
        await _idle(page)
        await _open(page, url, "Create account")
        await _fill(page, "First name", name)
        await _choose(page, "new_title", "Ms")
        await _choose(page, "new_gender", "Female")
        await _fill(page, "Email", email)
        await _fill(page, "Mobile", f"97{n:08d}")
        await _fill(page, "First credit (points)", "100")
        await _fill(page, "Reason", f"session {n} opening")
        started = time.perf_counter()
        await page.get_by_role("button", name="Create account and credit").click()
        await page.get_by_text(f"100.00 points credited to {name}").wait_for()
        timings["create"].append(time.perf_counter() - started)

        await _open(page, url, "Credit")
        for i in range(args.credits):
            if i:
                again = page.get_by_role("button", name="New credit")
                await again.click()
                # Its re-run empties the form: typing before it lands would be wiped.
                await again.wait_for(state="detached")
                await _idle(page)
            await _fill(page, "Find the employee", email)
            await page.keyboard.press("Enter")
            await _idle(page)
            amount = f"{10 + i}.{n:02d}"
            await _fill(page, "Points to credit", amount)
            await _fill(page, "Reason", f"session {n} credit {i}")
            started = time.perf_counter()
            await page.get_by_role("button", name="Credit points").click()
            await page.get_by_text(f"{amount} points credited to {name}").wait_for()
            timings["credit"].append(time.perf_counter() - started)
            await _idle(page)

        await _open(page, url, "History")
        changes = [
            ("history_employee", name),
            ("history_employee", ""),
            ("history_employee", "bulk1"),
            ("history_employee", email),
            ("history_employee", "Bench"),
        ]
        for key, text in changes[: args.filters]:
            field = page.locator(f".st-key-{key} input")
            await field.fill(text)
            started = time.perf_counter()
            await field.press("Enter")
            await page.wait_for_timeout(50)  # the re-run starts
            await _idle(page)
            timings["history filter"].append(time.perf_counter() - started)

        await _open(page, url, "Bulk allocation")
        started = time.perf_counter()
        # The batch's own button (the programme selectbox has an "Open" toggle of its own).
        await page.locator("[class*='st-key-bulk_open_'] button").first.click()
        await page.locator(".st-key-bulk_batch_panel").wait_for()
        timings["open batch"].append(time.perf_counter() - started)
        await page.wait_for_timeout(3000)  # watch it move for a few polls
    except Exception:
        folder = Path(__file__).resolve().parent.parent / "test-artifacts"
        folder.mkdir(exist_ok=True)
        await page.screenshot(path=str(folder / f"sessions-{n}-failed.png"), full_page=True)
        raise
    finally:
        await context.close()


def _letters(n: int) -> str:
    return "".join(chr(65 + int(d)) for d in f"{n:02d}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Sampler(threading.Thread):
    """The sandbox's commit count, once a second: the batch's progress over time."""

    def __init__(self, info: dict):
        super().__init__(daemon=True)
        self.info, self.points, self.stop = info, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            stats = _admin(self.info, "GET", "stats")
            self.points.append((time.perf_counter(), stats["commit_count"]))
            self.stop.wait(1.0)

    def rate(self, start: float, end: float, finished_at: int) -> float | None:
        inside = [(t, c) for t, c in self.points if start <= t <= end and c < finished_at]
        if len(inside) < 2:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None


async def sessions_run(url: str, args) -> dict[str, list[float]]:
    from playwright.async_api import async_playwright

    timings: dict[str, list[float]] = {
        "create": [],
        "credit": [],
        "history filter": [],
        "open batch": [],
    }
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            results = await asyncio.gather(
                *(one_session(browser, url, n, args, timings) for n in range(args.sessions)),
                return_exceptions=True,
            )
        finally:
            await browser.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        print(f"{len(failed)} session(s) failed:")
        for reason in dict.fromkeys(repr(error).splitlines()[0][:200] for error in failed):
            print(f"  {reason}")
    return timings


def start_batch(url: str, data_dir: Path, rows: int, args) -> dict:
    """Upload and confirm the batch in its own browser; return the sandbox's run file."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector(IDLE)
            page.get_by_role("link", name="Bulk allocation").click()
            page.wait_for_selector(IDLE)
            info = _sandbox(data_dir)
            csv = data_dir / "batch.csv"
            csv.write_bytes(bulk_file(rows))
            page.locator("input[type='file']").set_input_files(str(csv))
            send = page.get_by_role("button", name=f"Send {rows:,} rows…")
            send.wait_for()
            speed = page.locator(".st-key-bulk_concurrency input")
            if not speed.is_visible():
                page.get_by_text("Advanced", exact=True).click()  # the speed settings' expander
            speed.fill(str(args.concurrency))
            speed.press("Tab")
            page.wait_for_selector(IDLE)
            _admin(info, "POST", "knobs", {"latency_ms": args.latency_ms})
            send.click()
            page.get_by_role("dialog").get_by_role("button", name="Send now").click()
            page.locator(".st-key-bulk_batch_panel").wait_for()
            return info
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--credits", type=int, default=10)
    parser.add_argument("--filters", type=int, default=5)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--alone-seconds", type=float, default=20)
    args = parser.parse_args(argv)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp, running_app(Path(tmp)) as (url, data_dir):
        before_commits = 0
        info = start_batch(url, data_dir, args.batch_rows, args)
        before_commits = _admin(info, "GET", "stats")["commit_count"]
        finished_at = before_commits + args.batch_rows
        sampler = Sampler(info)
        sampler.start()
        alone_start = time.perf_counter()
        time.sleep(args.alone_seconds)
        rss_before = rss_mb(PIDS["dashboard"])
        sessions_start = time.perf_counter()
        timings = asyncio.run(sessions_run(url, args))
        sessions_end = time.perf_counter()
        rss_after = rss_mb(PIDS["dashboard"])
        sampler.stop.set()
        sampler.join()
        alone = sampler.rate(alone_start + 2, sessions_start, finished_at)
        together = sampler.rate(sessions_start, sessions_end, finished_at)
        engine = sa.create_engine(f"sqlite:///{data_dir / 'ledger.db'}")
        with engine.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT reason, count(*), sum(status = 'SUCCEEDED') FROM transactions "
                    "WHERE reason LIKE 'session % credit %' GROUP BY reason"
                )
            ).all()
        engine.dispose()
    print(
        f"{args.sessions} sessions x ({args.credits} credits, {args.filters} History filter "
        f"changes, a look at the running {args.batch_rows:,}-row batch); sandbox latency "
        f"{args.latency_ms:.0f} ms, {args.concurrency} at a time; "
        f"sessions took {sessions_end - sessions_start:.1f} s"
    )
    ok = True
    every = [v for values in timings.values() for v in values]
    for action, values in [*timings.items(), ("every action", every)]:
        if values:
            print(
                f"  {action:<15} n={len(values):>3}  p50 {statistics.median(values):6.2f} s  "
                f"p95 {_percentile(values, 0.95):6.2f} s"
            )
    p95 = _percentile(every, 0.95) if every else float("inf")
    ok &= p95 < 1.5
    growth = (rss_after - rss_before) / max(1, args.sessions)
    print(
        f"  dashboard RSS {rss_before:.0f} MB -> {rss_after:.0f} MB: {growth:.1f} MB a session "
        "(target < 40)"
    )
    ok &= growth < 40
    if alone and together:
        print(
            f"  batch {together:.1f} rows/s with the sessions, {alone:.1f} alone: "
            f"{together / alone:.0%} (target >= 80%)"
        )
        ok &= together / alone >= 0.8
    else:
        print("  batch rate: not measured (the batch finished before or during the sessions)")
    expected = args.sessions * args.credits
    once = len(found) == expected and all(n == 1 and s == 1 for _, n, s in found)
    print(
        f"  credits in the ledger: {len(found)} distinct of {expected}, "
        + ("each exactly once, succeeded" if once else "NOT each exactly once and succeeded")
    )
    ok &= once
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("targets met" if ok else "targets MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
