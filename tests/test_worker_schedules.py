"""A monthly schedule sent by worker processes: real processes, the sandbox over loopback.

Nobody ran a worker while three monthly occurrences fell due; the first worker to start catches
each up once, is SIGKILLed mid-run, and a second worker finishes the runs without sending any row
twice (counted at the sandbox's store) and without making any occurrence a second time.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path

from services import allocations, schedules
from services.models import Kind, Status
from services.recurrence import IST, Repeat, Rule
from tests.fault_support import assert_books_agree, create
from tests.test_worker import (
    assert_settled_by_lookup_first,
    dashboard,
    stop,
    wait_for,
)
from tests.test_worker import spawn_worker as spawn_any_worker

PROJECT = Path(__file__).resolve().parent.parent
CARDS = 10
ROWS_PER_CARD = 4  # 40 rows an occurrence


def spawn_worker(data_dir: Path, name: str) -> subprocess.Popen:
    """``python -m services.worker`` with a catch-up window long enough for months of outage."""
    extra = {"POINTS_DESK_SCHEDULE_CATCH_UP_HOURS": str(24 * 100)}
    return spawn_any_worker(data_dir, name, extra=extra)


def two_months_back(today: date) -> date:
    year, month = today.year, today.month - 2
    if month < 1:
        year, month = year - 1, month + 12
    return date(year, month, 1)


def test_a_killed_worker_skips_no_occurrence_of_a_monthly_schedule_and_sends_nothing_twice(
    tmp_path,
):
    desk = dashboard(tmp_path)
    processes: list[subprocess.Popen] = []
    try:
        ledger = desk.ledger
        ledger.create_programme(code="BONUS", name="Bonus", budget=None, actor="finance")
        for n in range(CARDS):
            with desk.client() as client:
                allocations.submit(ledger, client, create("10", n), operator="setup")
        card_ids = sorted(r.card_id for r in ledger.rows(statuses=[Status.SUCCEEDED]))
        opened = desk.sandbox.store.commit_count()

        # Monthly on today's IST day at 00:00, from two months back: three occurrences, all in
        # the past, none seen by a worker (none was running).
        today = datetime.now(IST).date()
        start = two_months_back(today)
        rule = Rule(Repeat.MONTHLY, start, clock_time(0, 0), day_of_month=today.day, count=3)
        rows = [
            {"kind": Kind.CREDIT.value, "card_id": card, "amount_cents": 1000 + n, "reason": "m"}
            for n in range(ROWS_PER_CARD)
            for card in card_ids
        ]
        # Set up and approved before the first of them (approval never makes earlier runs).
        set_up = datetime.combine(start, clock_time(0, 0), IST) - timedelta(days=1)
        record = schedules.create(
            ledger, label="Monthly", programme="BONUS", rule=rule, rows=rows, maker="asha",
            now=set_up,
        )  # fmt: skip
        schedules.approve(ledger, record.id, approver="vikram", now=set_up)
        due = list(rule.occurrences())
        assert len(due) == 3 and due[-1] <= datetime.now(UTC)

        desk.sandbox.knobs.latency_ms = 150
        first = spawn_worker(tmp_path, "first")
        processes.append(first)

        def sending() -> bool:
            counts = Counter()
            for run in ledger.schedule_runs(record.id):
                counts.update(ledger.batch_counts(run.batch_id))
            return counts[Status.SUCCEEDED] >= 25 and counts[Status.SENDING] > 0

        wait_for(sending, what="the first worker sending the schedule's runs", step=0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        in_flight = [r.reference for r in ledger.rows(statuses=[Status.SENDING])]
        assert in_flight  # killed mid-run
        desk.sandbox.knobs.latency_ms = 0

        second = spawn_worker(tmp_path, "second")  # nobody presses anything
        processes.append(second)

        def finished() -> bool:
            runs = ledger.schedule_runs(record.id)
            return len(runs) == 3 and all(
                ledger.get_batch(run.batch_id).state == "finished" for run in runs
            )

        wait_for(finished, what="every run finished")
        time.sleep(1.0)  # a few more polls of the live worker: no occurrence is made again

        runs = ledger.schedule_runs(record.id)
        assert sorted(run.due_at for run in runs) == due  # skipped nothing
        assert all(run.state == "sent" for run in runs)
        assert len(ledger.list_batches(limit=100)) == 3
        total_rows = 3 * CARDS * ROWS_PER_CARD
        for run in runs:
            assert ledger.batch_counts(run.batch_id)[Status.SUCCEEDED] == CARDS * ROWS_PER_CARD
        sent = Counter(t["pgReferenceNumber"] for t in desk.sandbox.store.transactions())
        assert max(sent.values()) == 1  # no reference twice
        assert desk.sandbox.store.commit_count() - opened == total_rows  # every row once
        assert ledger.get_schedule(record.id).state == "finished"
        assert (
            ledger.programme("BONUS").credited
            == sum(Decimal(r["amount_cents"]) / 100 for r in rows) * 3
        )
        assert_books_agree(ledger, desk.sandbox.store)
        assert_settled_by_lookup_first(ledger, in_flight)  # looked up before any resend
    finally:
        for process in processes:
            stop(process)
        desk.close()
