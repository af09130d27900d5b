"""Scheduled and recurring allocations, on a controlled clock (time-machine) and the sandbox.

The worker's own pass (``Worker.tick``) turns due occurrences into batches and sends them; what
was sent is counted at the sandbox's store, reference by reference.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine

from services import allocations, schedules
from services.approvals import SelfApproval
from services.config import load_settings
from services.desk import Desk
from services.errors import Conflict, InvalidInput
from services.models import Kind, Status
from services.recurrence import IST, Repeat, Rule
from tests.fault_support import create

QUICK_GRACE = timedelta(seconds=0.3)


def ist(*args: int) -> datetime:
    return datetime(*args, tzinfo=IST)


# --- the rule ------------------------------------------------------------------------------------


def test_monthly_on_day_31_falls_on_each_months_last_day_at_the_ist_time():
    rule = Rule(Repeat.MONTHLY, date(2027, 1, 1), time(9, 0), day_of_month=31, count=4)
    assert [d.astimezone(IST) for d in rule.occurrences()] == [
        ist(2027, 1, 31, 9),
        ist(2027, 2, 28, 9),
        ist(2027, 3, 31, 9),
        ist(2027, 4, 30, 9),
    ]
    first = next(rule.occurrences())
    assert first.tzinfo is UTC and (first.hour, first.minute) == (3, 30)  # stored as UTC
    leap = Rule(Repeat.MONTHLY, date(2028, 2, 1), time(9, 0), day_of_month=30, count=1)
    assert [d.astimezone(IST).date() for d in leap.occurrences()] == [date(2028, 2, 29)]


def test_weekly_and_one_off_rules_stop_at_their_end():
    weekly = Rule(
        Repeat.WEEKLY, date(2027, 1, 1), time(18, 30), weekday=0, end_on=date(2027, 1, 18)
    )
    assert [d.astimezone(IST).date() for d in weekly.occurrences()] == [
        date(2027, 1, 4),
        date(2027, 1, 11),
        date(2027, 1, 18),
    ]
    once = Rule(Repeat.ONCE, date(2027, 1, 5), time(0, 15))
    assert list(once.occurrences()) == [ist(2027, 1, 5, 0, 15).astimezone(UTC)]
    assert once.first_after(ist(2027, 1, 5, 0, 15)) is None
    assert Rule(Repeat.MONTHLY, date(2027, 1, 1), time(9), day_of_month=32).problems()


# --- the service, with a worker's pass on a controlled clock -------------------------------------


@pytest.fixture
def desk(tmp_path: Path):
    settings = load_settings(
        secrets_file=None,
        points_desk_data_dir=tmp_path,
        points_desk_embedded_worker=False,  # the test calls the worker's pass itself
        points_desk_settle_interval_seconds=0,
    )
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True):
        the_desk = Desk(settings)
        the_desk.runner.absence_grace = QUICK_GRACE
        assert the_desk.worker is not None
        the_desk.worker.sends = True  # its pass picks batches up; no loop thread runs
        the_desk.ledger.create_programme(
            code="BONUS", name="Bonus", budget=Decimal("100000"), actor="finance"
        )
        yield the_desk
        the_desk.close()


def cards(desk: Desk, count: int) -> list[str]:
    made = []
    for n in range(count):
        with desk.client() as client:
            allocations.submit(desk.ledger, client, create("10", n), operator="setup")
    for row in desk.ledger.rows(statuses=[Status.SUCCEEDED]):
        made.append(row.card_id)
    return sorted(made)


def rows(card_ids: list[str], amount: str = "100", kind: Kind = Kind.CREDIT) -> list[dict]:
    return [
        {
            "kind": kind.value,
            "card_id": c,
            "amount_cents": int(Decimal(amount) * 100),
            "reason": "pay",
        }
        for c in card_ids
    ]


def tick(desk: Desk) -> list[str]:
    """One worker pass, then wait for every running batch it started."""
    assert desk.worker is not None
    desk.worker._picked.clear()
    desk.worker.tick()
    started = [b.batch_id for b in desk.ledger.list_batches(limit=100)]
    for batch_id in started:
        assert desk.runner.wait(batch_id, timeout=60)
    return started


def sent_references(desk: Desk) -> Counter:
    """Allocate transactions committed at the sandbox, by reference (1 each: nothing twice)."""
    found = desk.sandbox.store.transactions()
    return Counter(t["pgReferenceNumber"] for t in found)


def monthly(desk: Desk, card_ids: list[str], **changes) -> schedules.ScheduleRecord:
    rule = Rule(
        Repeat.MONTHLY,
        date(2027, 1, 10),
        time(9, 0),
        day_of_month=31,
        count=changes.pop("count", 6),
    )
    record = schedules.create(
        desk.ledger, label="Monthly allowance", programme="BONUS", rule=rule,
        rows=rows(card_ids), maker="asha",
    )  # fmt: skip
    return schedules.approve(desk.ledger, record.id, approver="vikram")


def test_a_monthly_schedule_sends_on_its_day_and_catches_up_an_outage_once(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        card_ids = cards(desk, 3)
        before = len(desk.sandbox.store.transactions())
        record = monthly(desk, card_ids)
        assert record.next_due_at == ist(2027, 1, 31, 9)

        clock.move_to(ist(2027, 1, 31, 8, 59))  # the day before its time: nothing
        tick(desk)
        assert desk.ledger.schedule_runs(record.id) == []

        clock.move_to(ist(2027, 1, 31, 9, 0, 5))  # on its day and time
        tick(desk)
        tick(desk)  # a second pass sends nothing more
        (january,) = desk.ledger.schedule_runs(record.id)
        assert january.state == "sent" and january.due_at == ist(2027, 1, 31, 9)
        assert desk.ledger.get_batch(january.batch_id).state == "finished"

        # The worker is down from 1 Feb to 1 Mar 08:00; February's run (28 Feb 09:00) was due
        # 23 hours ago, inside the 24-hour catch-up window: sent once when it is back.
        clock.move_to(ist(2027, 3, 1, 8))
        workers = [threading.Thread(target=tick, args=(desk,)) for _ in range(2)]
        for thread in workers:  # two passes at once (two workers): one records the run
            thread.start()
        for thread in workers:
            thread.join(60)
        tick(desk)
        runs = desk.ledger.schedule_runs(record.id)
        assert [(r.due_at, r.state) for r in runs] == [
            (ist(2027, 2, 28, 9), "sent"),
            (ist(2027, 1, 31, 9), "sent"),
        ]
        sent = sent_references(desk)
        assert len(desk.sandbox.store.transactions()) - before == 6  # 3 rows x 2 months
        assert all(count == 1 for count in sent.values())
        for run in runs:
            batch = desk.ledger.get_batch(run.batch_id)
            assert batch.state == "finished" and batch.credit_points == Decimal("300")
            assert desk.ledger.batch_counts(run.batch_id)[Status.SUCCEEDED] == 3
        bonus = desk.ledger.programme("BONUS")
        assert bonus.credited == Decimal("600") and bonus.reserved == 0  # reserved, then used


def test_a_catch_up_older_than_the_window_waits_for_a_person(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        card_ids = cards(desk, 2)
        before = len(desk.sandbox.store.transactions())
        record = monthly(desk, card_ids)
        clock.move_to(ist(2027, 3, 1, 12))  # down since January: 31 Jan and 28 Feb are late
        tick(desk)
        runs = desk.ledger.schedule_runs(record.id)
        assert [(r.due_at, r.state) for r in runs] == [
            (ist(2027, 2, 28, 9), "waiting"),  # 27 hours late: beyond the 24-hour window
            (ist(2027, 1, 31, 9), "waiting"),
        ]
        assert len(desk.sandbox.store.transactions()) == before  # nothing sent late
        assert schedules.waiting_count(desk.ledger) == 2  # the menu shows "Schedules (2)"
        assert desk.ledger.get_schedule(record.id).next_due_at == ist(2027, 3, 31, 9)

        february, january = runs
        schedules.skip(desk.ledger, january.id, actor="asha")
        batch_id = schedules.send_now(desk.ledger, february.id, actor="asha")
        assert batch_id == schedules.occurrence_batch_id(record.id, february.due_at)
        with pytest.raises(Conflict):
            schedules.send_now(desk.ledger, february.id, actor="vikram")  # decided already
        with pytest.raises(Conflict):
            schedules.send_now(desk.ledger, january.id, actor="vikram")
        tick(desk)
        assert len(desk.sandbox.store.transactions()) - before == 2
        assert [r.state for r in desk.ledger.schedule_runs(record.id)] == ["sent", "skipped"]
        assert schedules.waiting_count(desk.ledger) == 0


def test_editing_future_runs_leaves_sent_runs_alone_and_needs_a_second_person(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        card_ids = cards(desk, 3)
        record = monthly(desk, card_ids)
        clock.move_to(ist(2027, 1, 31, 9, 1))
        tick(desk)

        clock.move_to(ist(2027, 2, 5, 12))
        new_rule = Rule(Repeat.MONTHLY, date(2027, 1, 10), time(9, 0), day_of_month=31, count=6)
        edited = schedules.edit(
            desk.ledger, record.id, actor="asha", label="Monthly allowance",
            rule=new_rule, rows=rows(card_ids[:2], amount="250"),
        )  # fmt: skip
        assert edited.pending_version == 2 and edited.version == 1
        with pytest.raises(SelfApproval):
            schedules.approve(desk.ledger, record.id, approver="  ASHA ")
        seen = desk.ledger.get_schedule(record.id).updated_at
        schedules.edit(
            desk.ledger, record.id, actor="asha", label="Monthly allowance",
            rule=new_rule, rows=rows(card_ids[:2], amount="250"),
        )  # fmt: skip
        with pytest.raises(Conflict):  # changed again since the approver looked
            schedules.approve(desk.ledger, record.id, approver="vikram", seen=seen)

        clock.move_to(ist(2027, 2, 28, 9, 1))  # not approved yet: February runs as approved
        tick(desk)
        clock.move_to(ist(2027, 3, 2, 10))
        schedules.approve(desk.ledger, record.id, approver="vikram")
        clock.move_to(ist(2027, 3, 31, 9, 1))
        tick(desk)

        runs = desk.ledger.schedule_runs(record.id)
        assert [(r.due_at.astimezone(IST).month, r.version) for r in runs] == [
            (3, 3),
            (2, 1),
            (1, 1),
        ]
        amounts = {
            r.due_at.astimezone(IST).month: sorted(
                row.amount for row in desk.ledger.rows(batch_id=r.batch_id)
            )
            for r in runs
        }
        assert amounts == {
            1: [Decimal("100")] * 3,  # sent before the edit: untouched
            2: [Decimal("100")] * 3,
            3: [Decimal("250")] * 2,
        }
        assert len(desk.sandbox.store.transactions()) == 3 + 3 + 3 + 2
        history = schedules.history(desk.ledger, record.id)
        assert [(e.actor, e.action) for e in history] == [
            ("asha", "set up"),
            ("vikram", "approved"),
            ("asha", "edit asked"),
            ("asha", "edit asked"),
            ("vikram", "edit approved"),
        ]
        assert "2 row(s), 500.00 a run" in history[-1].detail


def test_nothing_runs_before_approval_and_a_programme_that_cannot_pay_refuses_the_run(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        card_ids = cards(desk, 2)
        before = len(desk.sandbox.store.transactions())
        rule = Rule(Repeat.ONCE, date(2027, 1, 11), time(9, 0))
        with pytest.raises(InvalidInput) as refused:
            schedules.create(
                desk.ledger, label="", programme="NOPE", rule=rule, rows=[], maker="asha"
            )
        assert set(refused.value.fields) == {"label", "programme", "rows"}
        big = schedules.create(
            desk.ledger, label="Too big", programme="BONUS", rule=rule,
            rows=rows(card_ids, amount="60000"), maker="asha",
        )  # fmt: skip
        unapproved = schedules.create(
            desk.ledger, label="Never approved", programme="BONUS", rule=rule,
            rows=rows(card_ids), maker="asha",
        )  # fmt: skip
        with pytest.raises(SelfApproval):
            schedules.approve(desk.ledger, big.id, approver="asha")
        schedules.approve(desk.ledger, big.id, approver="vikram")
        clock.move_to(ist(2027, 1, 11, 9, 5))
        tick(desk)
        assert desk.ledger.schedule_runs(unapproved.id) == []  # not approved: never due
        # Approved after its time: no run from before the approval, so nothing is left to run.
        with pytest.raises(Conflict, match="No run of this schedule is left"):
            schedules.approve(desk.ledger, unapproved.id, approver="vikram")
        assert desk.ledger.get_schedule(unapproved.id).state == "pending_approval"
        assert desk.ledger.schedule_runs(unapproved.id) == []
        (run,) = desk.ledger.schedule_runs(big.id)
        assert run.state == "refused" and "not enough" in run.note and run.batch_id is None
        assert desk.ledger.get_schedule(big.id).state == "finished"
        assert len(desk.sandbox.store.transactions()) == before
        failed = schedules.failed_runs(desk.ledger, since=ist(2027, 1, 1))
        assert [(f.schedule_id, f.failed_rows) for f in failed] == [(big.id, 2)]


def test_upcoming_runs_list_active_approved_schedules_and_pause_skips(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        card_ids = cards(desk, 2)
        record = monthly(desk, card_ids)
        rule = Rule(Repeat.WEEKLY, date(2027, 1, 10), time(9, 0), weekday=4, count=10)
        waiting = schedules.create(
            desk.ledger, label="Not approved", programme="BONUS", rule=rule,
            rows=rows(card_ids), maker="asha",
        )  # fmt: skip
        now = datetime.now(UTC)
        upcoming = schedules.upcoming_runs(desk.ledger, now=now, until=ist(2027, 4, 1))
        assert [(u.schedule_id, u.due_at, u.total) for u in upcoming] == [
            (record.id, ist(2027, 1, 31, 9), Decimal("200")),
            (record.id, ist(2027, 2, 28, 9), Decimal("200")),
            (record.id, ist(2027, 3, 31, 9), Decimal("200")),
        ]
        assert all(u.programme_code == "BONUS" for u in upcoming)
        assert waiting.id not in {u.schedule_id for u in upcoming}

        schedules.pause(desk.ledger, record.id, actor="asha")
        assert schedules.upcoming_runs(desk.ledger, now=now, until=ist(2027, 4, 1)) == []
        clock.move_to(ist(2027, 2, 1, 10))
        tick(desk)
        resumed = schedules.resume(desk.ledger, record.id, actor="asha")
        assert resumed.next_due_at == ist(2027, 2, 28, 9)  # January was skipped while paused
        tick(desk)
        assert desk.ledger.schedule_runs(record.id) == []
        schedules.cancel(desk.ledger, record.id, actor="asha")
        assert schedules.upcoming_runs(desk.ledger, now=now, until=ist(2027, 4, 1)) == []


# --- many workers at once, on both databases -----------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request, tmp_path: Path):
    from services.store import Ledger
    from tests.conftest import assert_summaries_agree
    from tests.pg_support import postgres_ledger

    if request.param == "sqlite":
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield ledger
        assert_summaries_agree(ledger)
        ledger.dispose()
        return
    with postgres_ledger() as ledger:
        yield ledger
        assert_summaries_agree(ledger)


def test_eight_workers_catching_up_at_once_record_each_occurrence_once(any_ledger, tmp_path):
    settings = load_settings(
        secrets_file=None,
        points_desk_data_dir=tmp_path,
        points_desk_schedule_catch_up_hours=24 * 200,
    )
    any_ledger.create_programme(code="BONUS", name="Bonus", budget=None, actor="finance")
    rule = Rule(Repeat.WEEKLY, date(2027, 1, 1), time(9, 0), weekday=2, count=12)
    record = schedules.create(
        any_ledger, label="Weekly", programme="BONUS", rule=rule,
        rows=rows(["EKC0000001", "EKC0000002"]), maker="asha", now=ist(2026, 12, 1),
    )  # fmt: skip
    schedules.approve(any_ledger, record.id, approver="vikram", now=ist(2026, 12, 1))
    now = ist(2027, 3, 1)  # eight Wednesdays due (6 Jan to 24 Feb), nobody ran
    barrier = threading.Barrier(8)
    made: list[int] = []

    def worker(n: int) -> None:
        barrier.wait()
        found = schedules.materialise_due(any_ledger, settings, now=now, actor=f"worker {n}")
        made.append(len(found))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    runs = any_ledger.schedule_runs(record.id)
    expected = [d for d in rule.occurrences() if d <= now]
    assert len(expected) == 8 and sum(made) == 8
    assert sorted(run.due_at for run in runs) == expected
    assert all(run.state == "sent" for run in runs)
    batches = any_ledger.list_batches(limit=100)
    assert sorted(b.batch_id for b in batches) == sorted(r.batch_id for r in runs)
    assert all(b.state == "running" and b.row_count == 2 for b in batches)
    assert any_ledger.get_schedule(record.id).next_due_at == expected[-1] + timedelta(days=7)


def test_a_run_whose_rows_failed_is_reported_for_the_alerts(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        (card,) = cards(desk, 1)
        rule = Rule(Repeat.ONCE, date(2027, 1, 11), time(9, 0))
        record = schedules.create(
            desk.ledger, label="One-off", programme="BONUS", rule=rule,
            rows=[*rows([card]), *rows(["EKCNOSUCH1"])], maker="asha",
        )  # fmt: skip
        schedules.approve(desk.ledger, record.id, approver="vikram")
        clock.move_to(ist(2027, 1, 11, 9, 0, 1))
        tick(desk)
        (run,) = desk.ledger.schedule_runs(record.id)
        counts = desk.ledger.batch_counts(run.batch_id)
        assert counts[Status.SUCCEEDED] == 1 and counts[Status.FAILED] == 1
        assert schedules.failed_runs(desk.ledger, since=ist(2027, 1, 12)) == []  # ran before
        (failed,) = schedules.failed_runs(desk.ledger, since=ist(2027, 1, 11))
        assert (failed.schedule_id, failed.label, failed.failed_rows) == (record.id, "One-off", 1)
        assert failed.batch_id == run.batch_id and failed.due_at == ist(2027, 1, 11, 9)


def test_typed_rows_take_amounts_grouped_the_indian_way():
    settings = load_settings()
    rows, wrong = schedules.rows_from_text(
        "EKC04AZHXP, 1,00,000\nekc9qw2ert\t2,500.50\nEKC7PL3MNB 750",
        Kind.CREDIT,
        "allowance",
        settings,
    )
    assert wrong == {}
    assert [(r["card_id"], r["amount_cents"]) for r in rows] == [
        ("EKC04AZHXP", 10_000_000),
        ("EKC9QW2ERT", 250_050),
        ("EKC7PL3MNB", 75_000),
    ]
    # Still one card and one amount a line: a stray third part or an empty amount is refused.
    _, wrong = schedules.rows_from_text(
        "EKC04AZHXP, 500 600\nEKC04AZHXP,,500\nEKC04AZHXP, 1,5", Kind.CREDIT, "", settings
    )
    assert set(wrong) == {1, 2, 3}
    assert wrong[1].startswith("Write a card id and an amount")


def test_an_edit_based_on_what_someone_else_changed_since_saves_nothing(desk):
    card_ids = cards(desk, 1)
    record = monthly(desk, card_ids)  # approved
    rule = schedules.rule_of(record)
    first = schedules.edit(
        desk.ledger, record.id, actor="asha", label="Monthly allowance", rule=rule,
        rows=rows(card_ids, amount="900"), seen=record,
    )  # fmt: skip
    assert first.pending_version == 2
    with pytest.raises(Conflict, match="Someone else changed this schedule"):
        schedules.edit(
            desk.ledger, record.id, actor="neha", label="Monthly allowance", rule=rule,
            rows=rows(card_ids, amount="700"), seen=record,  # opened before asha's edit
        )  # fmt: skip
    assert desk.ledger.get_schedule(record.id).pending_version == 2
    # Built on the change that waits, the edit is saved.
    again = schedules.edit(
        desk.ledger, record.id, actor="neha", label="Monthly allowance", rule=rule,
        rows=rows(card_ids, amount="700"), seen=first,
    )  # fmt: skip
    assert again.pending_version == 3


def test_two_edits_before_approval_based_on_the_same_look_save_only_the_first(desk):
    card_ids = cards(desk, 1)
    rule = Rule(Repeat.MONTHLY, date(2027, 1, 10), time(9, 0), day_of_month=10)
    record = schedules.create(
        desk.ledger, label="Allowance", programme="BONUS", rule=rule,
        rows=rows(card_ids), maker="asha",
    )  # fmt: skip
    schedules.edit(
        desk.ledger, record.id, actor="asha", label="Allowance", rule=rule,
        rows=rows(card_ids, amount="900"), seen=record,
    )  # fmt: skip
    with pytest.raises(Conflict, match="Someone else changed this schedule"):
        schedules.edit(
            desk.ledger, record.id, actor="neha", label="Allowance", rule=rule,
            rows=rows(card_ids, amount="700"), seen=record,
        )  # fmt: skip
    now = desk.ledger.get_schedule(record.id)
    assert [r.amount for r in desk.ledger.schedule_rows(record.id, now.version)] == [Decimal("900")]
