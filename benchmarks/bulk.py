"""Bulk allocation throughput: the bulk runner against a plain sequential ``requests`` loop.

    .venv/bin/python -m benchmarks.bulk [--rows 1000] [--baseline-rows 200] [--latency-ms 50]
                                        [--concurrency 16] [--token-lifetime 300]
    .venv/bin/python -m benchmarks.bulk --real-path [--runs 1] [--panel open|closed|both] ...

``--real-path`` runs benchmarks/bulk_real.py instead: the dashboard and a worker as processes, a
browser uploading the file and watching the live progress; measured at the sandbox's side.

Both run against one standalone sandbox (``python -m services.sandbox``, its own process, so the
sandbox and the runner do not share a GIL, as EnKash and Points Desk would not) with the added
latency. The baseline is what a manager would write: sign in once, then POST allocate per row
with a ``requests.Session``. Its rate is measured on ``--baseline-rows`` rows (a sequential loop's
rate does not depend on how many rows follow). The runner sends ``--rows`` rows through the whole
product path: parse the CSV, check it, queue it in a SQLite ledger, send with the BatchRunner.
Prints rows/second for both, the ratio, the fraction of the ideal ``concurrency / latency`` rate,
and checks every row is in the ledger and committed exactly once at the sandbox.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from services import approvals, bulk
from services.config import load_settings, sandbox_enkash_config
from services.desk import Desk
from services.models import Status
from services.sandbox import SandboxIdentity

PROJECT = Path(__file__).resolve().parent.parent
ALLOCATE = "/api/v0/partner/enKashCard/points/allocate"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The standalone sandbox's admin endpoints need this run's control token (X-Sandbox-Token).
CONTROL_TOKEN = secrets.token_urlsafe(32)


def start_sandbox_process(
    latency_ms: float, token_lifetime: float = 300
) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.sandbox",
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
            "--control-token",
            CONTROL_TOKEN,
            "--token-lifetime",
            str(token_lifetime),
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/_sandbox/health", timeout=1).ok:
                return process, url
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the sandbox did not start")


def sequential_baseline(url: str, rows: int) -> float:
    """Sign in once, POST allocate per row, one after the other: rows per second."""
    ids = SandboxIdentity()
    session = requests.Session()
    token = session.post(
        f"{url}/oauth/token",
        data={
            "username": ids.username,
            "password": ids.password,
            "grant_type": "password",
            "clientId": ids.client_id,
        },
        auth=(ids.client_id, ids.client_secret),
        timeout=10,
    ).json()["access_token"]
    headers = {"partnerId": ids.partner_id, "Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    for n in range(rows):
        reply = session.post(
            url + ALLOCATE,
            json={
                "companyId": ids.company_id,
                "cardAccountId": ids.card_account_id,
                "transactionCode": "ALLOCATION",
                "transactionType": "CR",
                "type": "ALLOCATE_POINT",
                "email": f"base{n}@example.com",
                "mobile": f"97{n:08d}",
                "title": "Mr",
                "firstName": "Base",
                "gender": "M",
                "loadAmount": 100,
                "uniqueReferenceNumber": f"BASE{n:08d}",
            },
            headers=headers,
            timeout=10,
        )
        assert reply.ok and reply.json().get("code") == 0, reply.text
    return rows / (time.perf_counter() - started)


def bulk_file(rows: int) -> bytes:
    lines = ["kind,first_name,title,gender,email,mobile,card_id,amount,reason"]
    lines += [f"create,Emp,Ms,F,bulk{n}@example.com,98{n:08d},,100,benchmark" for n in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def runner_rate(url: str, rows: int, concurrency: int) -> tuple[float, dict, float]:
    """The product path; returns (rows/second of sending, ledger counts, seconds to queue)."""
    with tempfile.TemporaryDirectory() as data_dir:
        settings = load_settings(secrets_file=None, points_desk_data_dir=data_dir)
        desk = Desk(settings, enkash_config=sandbox_enkash_config(url, SandboxIdentity()))
        try:
            started = time.perf_counter()
            preview = bulk.preview_upload(
                desk.ledger, desk.client, desk.settings, "benchmark.csv", bulk_file(rows)
            )
            assert preview.totals.valid == rows, preview.rejected[:3]
            record = bulk.queue_batch(
                desk.ledger, preview, operator="benchmark", concurrency=concurrency
            )
            queued = time.perf_counter() - started
            if bulk.needs_approval(
                desk.ledger, desk.settings, record
            ):  # a large file waits for a second person
                request = approvals.request_batch(
                    desk.ledger, record.batch_id, bulk.batch_total(record), "benchmark"
                )
                approvals.approve(desk.ledger, request.id, approver="benchmark-approver")
            started = time.perf_counter()
            bulk.start_batch(
                desk.ledger, desk.settings, record.batch_id, actor="benchmark", wake=desk.pick_up
            )
            assert desk.runner.wait(record.batch_id, timeout=600)
            elapsed = time.perf_counter() - started
            counts = desk.ledger.batch_counts(record.batch_id)
            cards = desk.ledger.card_totals()
        finally:
            desk.close()
    return rows / elapsed, {"counts": counts, "cards": len(cards)}, queued


def main() -> int:
    if "--real-path" in sys.argv[1:]:
        from benchmarks import bulk_real

        parser = argparse.ArgumentParser(description=bulk_real.__doc__.split("\n")[0])
        parser.add_argument("--real-path", action="store_true")
        bulk_real.add_arguments(parser)
        return bulk_real.run(parser.parse_args())
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--baseline-rows", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--token-lifetime", type=float, default=300, help="seconds each sandbox token lives"
    )
    args = parser.parse_args()

    process, url = start_sandbox_process(args.latency_ms, args.token_lifetime)
    try:
        baseline = sequential_baseline(url, args.baseline_rows)
        rate, facts, queued = runner_rate(url, args.rows, args.concurrency)
        stats = requests.get(
            f"{url}/_sandbox/stats", headers={"X-Sandbox-Token": CONTROL_TOKEN}, timeout=10
        ).json()
    finally:
        process.terminate()
        process.wait(10)

    ideal = args.concurrency / (args.latency_ms / 1000)
    counts = facts["counts"]
    succeeded = counts[Status.SUCCEEDED]
    print(
        f"sandbox latency {args.latency_ms:.0f} ms, {args.rows} rows, "
        f"concurrency {args.concurrency}"
    )
    print(f"sequential requests loop : {baseline:8.1f} rows/s ({args.baseline_rows} rows)")
    print(
        f"bulk runner              : {rate:8.1f} rows/s ({args.rows} rows; parse, check and "
        f"queue took {queued:.2f} s before that)"
    )
    print(f"ratio runner / sequential: {rate / baseline:8.1f}x  (target >= 10x)")
    print(f"fraction of ideal {ideal:.0f}/s : {rate / ideal:8.1%}  (target >= 75%)")
    print(
        f"ledger: {succeeded} succeeded, {counts[Status.FAILED]} failed, "
        f"{counts[Status.UNKNOWN]} unknown, {counts[Status.QUEUED]} queued; "
        f"{facts['cards']} cards"
    )
    expected_commits = args.rows + args.baseline_rows
    print(
        f"sandbox: {stats['commit_count']} commits (expected {expected_commits}), "
        f"{stats['allocate_requests']} allocate requests"
    )
    tokens = stats["token_requests"]
    print(
        f"sign-ins: {tokens['password'] - 1} password (+1 by the sequential loop), "
        f"{tokens['refresh_token']} refresh, "
        f"{sum(n for kind, n in tokens.items() if kind.endswith('_refused'))} refused; "
        f"tokens lived {args.token_lifetime:g} s"
    )
    ok = succeeded == args.rows and stats["commit_count"] == expected_commits
    print("every row is in the ledger, committed once" if ok else "MISMATCH: see above")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
