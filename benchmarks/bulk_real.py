"""Bulk throughput through the real path: dashboard and worker processes, a browser on the page.

    .venv/bin/python -m benchmarks.bulk_real [--rows 1000] [--latency-ms 50]
        [--concurrency 16] [--baseline-rows 200] [--runs 1] [--panel open|closed|both]

(also ``python -m benchmarks.bulk --real-path ...``). Each run starts, with a fresh data directory:

- the dashboard, ``streamlit run app.py`` (headless), with its embedded worker off; in sandbox
  mode it hosts the EnKash sandbox and writes the run file (``sandbox-run.json``) with the
  sandbox's address and control token;
- one worker process, ``python -m services.worker``, which reads that run file and sends;
- Debian's chromium (Playwright), which uploads a ``--rows`` file of ``create`` rows on the Bulk
  page and confirms it in the dialog.

The sandbox's latency is set to ``--latency-ms`` (its ``/_sandbox/knobs`` endpoint) once the
preview is on the page, so only sending is slowed. With ``--panel open`` the page stays on the
batch's live progress (the panel polls the ledger every second, as a manager's tab would); with
``closed`` the browser closes as soon as the batch is confirmed. The rate is measured at EnKash's
side: allocate calls divided by the time from the first call's arrival to the last one's reply
(the sandbox's ``allocate_window``). The baseline is a sequential ``requests`` loop (sign in
once, POST allocate per row) against the same sandbox at the same latency, in the same run.
Prints rows/s, the ratio to the loop, the fraction of the ideal ``concurrency / latency`` rate,
and checks every row was committed once at the sandbox.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from benchmarks.bulk import bulk_file, sequential_baseline
from services.worker import read_run_file

PROJECT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("POINTS_DESK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ENKASH_", "POINTS_DESK_")) and key != "DATABASE_URL"
    }
    env.update(
        POINTS_DESK_DATA_DIR=str(data_dir),
        POINTS_DESK_SECRETS_FILE=str(data_dir / "no-secrets.toml"),
        POINTS_DESK_EMBEDDED_WORKER="false",
        # A benchmark file of new cards is not a batch that needs a second person.
        POINTS_DESK_APPROVAL_BATCH_THRESHOLD="1000000000",
    )
    return env


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        process = subprocess.Popen(args, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(
    data_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, Path]]:
    """The dashboard and one worker process; yields (dashboard URL, data directory).
    ``extra_env`` is added to both processes' environment (``_env``), e.g. a live EnKash."""
    env = {**_env(data_dir), **(extra_env or {})}
    port = _free_port()
    dashboard = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with _process(dashboard, env, data_dir / "dashboard.log") as app:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                    break
            if app.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((data_dir / "dashboard.log").read_text()[-3000:])
            time.sleep(0.2)
        worker = [sys.executable, "-m", "services.worker"]
        with _process(worker, env, data_dir / "worker.log") as sender:
            PIDS.update(dashboard=app.pid, worker=sender.pid)
            yield url, data_dir


PIDS: dict[str, int] = {}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


def stat_cpu_seconds(stat: str) -> float:
    """User + system CPU seconds from the text of a ``/proc/<pid>/stat``."""
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def profiled(out: Path | None, label: str) -> Iterator[None]:
    """With ``out``, py-spy records where the dashboard and the worker hold the GIL while the
    batch runs, as collapsed stacks: ``<out>/<label>-<process>.txt``."""
    if out is None:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    spies = [
        subprocess.Popen(
            [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(pid),
                "--gil",
                "--rate",
                "200",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(out / f"{label}-{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in PIDS.items()
    ]
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(2)  # SIGINT: write the flame graph
        for spy in spies:
            spy.wait(30)


def _sandbox(data_dir: Path, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_run_file(data_dir)
        if info and info.get("control_token"):
            return info
        time.sleep(0.2)
    raise RuntimeError("the dashboard's sandbox did not start (no run file)")


def _admin(info: dict, method: str, path: str, body: dict | None = None) -> dict:
    reply = requests.request(
        method,
        f"{info['url']}/_sandbox/{path}",
        headers={"X-Sandbox-Token": info["control_token"]},
        json=body,
        timeout=30,
    )
    reply.raise_for_status()
    return reply.json()


def _wait_idle(page) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']")
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")


def one_run(
    rows: int,
    latency_ms: float,
    concurrency: int,
    panel_open: bool,
    baseline_rows: int,
    profile: Path | None = None,
) -> dict:
    """One batch through the browser, then the sequential loop: the sandbox's figures."""
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory() as tmp,
        running_app(Path(tmp)) as (url, data_dir),
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(url)
            _wait_idle(page)
            page.get_by_role("link", name="Bulk allocation").click()
            _wait_idle(page)
            info = _sandbox(data_dir)
            csv = Path(tmp) / "benchmark.csv"
            csv.write_bytes(bulk_file(rows))
            page.locator("input[type='file']").set_input_files(str(csv))
            send = page.get_by_role("button", name=f"Send {rows:,} rows…")
            send.wait_for()
            speed = page.locator(".st-key-bulk_concurrency input")
            if not speed.is_visible():
                page.get_by_text("Advanced", exact=True).click()  # the speed settings' expander
            speed.fill(str(concurrency))
            speed.press("Tab")
            _wait_idle(page)
            # Only sending is slowed (the preview's searches ran at full speed), and the window
            # starts with the batch's first call.
            _admin(info, "POST", "knobs", {"latency_ms": latency_ms})
            before = _admin(info, "GET", "stats")
            cpu_before = {name: cpu_seconds(pid) for name, pid in PIDS.items()}
            with profiled(profile, "open" if panel_open else "closed"):
                send.click()
                page.get_by_role("dialog").get_by_role("button", name="Send now").click()
                page.locator(".st-key-bulk_batch_panel").wait_for()
                if not panel_open:
                    page.close()
                deadline = time.monotonic() + 900
                while True:
                    stats = _admin(info, "GET", "stats")
                    if stats["commit_count"] - before["commit_count"] >= rows:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the batch did not finish: {stats}")
                    time.sleep(0.5)
            time.sleep(0.5)  # the last replies land
            stats = _admin(info, "GET", "stats")
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in PIDS.items()}
            if panel_open:  # the page shows the finished batch
                page.get_by_text(f"{rows:,} of {rows:,} rows done").wait_for()
        except Exception:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(PROJECT / "test-artifacts" / "bulk-real-failed.png"))
            raise
        finally:
            browser.close()
        first, last = stats["allocate_window"]
        calls = stats["allocate_requests"] - before["allocate_requests"]
        baseline = sequential_baseline(info["url"], baseline_rows)
        after = _admin(info, "GET", "stats")
        return {
            "rate": calls / (last - first),
            "calls": calls,
            "seconds": last - first,
            "baseline": baseline,
            "commits": stats["commit_count"] - before["commit_count"],
            "commits_with_loop": after["commit_count"] - before["commit_count"],
            "cpu_ms_per_row": {name: 1000 * used / rows for name, used in cpu.items()},
            "password_sign_ins": stats["token_requests"]["password"]
            - before["token_requests"]["password"],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--baseline-rows", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=1, help="runs of each panel variant")
    parser.add_argument("--panel", choices=("open", "closed", "both"), default="both")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record py-spy profiles of both processes into this directory",
    )


def run(args: argparse.Namespace) -> int:
    ideal = args.concurrency / (args.latency_ms / 1000)
    variants = {"open": [True], "closed": [False], "both": [True, False]}[args.panel]
    load = os.getloadavg()
    print(
        f"real path: dashboard + 1 worker process + chromium; sandbox latency "
        f"{args.latency_ms:.0f} ms, {args.rows} rows, {args.concurrency} at a time; "
        f"ideal {ideal:.0f} rows/s; load average {load[0]:.2f} on {os.cpu_count()} CPUs"
    )
    ok = True
    for _ in range(args.runs):
        for panel_open in variants:
            r = one_run(
                args.rows,
                args.latency_ms,
                args.concurrency,
                panel_open,
                args.baseline_rows,
                args.profile,
            )
            label = "progress panel open  " if panel_open else "progress panel closed"
            print(
                f"{label}: {r['rate']:6.1f} rows/s at the sandbox ({r['calls']} calls in "
                f"{r['seconds']:.2f} s); sequential loop {r['baseline']:5.1f} rows/s; "
                f"ratio {r['rate'] / r['baseline']:5.1f}x (target >= 10x); "
                f"{r['rate'] / ideal:6.1%} of ideal (target >= 90%); "
                f"{r['password_sign_ins']} password sign-in(s)"
            )
            print(
                "  CPU per row while sending: "
                + ", ".join(f"{name} {ms:.2f} ms" for name, ms in r["cpu_ms_per_row"].items())
                + " (the dashboard's includes the sandbox, which runs in it)"
            )
            if r["commits"] != args.rows or r["calls"] != args.rows:
                ok = False
                print(
                    f"  MISMATCH: {r['commits']} commits, {r['calls']} allocate calls for "
                    f"{args.rows} rows"
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("every row committed once at the sandbox" if ok else "MISMATCH: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
