"""Worker processes (``python -m services.worker``): real processes, the sandbox over loopback.

A worker killed mid-batch is replaced and the batch finishes with nobody pressing Resume; two
workers on PostgreSQL share one batch and survive one of them dying; a worker that starts never
takes a live worker's calls for interrupted. Every row is counted at the sandbox's store.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from services import bulk, worker
from services.config import load_settings
from services.desk import Desk
from services.models import Status
from services.store import Ledger, audit_events, transactions, workers
from tests.fault_support import assert_books_agree, create
from tests.pg_support import PG_URL, postgres_schema

PROJECT = Path(__file__).resolve().parent.parent
HEADER = "kind,first_name,title,gender,email,mobile,card_id,amount,reason"
STALE_SECONDS = 2  # a worker silent this long is dead (production: 30 s)


def creates(count: int) -> bytes:
    lines = [
        f"create,Emp,Ms,F,emp{n}@example.com,98{n:08d},,{100 + n % 50},Q3" for n in range(count)
    ]
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def wait_for(predicate, timeout: float = 60.0, step: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def dashboard(data_dir: Path, database_url: str | None = None) -> Desk:
    """The dashboard's Desk with worker processes doing the sending (it starts the sandbox)."""
    settings = load_settings(
        secrets_file=None,
        points_desk_data_dir=data_dir,
        database_url=database_url,
        points_desk_embedded_worker=False,
        points_desk_worker_stale_seconds=STALE_SECONDS,
        points_desk_settle_interval_seconds=0,
        points_desk_approval_batch_threshold=Decimal("100000000"),  # no approval step here
    )
    return Desk(settings)


def spawn_worker(
    data_dir: Path,
    name: str,
    database_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> subprocess.Popen:
    """``python -m services.worker`` on ``data_dir``'s ledger (or ``database_url``), with a short
    heartbeat and poll and ``extra`` settings, logging to ``<name>.log``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ENKASH_", "POINTS_DESK_")) and key != "DATABASE_URL"
    }
    env.update(
        PYTHONPATH=str(PROJECT),
        POINTS_DESK_DATA_DIR=str(data_dir),
        POINTS_DESK_SECRETS_FILE=str(data_dir / "no-secrets.toml"),
        POINTS_DESK_WORKER_STALE_SECONDS=str(STALE_SECONDS),
        POINTS_DESK_WORKER_POLL_SECONDS="0.2",
        POINTS_DESK_SETTLE_INTERVAL_SECONDS="0",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra or {})
    log = (data_dir / f"{name}.log").open("w")
    argv = ["-m", "services.worker", "--wait-seconds", "30", "--absence-grace-seconds", "0.3"]
    return subprocess.Popen(
        [sys.executable, *argv],
        cwd=PROJECT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(10)


def claimers(ledger: Ledger, batch_id: str) -> Counter:
    """Rows of the batch by the worker whose actor first claimed them for sending."""
    with ledger.engine.connect() as conn:
        found = conn.execute(
            sa.select(audit_events.c.reference, audit_events.c.actor)
            .join(transactions, transactions.c.reference == audit_events.c.reference)
            .where(
                transactions.c.batch_id == batch_id,
                audit_events.c.detail == "claimed for sending",
            )
            .order_by(audit_events.c.id)
        ).all()
    first: dict[str, str] = {}
    for reference, actor in found:
        first.setdefault(reference, actor)
    return Counter(first.values())


def assert_settled_by_lookup_first(ledger: Ledger, references: list[str]) -> None:
    for reference in references:
        details = [e.detail for e in ledger.audit_trail(reference)]
        at = next(i for i, d in enumerate(details) if d.startswith("interrupted"))
        looked_up = [i for i, d in enumerate(details) if "lookup" in d and i > at]
        resent = [i for i, d in enumerate(details) if d.startswith("resend") and i > at]
        assert looked_up, details
        assert all(i > looked_up[0] for i in resent), details  # lookup before any resend


# --- the run file -------------------------------------------------------------------------------


def test_the_dashboard_writes_a_private_run_file_the_worker_reads(tmp_path):
    desk = dashboard(tmp_path)
    try:
        path = worker.run_file_path(tmp_path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        info = worker.read_run_file(tmp_path)
        assert info["url"] == desk.sandbox.url and info["pid"] == os.getpid()
        config = worker.sandbox_config(info)
        assert config.base_url == desk.sandbox.url
        assert config.client_secret.get_secret_value() == desk.sandbox.identity.client_secret
        assert config.partner_id == desk.sandbox.identity.partner_id
    finally:
        desk.close()
    assert not path.exists()  # a stopped dashboard leaves no address behind


def test_a_run_file_naming_a_dead_sandbox_is_waited_out(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker.write_run_file(tmp_path, {"url": f"http://127.0.0.1:{port}", "pid": os.getpid()})
    assert worker.wait_for_run_file(tmp_path, threading.Event(), timeout=0.5) is None


# --- a live worker's calls are its own ----------------------------------------------------------


def test_a_starting_worker_leaves_a_live_workers_calls_alone_and_settles_a_dead_ones(tmp_path):
    settings = load_settings(
        secrets_file=None,
        points_desk_data_dir=tmp_path,
        points_desk_worker_stale_seconds=STALE_SECONDS,
        points_desk_settle_interval_seconds=0,
    )
    other = Ledger(settings.ledger_url)  # another process: one live worker, one dead one
    try:
        other.register_worker("live-worker", host="elsewhere", pid=1)
        live = create("100")
        other.record_intent(live, operator="asha")  # in flight at EnKash right now
        other.register_worker("dead-worker", host="elsewhere", pid=2)
        dead = create("100")
        other.record_intent(dead, operator="asha")
        with other.engine.begin() as conn:  # the dead worker stopped beating a minute ago
            conn.execute(
                workers.update()
                .where(workers.c.id == "dead-worker")
                .values(heartbeat_at=datetime.now(UTC) - timedelta(minutes=1))
            )
        assert other.claimed_by(live.reference) == "live-worker"

        desk = Desk(settings)  # a worker (embedded in a dashboard) starts
        try:
            assert desk.ledger.get(live.reference).status is Status.SENDING
            assert desk.ledger.get(dead.reference).status is not Status.SENDING
            trail = [e.detail for e in desk.ledger.audit_trail(dead.reference)]
            assert any(d.startswith("interrupted") for d in trail)
            desk.worker.recover()  # and its periodic pass leaves the live call alone too
            assert desk.ledger.get(live.reference).status is Status.SENDING
        finally:
            desk.close()
    finally:
        other.dispose()


# --- a worker process killed mid-batch ----------------------------------------------------------


def test_a_killed_worker_process_is_replaced_and_the_batch_finishes_without_resume(tmp_path):
    rows = 120
    desk = dashboard(tmp_path)
    processes: list[subprocess.Popen] = []
    try:
        desk.sandbox.knobs.latency_ms = 150
        preview = bulk.preview_upload(
            desk.ledger, desk.client, desk.settings, "kill.csv", creates(rows)
        )
        record = bulk.queue_batch(desk.ledger, preview, operator="tester", concurrency=8)
        batch_id = record.batch_id
        bulk.start_batch(
            desk.ledger, desk.settings, batch_id, actor="tester", wake=desk.pick_up
        )  # only sets it running
        assert desk.runner.wait(batch_id, timeout=0)  # the dashboard sends nothing itself
        ledger = desk.ledger

        first = spawn_worker(tmp_path, "first")
        processes.append(first)
        wait_for(
            lambda: (
                (c := ledger.batch_counts(batch_id))[Status.SUCCEEDED] >= 25
                and c[Status.SENDING] > 0
            ),
            what="the first worker sending",
            step=0.01,
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        in_flight = [r.reference for r in ledger.rows(statuses=[Status.SENDING])]
        assert in_flight
        desk.sandbox.knobs.latency_ms = 0

        second = spawn_worker(tmp_path, "second")  # nobody presses Resume
        processes.append(second)
        wait_for(lambda: ledger.get_batch(batch_id).state == "finished", what="the batch")

        assert ledger.batch_counts(batch_id)[Status.SUCCEEDED] == rows
        assert desk.sandbox.store.commit_count() == rows  # every row sent exactly once
        assert_books_agree(ledger, desk.sandbox.store)
        assert_settled_by_lookup_first(ledger, in_flight)
    finally:
        for process in processes:
            stop(process)
        desk.close()


# --- two workers on PostgreSQL --------------------------------------------------------------------


def test_two_workers_on_postgresql_share_a_batch_and_one_dying_does_not_stop_it(tmp_path):
    rows = 2000
    with postgres_schema() as schema:
        url = str(sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}))
        Ledger(PG_URL, schema=schema).dispose()  # creates the schema and its tables
        desk = dashboard(tmp_path, url)
        processes: list[subprocess.Popen] = []
        try:
            desk.sandbox.knobs.latency_ms = 5
            preview = bulk.preview_upload(
                desk.ledger, desk.client, desk.settings, "team.csv", creates(rows)
            )
            record = bulk.queue_batch(desk.ledger, preview, operator="tester", concurrency=8)
            batch_id = record.batch_id
            ledger = desk.ledger
            processes = [spawn_worker(tmp_path, f"w{n}", url) for n in range(2)]
            # Both registered (the dashboard is a third, sending nothing) before the batch starts.
            wait_for(lambda: len(ledger.live_workers()) == 3, what="two workers")
            bulk.start_batch(
                desk.ledger, desk.settings, batch_id, actor="tester", wake=desk.pick_up
            )

            wait_for(
                lambda: ledger.batch_counts(batch_id)[Status.SUCCEEDED] >= rows // 3,
                what="a third of the batch",
                step=0.01,
            )
            sharing = claimers(ledger, batch_id)
            assert len(sharing) == 2, sharing  # both workers are sending the one batch
            victim = processes[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)

            wait_for(lambda: ledger.get_batch(batch_id).state == "finished", what="the batch")
            assert ledger.batch_counts(batch_id)[Status.SUCCEEDED] == rows
            commits = Counter(t["pgReferenceNumber"] for t in desk.sandbox.store.transactions())
            assert len(commits) == rows and set(commits.values()) == {1}  # none sent twice
            assert_books_agree(ledger, desk.sandbox.store)
        finally:
            for process in processes:
                stop(process)
            desk.close()


# The schema step that added worker ownership: tests/test_store_migrations.py.
