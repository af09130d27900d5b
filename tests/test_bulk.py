"""Bulk runs against the sandbox over loopback HTTP: send, faults, pause, cancel, crash, resume."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook

from services import allocations, bulk
from services.config import load_settings, sandbox_enkash_config
from services.desk import Desk
from services.enkash import EnkashClient
from services.models import Status
from services.sandbox import Knobs, SandboxIdentity, start_sandbox
from services.store import DuplicateBatchFile, Ledger, StatusConflict

PROJECT = Path(__file__).resolve().parent.parent
HEADER = "kind,first_name,title,gender,email,mobile,card_id,amount,reason"


def creates(count: int, *, start: int = 0, amount: int = 100, reason: str = "Q3") -> list[str]:
    return [
        f"create,Emp,Ms,F,emp{n}@example.com,98{n:08d},,{amount + n},{reason}"
        for n in range(start, start + count)
    ]


def file_of(lines: list[str]) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def settings_for(data_dir: Path):
    return load_settings(secrets_file=None, points_desk_data_dir=data_dir)


# The sandbox commits before it answers, so a lookup right after a failed call is conclusive
# there; production waits allocations.ABSENCE_GRACE (30 s) before a "not found" proves anything.
QUICK_GRACE = timedelta(seconds=0.3)


@pytest.fixture
def desk(tmp_path: Path):
    the_desk = Desk(settings_for(tmp_path))
    the_desk.runner.absence_grace = QUICK_GRACE
    yield the_desk
    the_desk.close()


def queue(desk: Desk, lines: list[str], name: str = "run.csv", **settings):
    preview = bulk.preview_upload(desk.ledger, desk.client, desk.settings, name, file_of(lines))
    return preview, bulk.queue_batch(desk.ledger, preview, operator="tester", **settings)


def run(desk: Desk, lines: list[str], **settings):
    preview, record = queue(desk, lines, **settings)
    bulk.start_batch(desk.ledger, desk.settings, record.batch_id, actor="tester", wake=desk.pick_up)
    assert desk.runner.wait(record.batch_id, timeout=60)
    return preview, desk.ledger.get_batch(record.batch_id)


def wait_for(predicate, timeout: float = 20.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not reached in time")


def sandbox_balances(store) -> dict[str, Decimal]:
    return {card["enKashCardId"]: card["balance"] for card in store.cards()}


def assert_books_agree(ledger: Ledger, store) -> None:
    """Nothing paid twice, nothing lost: sandbox and ledger agree card by card."""
    assert ledger.card_totals() == sandbox_balances(store)
    succeeded = len(ledger.rows(statuses=[Status.SUCCEEDED]))
    assert store.commit_count() == succeeded


# --- a plain run ---------------------------------------------------------------------------------


def test_a_batch_sends_every_valid_row_and_reports_each(desk):
    lines = [*creates(30), "create,R2D2,Dr,X,bad,1,,10,", "debit,,,,,,EKCNOPE123,10,=cmd|x"]
    preview, record = run(desk, lines, concurrency=8)
    assert preview.totals.valid == 31 and preview.totals.rejected == 1
    assert record.state == "finished" and record.row_count == 31
    counts = desk.ledger.batch_counts(record.batch_id)
    assert counts[Status.SUCCEEDED] == 30 and counts[Status.FAILED] == 1
    assert counts[Status.QUEUED] == counts[Status.SENDING] == counts[Status.UNKNOWN] == 0
    assert_books_agree(desk.ledger, desk.sandbox.store)
    assert desk.sandbox.store.pool_balance() == Decimal("10000000.00") - sum(
        Decimal(100 + n) for n in range(30)
    )

    report = list(
        csv.DictReader(
            io.StringIO(bulk.report_csv(desk.ledger, record.batch_id).decode("utf-8-sig"))
        )
    )
    assert [int(line["row"]) for line in report] == [*range(2, 34)]  # every input row
    assert report[-2]["status"] == "REJECTED" and report[-2]["first_name"] == "R2D2"
    first = report[0]
    assert first["status"] == "SUCCEEDED" and first["amount"] == "100.00"
    assert first["card_id"].startswith("EKC") and first["transaction_id"].startswith("ECTR")
    assert first["balance_after"] == "100.00"
    assert first["reference"] == f"{record.batch_id}-000002"
    refused = report[-1]
    assert refused["status"] == "FAILED" and refused["message"] == "Card not found"
    assert refused["reason"] == "'=cmd|x"  # neutralised like an export

    sheet = load_workbook(io.BytesIO(bulk.report_xlsx(desk.ledger, record.batch_id))).active
    values = list(sheet.iter_rows(values_only=True))
    assert values[0][:3] == ("row", "kind", "first_name")
    assert values[1][6] == 100 and isinstance(values[1][6], int | float)  # amounts are numbers
    assert values[-1][7] == "'=cmd|x"


def test_the_same_file_cannot_be_queued_twice(desk):
    lines = creates(3)
    _, record = run(desk, lines)
    again = bulk.preview_upload(
        desk.ledger, desk.client, desk.settings, "renamed.csv", file_of(lines)
    )
    with pytest.raises(DuplicateBatchFile) as duplicate:
        bulk.queue_batch(desk.ledger, again, operator="tester")
    assert duplicate.value.existing.batch_id == record.batch_id
    assert desk.ledger.batch_by_digest(again.file.digest).batch_id == record.batch_id
    assert len(desk.ledger.rows()) == 3 and desk.sandbox.store.commit_count() == 3


def test_settings_out_of_range_are_refused(desk):
    preview = bulk.preview_upload(
        desk.ledger, desk.client, desk.settings, "x.csv", file_of(creates(1))
    )
    with pytest.raises(ValueError, match="between 1 and 32"):
        bulk.queue_batch(desk.ledger, preview, operator="t", concurrency=33)
    empty = bulk.preview_upload(
        desk.ledger, desk.client, desk.settings, "y.csv", file_of(["create,R2D2,,,,,,1,"])
    )
    with pytest.raises(ValueError, match="no valid rows"):
        bulk.queue_batch(desk.ledger, empty, operator="t")
    assert desk.ledger.list_batches() == []


# --- faults --------------------------------------------------------------------------------------


def test_injected_faults_are_settled_by_lookup_and_nothing_is_paid_twice(desk):
    knobs = desk.sandbox.knobs
    knobs.seed = 11
    knobs.error_after_commit_rate = 0.15  # committed, then 500: unknown until looked up
    knobs.malformed_rate = 0.1  # committed, unreadable reply
    knobs.hang_before_commit_rate = 0.1  # nothing committed, 504: absent, resent
    knobs.drop_hang_seconds = 0.05
    _, record = run(desk, creates(60), concurrency=8)
    ledger = desk.ledger
    counts = ledger.batch_counts(record.batch_id)
    assert counts[Status.QUEUED] == counts[Status.SENDING] == 0
    assert desk.sandbox.store.allocate_requests() > 60  # some rows were looked up and resent
    leftover = [r.reference for r in ledger.rows(statuses=[Status.UNKNOWN])]
    # A fault on a resend, too, may leave a few unknown: settle them on a quiet sandbox.
    knobs.error_after_commit_rate = knobs.malformed_rate = knobs.hang_before_commit_rate = 0
    time.sleep(QUICK_GRACE.total_seconds())
    with desk.client() as client:
        for reference in leftover:
            settled = allocations.settle(
                ledger, client, reference, actor="tester", absence_grace=QUICK_GRACE
            )
            if settled.outcome == "absent":
                allocations.resend(
                    ledger, client, reference, actor="tester", absence_grace=QUICK_GRACE
                )
    assert ledger.batch_counts(record.batch_id)[Status.SUCCEEDED] == 60
    assert_books_agree(ledger, desk.sandbox.store)
    settled = [
        row
        for row in ledger.rows(batch_id=record.batch_id)
        if any("settled by lookup" in e.detail for e in ledger.audit_trail(row.reference))
    ]
    assert settled, "error-after-commit rows must have been settled by lookup, not resent"


# --- odd replies and rows left in flight ---------------------------------------------------------


def test_a_batch_whose_replies_hold_an_odd_balance_succeeds_row_by_row(desk):
    desk.sandbox.knobs.reply_payload = {"otbBalance": "92,415.445"}
    _, record = run(desk, creates(12), concurrency=4)
    counts = desk.ledger.batch_counts(record.batch_id)
    assert counts[Status.SUCCEEDED] == 12 and counts[Status.SENDING] == 0
    assert record.state == "finished" and record.note == "finished"
    rows = desk.ledger.rows(batch_id=record.batch_id)
    assert {row.balance_after for row in rows} == {None}
    assert all(row.transaction_id for row in rows)
    assert_books_agree_by_commits(desk)


def assert_books_agree_by_commits(desk: Desk) -> None:
    succeeded = len(desk.ledger.rows(statuses=[Status.SUCCEEDED]))
    assert desk.sandbox.store.commit_count() == succeeded


def test_a_row_whose_outcome_could_not_be_written_is_settled_before_the_batch_finishes(
    desk, monkeypatch
):
    ledger = desk.ledger
    real, real_many = ledger.transition, ledger.transition_many
    lock = threading.Lock()
    victim: list[str] = []
    failures = [0]

    def fails(reference, to_status, detail, from_statuses):
        # The first confirmed row: every write of its outcome fails, so it stays SENDING (the
        # job's own recovery, "left in flight", and the lookup after it are let through).
        with lock:
            if not victim and to_status is Status.SUCCEEDED:
                victim.append(reference)
            fail = (
                victim == [reference]
                and Status.SENDING in from_statuses
                and not detail.startswith("left in flight")
            )
            if fail:
                failures[0] += 1
        return fail

    def failing(reference, to_status, **kwargs):
        if fails(reference, to_status, kwargs.get("detail", ""), kwargs["from_statuses"]):
            raise RuntimeError("database unavailable")
        return real(reference, to_status, **kwargs)

    def failing_many(moves):
        # A group holding the victim's outcome fails as a whole, as a database error would.
        if any([fails(m.reference, m.to_status, m.detail, m.from_statuses) for m in moves]):
            raise RuntimeError("database unavailable")
        return real_many(moves)

    monkeypatch.setattr(ledger, "transition", failing)
    monkeypatch.setattr(ledger, "transition_many", failing_many)
    _, record = run(desk, creates(6), concurrency=2)
    # SUCCEEDED in full, SUCCEEDED without the reply, UNKNOWN: each tried in its group, then alone
    assert failures[0] == 6
    counts = ledger.batch_counts(record.batch_id)
    assert record.state == "finished"
    assert counts[Status.SUCCEEDED] == 6 and counts[Status.SENDING] == 0
    trail = [event.detail for event in ledger.audit_trail(victim[0])]
    assert any(detail.startswith("left in flight") for detail in trail)
    assert trail[-1].startswith("settled by lookup")
    assert_books_agree(ledger, desk.sandbox.store)
    # Its allocate call is kept although no outcome carrying it could be written.
    assert any(kept.endpoint.endswith("/allocate") for kept in ledger.exchanges_for(victim[0]))


def test_a_batch_rows_exchange_commits_with_its_outcome_not_in_a_transaction_of_its_own(
    desk, monkeypatch
):
    alone: list[str] = []
    real = desk.ledger.record_exchange

    def record_exchange(**fields):
        alone.append(fields["reference"])
        return real(**fields)

    monkeypatch.setattr(desk.ledger, "record_exchange", record_exchange)
    _, record = run(desk, creates(6), concurrency=3)
    rows = desk.ledger.rows(batch_id=record.batch_id)
    assert {row.status for row in rows} == {Status.SUCCEEDED}
    assert alone == []  # every call went into the group commit with its row's outcome
    for row in rows:
        kept = desk.ledger.exchanges_for(row.reference)
        assert [k.endpoint.rsplit("/", 1)[-1] for k in kept] == ["allocate"]
        assert kept[0].http_status == 200 and row.reference in kept[0].request


def test_a_row_in_flight_elsewhere_keeps_the_batch_unfinished_until_it_is_settled(desk):
    desk.runner.in_flight_limit = timedelta(seconds=0.5)  # production: longer than any call
    _, record = queue(desk, creates(4))
    stranded = allocations.batch_reference(record.batch_id, 3)
    # Another worker claimed this row and then vanished: it is SENDING and nobody sends it.
    assert desk.ledger.claim(stranded, actor="elsewhere")
    bulk.start_batch(desk.ledger, desk.settings, record.batch_id, actor="tester", wake=desk.pick_up)
    assert desk.runner.wait(record.batch_id, timeout=60)
    finished = desk.ledger.get_batch(record.batch_id)
    assert finished.state == "finished"
    assert desk.ledger.batch_counts(record.batch_id)[Status.SUCCEEDED] == 4
    trail = [event.detail for event in desk.ledger.audit_trail(stranded)]
    assert any(detail.startswith("left in flight") for detail in trail)
    assert any(detail.startswith(allocations.PROVED_ABSENT) for detail in trail)
    assert_books_agree(desk.ledger, desk.sandbox.store)  # sent once, after proof of absence


def test_progress_never_says_finished_while_a_row_is_in_flight(desk):
    _, record = queue(desk, creates(2))
    reference = allocations.batch_reference(record.batch_id, 2)
    # As an older Points Desk left it: marked finished with a row still being sent.
    assert desk.ledger.claim(reference, actor="tester")
    desk.ledger.update_batch(record.batch_id, state="finished", note="finished")
    progress = bulk.progress(desk.ledger, record.batch_id)
    assert progress.batch.state == "finished"
    assert progress.state == "settling" and progress.active
    desk.ledger.cancel_queued(record.batch_id, actor="tester", code="X", message="x")
    desk.ledger.transition(
        reference, Status.UNKNOWN, actor="tester", from_statuses=(Status.SENDING,)
    )
    assert bulk.progress(desk.ledger, record.batch_id).state == "finished"


# --- pause, resume, cancel -----------------------------------------------------------------------


def test_pause_stops_claiming_and_resume_finishes_the_rest(desk):
    ledger = desk.ledger
    _, record = queue(desk, creates(40), concurrency=4, rate_limit=25)
    batch_id = record.batch_id
    bulk.start_batch(desk.ledger, desk.settings, batch_id, actor="tester", wake=desk.pick_up)
    wait_for(lambda: ledger.batch_counts(batch_id)[Status.SUCCEEDED] >= 15)  # > 0.5 s in
    running = bulk.progress(ledger, batch_id)
    assert running.worker_alive and running.rate and running.rate > 0
    assert running.eta_seconds is not None
    assert bulk.pause_batch(desk.ledger, batch_id, actor="tester", stop=desk.runner.stop)
    assert desk.runner.wait(batch_id, timeout=10)
    paused = ledger.batch_counts(batch_id)
    assert paused[Status.SENDING] == 0 and paused[Status.QUEUED] > 0
    assert ledger.get_batch(batch_id).state == "paused"
    time.sleep(0.3)
    assert ledger.batch_counts(batch_id) == paused  # nothing moves while paused
    assert desk.sandbox.store.commit_count() == paused[Status.SUCCEEDED]

    bulk.start_batch(desk.ledger, desk.settings, batch_id, actor="tester", wake=desk.pick_up)
    ledger.update_batch(batch_id, rate_limit=None)  # (the running job keeps its own cap)
    assert desk.runner.wait(batch_id, timeout=30)
    assert ledger.batch_counts(batch_id)[Status.SUCCEEDED] == 40
    assert ledger.get_batch(batch_id).state == "finished"
    assert_books_agree(ledger, desk.sandbox.store)


def test_a_sender_calls_its_next_row_while_the_last_outcome_is_still_being_committed(
    desk, monkeypatch
):
    """One sending thread, a ledger slow to commit outcomes (a slow disk): the next row's call
    does not wait for the last row's outcome, yet every call finds its row claimed first."""
    ledger, store = desk.ledger, desk.sandbox.store
    calls_when_committed: list[int] = []
    commit = ledger.transition_many

    def slow_outcomes(moves):
        if any(move.to_status is Status.SUCCEEDED for move in moves):
            time.sleep(0.3)
            calls_when_committed.append(store.allocate_requests())
        return commit(moves)

    monkeypatch.setattr(ledger, "transition_many", slow_outcomes)
    not_claimed: list[str] = []
    allocate = EnkashClient.allocate

    def claimed_first(client, allocation):
        row = ledger.get(allocation.reference)
        if row is None or row.status is not Status.SENDING:
            not_claimed.append(allocation.reference)
        return allocate(client, allocation)

    monkeypatch.setattr(EnkashClient, "allocate", claimed_first)
    _, batch = run(desk, creates(6), concurrency=1)

    assert batch.state == "finished"
    assert ledger.batch_counts(batch.batch_id)[Status.SUCCEEDED] == 6
    assert store.commit_count() == 6 and not_claimed == []
    # Row 1's outcome took 0.3 s to commit; row 2 was called meanwhile, not after it.
    assert calls_when_committed[0] >= 2


def test_a_row_claimed_ahead_goes_back_to_the_queue_when_the_batch_is_paused(desk):
    ledger = desk.ledger
    desk.sandbox.knobs.latency_ms = 100  # each thread's next row is claimed while one is out
    _, record = queue(desk, creates(30), concurrency=4)
    batch_id = record.batch_id
    bulk.start_batch(desk.ledger, desk.settings, batch_id, actor="tester", wake=desk.pick_up)
    wait_for(lambda: ledger.batch_counts(batch_id)[Status.SUCCEEDED] >= 4)
    assert bulk.pause_batch(desk.ledger, batch_id, actor="tester", stop=desk.runner.stop)
    assert desk.runner.wait(batch_id, timeout=10)

    paused = ledger.batch_counts(batch_id)
    assert paused[Status.SENDING] == 0 and paused[Status.QUEUED] > 0
    assert desk.sandbox.store.commit_count() == paused[Status.SUCCEEDED]
    queued = ledger.rows(statuses=[Status.QUEUED], batch_id=batch_id)
    assert {row.attempts for row in queued} == {0}  # the claim was taken back with the row
    released = [
        row.reference
        for row in queued
        if any("claimed, not sent" in event.detail for event in ledger.audit_trail(row.reference))
    ]
    assert 1 <= len(released) <= 4
    assert ledger.summary_differences() == []

    desk.sandbox.knobs.latency_ms = 0
    bulk.start_batch(desk.ledger, desk.settings, batch_id, actor="tester", wake=desk.pick_up)
    assert desk.runner.wait(batch_id, timeout=30)
    assert ledger.batch_counts(batch_id)[Status.SUCCEEDED] == 30
    assert_books_agree(ledger, desk.sandbox.store)


def test_cancel_fails_the_unsent_rows_visibly_and_in_flight_rows_finish(desk):
    ledger = desk.ledger
    _, record = queue(desk, creates(40), concurrency=4, rate_limit=25)
    batch_id = record.batch_id
    bulk.start_batch(desk.ledger, desk.settings, batch_id, actor="tester", wake=desk.pick_up)
    wait_for(lambda: ledger.batch_counts(batch_id)[Status.SUCCEEDED] >= 3)
    cancelled = bulk.cancel_batch(desk.ledger, batch_id, actor="tester", stop=desk.runner.stop)
    assert desk.runner.wait(batch_id, timeout=10)
    counts = ledger.batch_counts(batch_id)
    assert cancelled > 0 and counts[Status.QUEUED] == counts[Status.SENDING] == 0
    assert counts[Status.SUCCEEDED] + counts[Status.FAILED] == 40
    assert ledger.get_batch(batch_id).state == "cancelled"
    failed = ledger.rows(statuses=[Status.FAILED], batch_id=batch_id)
    # Besides the queue the cancel swept, each sending thread may hold its next row, claimed with
    # its last outcome and not sent: it is cancelled too, as soon as the thread sees the cancel.
    assert cancelled <= len(failed) <= cancelled + 4
    assert {row.enkash_code for row in failed} == {bulk.CANCELLED}
    report = bulk.report_csv(ledger, batch_id).decode("utf-8-sig")
    assert report.count("Cancelled before sending") == len(failed)
    assert desk.sandbox.store.commit_count() == counts[Status.SUCCEEDED]
    with pytest.raises(StatusConflict):
        bulk.start_batch(desk.ledger, desk.settings, batch_id, actor="tester", wake=desk.pick_up)


def test_enkash_unreachable_pauses_the_batch_instead_of_failing_every_row(tmp_path):
    unreachable = sandbox_enkash_config("http://127.0.0.1:9", SandboxIdentity())
    the_desk = Desk(settings_for(tmp_path), enkash_config=unreachable)
    try:
        lines = [f"credit,,,,,,EKC{n:07d},10,r" for n in range(30)]
        parsed = bulk.parse_file("down.csv", file_of(lines))
        preview = bulk.check_rows(parsed)
        record = bulk.queue_batch(the_desk.ledger, preview, operator="t", concurrency=1)
        bulk.start_batch(
            the_desk.ledger, the_desk.settings, record.batch_id, actor="t", wake=the_desk.pick_up
        )
        assert the_desk.runner.wait(record.batch_id, timeout=30)
        counts = the_desk.ledger.batch_counts(record.batch_id)
        batch = the_desk.ledger.get_batch(record.batch_id)
        assert batch.state == "paused" and "could not be reached" in batch.note
        assert counts[Status.FAILED] == bulk.NOT_SENT_PAUSE_AFTER
        assert counts[Status.QUEUED] == 30 - bulk.NOT_SENT_PAUSE_AFTER
    finally:
        the_desk.close()


def test_rate_limiter_spaces_permits():
    limiter = bulk.RateLimiter(100)
    stop = threading.Event()
    started = time.monotonic()
    for _ in range(21):
        assert limiter.wait(stop)
    assert time.monotonic() - started >= 0.19
    stop.set()
    assert not limiter.wait(stop)


# --- crash and resume ----------------------------------------------------------------------------

WORKER = """
import sys, time
from services import bulk
from services.config import load_settings, sandbox_enkash_config
from services.desk import Desk
from services.enkash import EnkashClient
from services.sandbox import SandboxIdentity

data_dir, url, batch_id = sys.argv[1:4]
desk = Desk(load_settings(secrets_file=None, points_desk_data_dir=data_dir),
            enkash_config=sandbox_enkash_config(url, SandboxIdentity()))
bulk.start_batch(desk.ledger, desk.settings, batch_id, actor="worker-process", wake=desk.pick_up)
print("started", flush=True)
time.sleep(120)
"""


def test_a_restart_after_the_worker_is_killed_mid_batch_resumes_by_itself_paying_no_row_twice(
    tmp_path,
):
    rows = 120
    sandbox = start_sandbox(knobs=Knobs(latency_ms=200))
    config = sandbox_enkash_config(sandbox.url, sandbox.identity)
    # A worker silent for 2 s is dead (production: 30 s).
    settings = load_settings(
        secrets_file=None, points_desk_data_dir=tmp_path, points_desk_worker_stale_seconds=2
    )
    try:
        first = Desk(settings, enkash_config=config)
        _, record = queue(first, creates(rows), concurrency=8)
        batch_id = record.batch_id
        first.close()

        script = tmp_path / "worker.py"
        script.write_text(WORKER)
        env = {**os.environ, "PYTHONPATH": str(PROJECT)}
        worker = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), sandbox.url, batch_id],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        observer = Ledger(settings_for(tmp_path).ledger_url)
        try:
            wait_for(
                lambda: (
                    (c := observer.batch_counts(batch_id))[Status.SUCCEEDED] >= 25
                    and c[Status.SENDING] > 0
                ),
                timeout=30,
                step=0.01,
            )
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            in_flight = [r.reference for r in observer.rows(statuses=[Status.SENDING])]
        finally:
            if worker.poll() is None:
                worker.kill()
            observer.dispose()
        sandbox.knobs.latency_ms = 0
        assert in_flight

        # A restart: nobody presses Resume. The batch is still "running", so the new process's
        # worker picks it up; the dead worker's calls become UNKNOWN once its heartbeat is stale.
        resumed = Desk(settings, enkash_config=config, absence_grace=QUICK_GRACE)
        try:
            ledger = resumed.ledger
            wait_for(lambda: ledger.get_batch(batch_id).state == "finished", timeout=60)
            assert resumed.runner.wait(batch_id, timeout=60)

            assert ledger.batch_counts(batch_id)[Status.SUCCEEDED] == rows  # none lost
            assert_books_agree(ledger, sandbox.store)  # none paid twice
            assert sandbox.store.commit_count() == rows
            for reference in in_flight:
                details = [e.detail for e in ledger.audit_trail(reference)]
                at = next(i for i, d in enumerate(details) if d.startswith("interrupted"))
                looked_up = [i for i, d in enumerate(details) if "lookup" in d and i > at]
                resent = [i for i, d in enumerate(details) if d.startswith("resend") and i > at]
                assert looked_up, details
                assert all(i > looked_up[0] for i in resent), details  # lookup before resend
        finally:
            resumed.close()
    finally:
        sandbox.stop()


# --- the approval gate ---------------------------------------------------------------------------


@pytest.fixture
def strict_desk(tmp_path: Path):
    """A desk where any batch above 1,000 points needs a second person."""
    settings = load_settings(
        secrets_file=None,
        points_desk_data_dir=tmp_path,
        points_desk_approval_batch_threshold=Decimal("1000"),
    )
    the_desk = Desk(settings)
    the_desk.runner.absence_grace = QUICK_GRACE
    yield the_desk
    the_desk.close()


def test_a_large_batch_starts_only_after_a_second_person_approves(strict_desk):
    from services import approvals

    desk = strict_desk
    _, record = queue(desk, creates(12))  # 12 rows of 100..111 points: 1,266 points
    assert bulk.batch_total(record) == Decimal("1266")
    with pytest.raises(bulk.AwaitingApproval):
        bulk.start_batch(
            desk.ledger, desk.settings, record.batch_id, actor="tester", wake=desk.pick_up
        )
    assert desk.ledger.get_batch(record.batch_id).state == "queued"

    request = approvals.request_batch(desk.ledger, record.batch_id, Decimal("1266"), "tester")
    assert bulk.progress(desk.ledger, record.batch_id).awaiting_approval
    with pytest.raises(bulk.AwaitingApproval):
        bulk.start_batch(
            desk.ledger, desk.settings, record.batch_id, actor="tester", wake=desk.pick_up
        )
    assert desk.sandbox.store.commit_count() == 0

    approvals.approve(desk.ledger, request.id, approver="vikram")
    bulk.start_batch(desk.ledger, desk.settings, record.batch_id, actor="vikram", wake=desk.pick_up)
    assert desk.runner.wait(record.batch_id, timeout=60)
    rows = desk.ledger.rows(batch_id=record.batch_id)
    assert {r.status for r in rows} == {Status.SUCCEEDED}
    assert {r.approved_by for r in rows} == {"vikram"}
    assert_books_agree(desk.ledger, desk.sandbox.store)


def test_a_small_batch_needs_no_approval_even_on_a_strict_desk(strict_desk):
    _, record = queue(strict_desk, creates(3))  # 303 points
    assert not bulk.needs_approval(strict_desk.ledger, strict_desk.settings, record)
    bulk.start_batch(
        strict_desk.ledger,
        strict_desk.settings,
        record.batch_id,
        actor="tester",
        wake=strict_desk.pick_up,
    )
    assert strict_desk.runner.wait(record.batch_id, timeout=60)
    assert strict_desk.sandbox.store.commit_count() == 3


def test_a_rejected_batch_is_cancelled_and_sends_nothing(strict_desk):
    from services import approvals

    desk = strict_desk
    _, record = queue(desk, creates(12))
    request = approvals.request_batch(desk.ledger, record.batch_id, Decimal("1266"), "tester")
    approvals.reject(desk.ledger, request.id, approver="vikram", comment="Wrong quarter")
    assert desk.ledger.get_batch(record.batch_id).state == "cancelled"
    rows = desk.ledger.rows(batch_id=record.batch_id)
    assert len(rows) == 12
    assert {(r.status, r.enkash_code) for r in rows} == {(Status.FAILED, approvals.REJECTED)}
    assert {approvals.status_word(r) for r in rows} == {"Rejected"}
    with pytest.raises(StatusConflict):
        bulk.start_batch(
            desk.ledger, desk.settings, record.batch_id, actor="tester", wake=desk.pick_up
        )
    assert desk.sandbox.store.commit_count() == 0


def test_cancelling_a_waiting_batch_withdraws_its_request(strict_desk):
    from services import approvals

    desk = strict_desk
    _, record = queue(desk, creates(12))
    approvals.request_batch(desk.ledger, record.batch_id, Decimal("1266"), "tester")
    assert (
        bulk.cancel_batch(desk.ledger, record.batch_id, actor="tester", stop=desk.runner.stop) == 12
    )
    assert approvals.pending(desk.ledger) == []
    withdrawn = approvals.for_subject(desk.ledger, "batch", record.batch_id)
    assert withdrawn.status == approvals.REJECTED_STATUS
    assert withdrawn.comment.startswith("withdrawn")
