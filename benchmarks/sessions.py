"""Many people at once: 10 browser sessions working while a 10,000-row batch sends.

    .venv/bin/python -m benchmarks.sessions [--sessions 10] [--credits 10] [--filters 5]
        [--batch-rows 10000] [--latency-ms 100] [--concurrency 16] [--alone-seconds 20]
        [--enkash embedded|process] [--think-seconds 0]

Starts, with a fresh data directory, the dashboard (``streamlit run app.py``) and one worker
process (benchmarks/bulk_real.py's ``running_app``). Where EnKash runs is ``--enkash``:

- ``embedded`` (the default): sandbox mode. The EnKash sandbox runs inside the dashboard's
  process and the worker sends to it there (it finds it through the run file), so the batch
  shares the dashboard's GIL, which no real deployment does.
- ``process``: as a deployment is, EnKash elsewhere. The sandbox is served on its own by
  ``python -m services.sandbox`` (its own process, its state in the data directory), and the
  dashboard and the worker run in live mode against it (``ENKASH_BASE_URL`` and the other
  ``ENKASH_*`` settings, with the sandbox's identity). Live mode needs sign-in: the run's
  secrets file holds one local account (role operator, a random password), and every browser
  signs in on the sign-in page before anything is timed.

A first browser uploads a ``--batch-rows`` file of new cards on the Bulk page and confirms it;
the sandbox answers each call after ``--latency-ms`` (set through its ``/_sandbox/knobs``
endpoint once the preview is on the page, in both topologies). After the batch has sent alone
for ``--alone-seconds``, ``--sessions`` browser contexts in Debian's chromium (Playwright, one
page each, all at once) each:

- open an account for their own employee on Create account (1 movement),
- credit it ``--credits`` times on Credit (each: "New credit", find the employee, points, click),
- change History's filters ``--filters`` times (the employee search, kinds, statuses),
- open the running batch on Bulk and wait for its live panel.

With ``--think-seconds`` (default 0) each session pauses before each of those actions, for a
random time around that mean (uniform between half and one and a half times it), as a person
reads an answer and types the next one; without it the sessions are ten people with no pause at
all, each clicking again the instant an answer appears.

Printed, under a header naming the topology: p50 / p95 click-to-answer seconds per action (the
click until the outcome or the re-run page is there), the dashboard's RSS growth per session
(with ``embedded`` its process hosts the sandbox too), the batch's rate while the sessions ran
against its rate alone (commits counted at the sandbox: ``/_sandbox/stats``, with its control
token), and whether every credit is in the ledger exactly once, succeeded. Targets: p95 < 1.5 s,
RSS growth < 40 MB a session, batch rate >= 80% of its rate alone.

Also printed: the CPU the machine spent while the sessions ran (all of it, from /proc/stat, and
the dashboard's, the worker's and an own-process sandbox's share; the rest is the browsers, the
Playwright driver and this script), the CPU per timed action, and what the interactive response
time law makes of it. With N sessions each waiting for its answer before its next action, think
time Z and D CPU seconds of work (browser and server) per action on C cores, the mean response
time is at least N * D / C - Z: once the cores are the bottleneck, no change to the server alone
brings the answers under that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import sqlalchemy as sa

from benchmarks.bulk import bulk_file
from benchmarks.bulk_real import (
    PIDS,
    _admin,
    _env,
    _process,
    _sandbox,
    cpu_seconds,
    running_app,
    stat_cpu_seconds,
)
from services.auth import hash_password
from services.sandbox.store import SandboxIdentity
from tests.test_no_leaks import live_env

CHROMIUM = os.environ.get("POINTS_DESK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
CONNECTED = "[data-testid='stApp'][data-test-connection-state='CONNECTED']"

TOPOLOGIES = {
    "embedded": "EnKash sandbox embedded in the dashboard's process (sandbox mode)",
    "process": "EnKash sandbox in its own process; dashboard and worker in live mode against it",
}
#: The local account every browser signs in with in live mode (``--enkash process``).
Account = tuple[str, str]


def _sandbox_url(process, log: Path, timeout: float = 60) -> str:
    """The address a ``python -m services.sandbox --port 0`` prints once it listens."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(r"EnKash sandbox listening on (\S+)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the EnKash sandbox did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@contextlib.contextmanager
def running_desk(data_dir: Path, enkash: str) -> Iterator[tuple[str, dict | None, Account | None]]:
    """The dashboard and one worker, with EnKash where ``enkash`` says. Yields the dashboard's
    URL, the sandbox's address and control token (``None`` for ``embedded``: the dashboard
    writes its run file when it first serves a page) and the account to sign in with (``None``:
    sandbox mode has no sign-in)."""
    if enkash == "embedded":
        with running_app(data_dir) as (url, _):
            yield url, None, None
        return
    token = secrets.token_hex(24)  # hex: never starts with "-" (an option to argparse)
    identity = SandboxIdentity()
    command = [
        sys.executable, "-m", "services.sandbox", "--host", "127.0.0.1", "--port", "0",
        "--state", str(data_dir / "enkash-sandbox.db"), "--control-token", token,
    ]  # fmt: skip
    log = data_dir / "sandbox.log"
    with _process(command, _env(data_dir), log) as sandbox:
        PIDS["sandbox"] = sandbox.pid
        info = {"url": _sandbox_url(sandbox, log), "control_token": token}
        account = ("bench", secrets.token_hex(18))
        secrets_file = data_dir / "secrets.toml"
        secrets_file.write_text(
            f"[points_desk.users.{account[0]}]\n"
            'name = "Bench Operator"\n'
            'roles = ["operator"]\n'
            f'password_hash = "{hash_password(account[1])}"\n'
        )
        secrets_file.chmod(0o600)
        enkash = live_env(SimpleNamespace(url=info["url"], identity=identity))
        env = {**enkash, "POINTS_DESK_SECRETS_FILE": str(secrets_file)}
        with running_app(data_dir, env) as (url, _):
            yield url, info, account


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


async def _sign_in(page, account: Account) -> None:
    """Live mode: sign in on the sign-in page (untimed, before the session's actions)."""
    await page.get_by_label("Username").fill(account[0])
    await page.get_by_label("Password", exact=True).fill(account[1])
    button = page.get_by_role("button", name="Sign in")
    await button.click()
    await button.wait_for(state="detached")
    await _idle(page)


def _sign_in_sync(page, account: Account) -> None:
    page.get_by_label("Username").fill(account[0])
    page.get_by_label("Password", exact=True).fill(account[1])
    button = page.get_by_role("button", name="Sign in")
    button.click()
    button.wait_for(state="detached")
    page.wait_for_selector(CONNECTED)
    page.wait_for_selector(IDLE)


async def one_session(
    browser, url: str, n: int, args, timings: dict[str, list[float]], account: Account | None
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(60_000)
    rng = random.Random(n)

    async def think() -> None:
        """A person's pause before the next action (``--think-seconds``; none by default)."""
        if args.think_seconds > 0:
            await asyncio.sleep(args.think_seconds * rng.uniform(0.5, 1.5))

    name, email = f"Bench {_letters(n)}", f"session{n}@bench.example"  # names hold no digits
    try:
        await page.goto(url)
        await _idle(page)
        if account is not None:
            await _sign_in(page, account)
        await _open(page, url, "Create account")
        await _fill(page, "First name", name)
        await _choose(page, "new_title", "Ms")
        await _choose(page, "new_gender", "Female")
        await _fill(page, "Email", email)
        await _fill(page, "Mobile", f"97{n:08d}")
        await _fill(page, "First credit (points)", "100")
        await _fill(page, "Reason", f"session {n} opening")
        await think()
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
            await think()
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
            await think()
            started = time.perf_counter()
            await field.press("Enter")
            await page.wait_for_timeout(50)  # the re-run starts
            await _idle(page)
            timings["history filter"].append(time.perf_counter() - started)

        await _open(page, url, "Bulk allocation")
        await think()
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


def machine_busy_seconds() -> float:
    """CPU seconds the machine's cores have been busy since boot (/proc/stat: user, nice,
    system, irq and softirq; idle, iowait and time taken by the hypervisor left out)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def cpu_report(
    busy: float,
    by_process: dict[str, float],
    wall: float,
    actions: int,
    sessions: int,
    think: float,
) -> list[str]:
    """Where the machine's CPU went while the sessions ran, and the response time law's floor."""
    cores = os.cpu_count() or 1
    rest = busy - sum(by_process.values())
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in by_process.items())
    per_action = busy / max(1, actions)
    floor = sessions * per_action / cores
    return [
        f"  CPU while the sessions ran: {busy:.0f} s of {cores * wall:.0f} s on {cores} cores "
        f"({busy / (cores * wall):.0%} busy): {parts}, the rest (browsers, Playwright, this "
        f"script) {rest:.0f} s",
        f"  {per_action:.2f} s of CPU per timed action; response time law: each session spends "
        f"at least {sessions} x {per_action:.2f} / {cores} = {floor:.1f} s per timed action "
        f"(its answer, the untimed steps around it and {think:.1f} s of pauses on average)",
    ]


def _letters(n: int) -> str:
    return "".join(chr(65 + int(d)) for d in f"{n:02d}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _processes() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds so far (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:  # it exited meanwhile
                continue
            name = text[text.index("(") + 1 : text.rindex(")")]
            found[int(entry.name)] = (name, stat_cpu_seconds(text))
    return found


class Sampler(threading.Thread):
    """Once a second: the sandbox's commit count (the batch's progress over time) and, while
    ``watching`` is set, every process's CPU (a process that ends between two samples loses its
    last second at most)."""

    def __init__(self, info: dict):
        super().__init__(daemon=True)
        self.info, self.points, self.stop = info, [], threading.Event()
        self.watching = threading.Event()
        self.first: dict[int, tuple[str, float]] = {}
        self.last: dict[int, tuple[str, float]] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            stats = _admin(self.info, "GET", "stats")
            self.points.append((time.perf_counter(), stats["commit_count"]))
            if self.watching.is_set():
                seen = _processes()
                for pid, (name, _) in seen.items():
                    self.first.setdefault(pid, (name, 0.0) if self.last else seen[pid])
                self.last.update(seen)
            self.stop.wait(1.0)

    def cpu_by_name(self, leave_out: set[int]) -> dict[str, float]:
        """CPU seconds each kind of process spent while watched (``leave_out``: pids not to
        count), most first."""
        spent: dict[str, float] = {}
        for pid, (name, cpu) in self.last.items():
            if pid not in leave_out:
                spent[name] = spent.get(name, 0.0) + cpu - self.first[pid][1]
        return dict(sorted(spent.items(), key=lambda item: -item[1]))

    def rate(self, start: float, end: float, finished_at: int) -> float | None:
        inside = [(t, c) for t, c in self.points if start <= t <= end and c < finished_at]
        if len(inside) < 2:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None


async def sessions_run(url: str, args, account: Account | None) -> dict[str, list[float]]:
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
                *(
                    one_session(browser, url, n, args, timings, account)
                    for n in range(args.sessions)
                ),
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


def start_batch(
    url: str, data_dir: Path, rows: int, args, info: dict | None, account: Account | None
) -> dict:
    """Upload and confirm the batch in its own browser; return the sandbox's address and control
    token (``info``, or with the embedded sandbox its run file) with ``commits_before``, the
    sandbox's commit count just before the batch was sent."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector(IDLE)
            if account is not None:
                _sign_in_sync(page, account)
            page.get_by_role("link", name="Bulk allocation").click()
            page.wait_for_selector(IDLE)
            if info is None:
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
            # The count before the batch's first row: once the panel is up the worker may have
            # sent many already, and a count taken then would put the batch's end past its last
            # commit (a finished batch's idle tail would count as its rate).
            info = {**info, "commits_before": _admin(info, "GET", "stats")["commit_count"]}
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
    parser.add_argument(
        "--think-seconds",
        type=float,
        default=0,
        help="a person's mean pause before each action (0: none, every click follows the last "
        "answer at once)",
    )
    parser.add_argument(
        "--enkash",
        choices=tuple(TOPOLOGIES),
        default="embedded",
        help="embedded: the sandbox in the dashboard's process (sandbox mode); process: the "
        "sandbox in its own process, the dashboard and the worker in live mode against it",
    )
    args = parser.parse_args(argv)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"topology (--enkash {args.enkash}): {TOPOLOGIES[args.enkash]}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_desk(Path(tmp), args.enkash) as (url, info, account),
    ):
        data_dir = Path(tmp)
        info = start_batch(url, data_dir, args.batch_rows, args, info, account)
        before_commits = info["commits_before"]
        finished_at = before_commits + args.batch_rows
        sampler = Sampler(info)
        sampler.start()
        try:
            alone_start = time.perf_counter()
            time.sleep(args.alone_seconds)
            rss_before = rss_mb(PIDS["dashboard"])
            cpu_before = {name: cpu_seconds(pid) for name, pid in PIDS.items()}
            busy_before = machine_busy_seconds()
            sampler.watching.set()
            sessions_start = time.perf_counter()
            timings = asyncio.run(sessions_run(url, args, account))
            sessions_end = time.perf_counter()
            busy = machine_busy_seconds() - busy_before
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in PIDS.items()}
            sampler.watching.clear()
            rss_after = rss_mb(PIDS["dashboard"])
        finally:
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
        f"{TOPOLOGIES[args.enkash]} (--enkash {args.enkash}):\n"
        f"{args.sessions} sessions x ({args.credits} credits, {args.filters} History filter "
        f"changes, a look at the running {args.batch_rows:,}-row batch); sandbox latency "
        f"{args.latency_ms:.0f} ms, {args.concurrency} at a time; "
        f"pauses {args.think_seconds:.1f} s on average before each action; "
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
    for line in cpu_report(
        busy,
        cpu,
        sessions_end - sessions_start,
        len(every),
        args.sessions,
        args.think_seconds,
    ):
        print(line)
    others = sampler.cpu_by_name(set(PIDS.values()))
    print(
        "    of the rest, by process name (sampled each second): "
        + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in list(others.items())[:5])
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
