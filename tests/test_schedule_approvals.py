"""Approving a schedule or an edit of its future runs, against a worker's pass and the clock.

A run already due when an edit is approved is never dropped: the approval records it first under
the version in force when it fell due (sent within the catch-up window, else waiting for a
person), and a worker's pass at the same instant records it once, whoever wins (SQLite and
PostgreSQL). A schedule never makes a run for a time before it was approved: a start date in the
past is refused next to the field, and approval starts from its own time, which is the "next run"
the approver was shown. Clocks are time-machine's; what was sent is counted at the sandbox (over
loopback), reference by reference.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine

from services import schedules
from services.approvals import AlreadyDecided
from services.config import load_settings
from services.desk import Desk
from services.errors import InvalidInput
from services.recurrence import IST, Repeat, Rule
from tests import test_schedules
from tests.test_schedules import (
    cards,
    ist,
    rows,
    sent_references,
    tick,
)

# 2027-01-10 is a Sunday; the weekly schedules below run on Wednesdays (13, 20, 27 Jan) at 09:00.
WEDNESDAY = 2


desk = test_schedules.desk  # the fixture: the same Desk, worker and clock as those tests


def weekly(start: date = date(2027, 1, 11), weekday: int = WEDNESDAY, at: time = time(9)) -> Rule:
    return Rule(Repeat.WEEKLY, start, at, weekday=weekday)


def amounts(desk: Desk, batch_id: str | None) -> list[Decimal]:
    return sorted(row.amount for row in desk.ledger.rows(batch_id=batch_id))


def view_of(ledger, schedule_id: str) -> schedules.ScheduleView:
    (found,) = [v for v in schedules.views(ledger) if v.record.id == schedule_id]
    return found


# --- a run due when an edit is approved ----------------------------------------------------------


def test_a_run_due_when_an_edit_is_approved_is_still_sent_with_the_rows_it_fell_due_under(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        card_ids = cards(desk, 2)
        before = len(desk.sandbox.store.transactions())
        record = schedules.create(
            desk.ledger, label="Weekly", programme="BONUS", rule=weekly(),
            rows=rows(card_ids, amount="100"), maker="asha",
        )  # fmt: skip
        schedules.approve(desk.ledger, record.id, approver="vikram")
        clock.move_to(ist(2027, 1, 13, 9, 1))
        tick(desk)  # 13 Jan: sent

        # The workers are down from here; 20 Jan 09:00 falls due and nobody records it. An edit
        # is asked at 10:00 and approved at 11:00, two hours after the run fell due.
        clock.move_to(ist(2027, 1, 20, 10))
        schedules.edit(
            desk.ledger, record.id, actor="asha", label="Weekly", rule=weekly(),
            rows=rows(card_ids, amount="250"),
        )  # fmt: skip
        clock.move_to(ist(2027, 1, 20, 11))
        approved = schedules.approve(desk.ledger, record.id, approver="vikram")
        assert approved.version == 2 and approved.next_due_at == ist(2027, 1, 27, 9)

        clock.move_to(ist(2027, 1, 20, 11, 1))  # a worker is back
        tick(desk)
        runs = desk.ledger.schedule_runs(record.id)
        assert [(r.due_at, r.state, r.version) for r in runs] == [
            (ist(2027, 1, 20, 9), "sent", 1),  # due before the approval: the approved rows
            (ist(2027, 1, 13, 9), "sent", 1),
        ]
        assert desk.ledger.get_batch(runs[0].batch_id).state == "finished"
        assert amounts(desk, runs[0].batch_id) == [Decimal("100")] * 2
        assert "due before the edit vikram approved" in runs[0].note
        (approval,) = [
            e for e in schedules.history(desk.ledger, record.id) if e.action == "edit approved"
        ]
        assert "the run due 20 Jan 2027, 09:00 IST was due before: version 1, sent as batch" in (
            approval.detail
        )
        assert "next run 27 Jan 2027, 09:00 IST" in approval.detail

        clock.move_to(ist(2027, 1, 27, 9, 1))
        tick(desk)
        latest = desk.ledger.schedule_runs(record.id)[0]
        assert (latest.due_at, latest.version) == (ist(2027, 1, 27, 9), 2)
        assert amounts(desk, latest.batch_id) == [Decimal("250")] * 2
        assert len(desk.sandbox.store.transactions()) - before == 6  # 2 rows x 3 weeks
        assert set(sent_references(desk).values()) == {1}  # nothing twice


def test_a_run_due_longer_ago_than_the_window_waits_for_a_person_after_an_edit_is_approved(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        card_ids = cards(desk, 2)
        before = len(desk.sandbox.store.transactions())
        record = schedules.create(
            desk.ledger, label="Weekly", programme="BONUS", rule=weekly(),
            rows=rows(card_ids, amount="100"), maker="asha",
        )  # fmt: skip
        schedules.approve(desk.ledger, record.id, approver="vikram")
        clock.move_to(ist(2027, 1, 13, 9, 1))
        tick(desk)

        # Down since: 20 Jan 09:00 is 27 hours late when the edit is approved.
        clock.move_to(ist(2027, 1, 21, 12))
        schedules.edit(
            desk.ledger, record.id, actor="asha", label="Weekly", rule=weekly(),
            rows=rows(card_ids, amount="250"),
        )  # fmt: skip
        schedules.approve(desk.ledger, record.id, approver="vikram")
        tick(desk)
        late, _ = desk.ledger.schedule_runs(record.id)
        assert (late.due_at, late.state, late.version) == (ist(2027, 1, 20, 9), "waiting", 1)
        assert "not sent late" in late.note
        assert len(desk.sandbox.store.transactions()) - before == 2  # only 13 Jan so far
        assert schedules.waiting_count(desk.ledger) == 1

        batch_id = schedules.send_now(desk.ledger, late.id, actor="asha")
        tick(desk)
        assert desk.ledger.schedule_run(late.id).state == "sent"
        assert amounts(desk, batch_id) == [Decimal("100")] * 2  # what was in force on 20 Jan
        assert len(desk.sandbox.store.transactions()) - before == 4
        assert set(sent_references(desk).values()) == {1}


def test_the_approval_uses_the_catch_up_window_it_is_given(desk, tmp_path):
    # With a one-hour window, a run two hours late when the edit is approved waits for a person.
    one_hour = load_settings(
        secrets_file=None, points_desk_data_dir=tmp_path, points_desk_schedule_catch_up_hours=1
    )
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        record = schedules.create(
            desk.ledger, label="Weekly", programme="BONUS", rule=weekly(),
            rows=rows(["EKC04AZHXP"]), maker="asha",
        )  # fmt: skip
        schedules.approve(desk.ledger, record.id, approver="vikram")
        clock.move_to(ist(2027, 1, 13, 10, 30))
        schedules.edit(
            desk.ledger, record.id, actor="asha", label="Weekly", rule=weekly(),
            rows=rows(["EKC04AZHXP"], amount="250"),
        )  # fmt: skip
        schedules.approve(desk.ledger, record.id, approver="vikram", settings=one_hour)
        (run,) = desk.ledger.schedule_runs(record.id)
        assert (run.due_at, run.state, run.version) == (ist(2027, 1, 13, 9), "waiting", 1)
        assert run.note.startswith("due more than 1 hour ago: not sent late")
        assert desk.ledger.list_batches(limit=10) == []


# --- the race with a worker's pass, on both databases ---------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request, tmp_path: Path):
    from services.store import Ledger
    from tests.pg_support import postgres_ledger

    if request.param == "sqlite":
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield ledger
        ledger.dispose()
        return
    with postgres_ledger() as ledger:  # skips, saying why, when no server answers
        yield ledger


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(secrets_file=None, points_desk_data_dir=tmp_path)


DUE = ist(2027, 1, 20, 9)  # the occurrence the worker and the approval both find due
AT = DUE + timedelta(minutes=1)


def edited_schedule(ledger, label: str = "Weekly") -> str:
    """A weekly schedule approved before 20 Jan, whose 20 Jan run is due (not yet recorded) and
    whose edit waits for approval."""
    if ledger.programme("BONUS") is None:
        ledger.create_programme(code="BONUS", name="Bonus", budget=None, actor="finance")
    set_up = ist(2027, 1, 19, 12)
    rule = weekly(start=set_up.date())
    record = schedules.create(
        ledger, label=label, programme="BONUS", rule=rule,
        rows=rows(["EKC0000001", "EKC0000002"]), maker="asha", now=set_up,
    )  # fmt: skip
    approved = schedules.approve(ledger, record.id, approver="vikram", now=set_up)
    assert approved.next_due_at == DUE
    schedules.edit(
        ledger, record.id, actor="asha", label=label, rule=rule,
        rows=rows(["EKC0000001"], amount="900"), now=DUE - timedelta(minutes=30),
    )  # fmt: skip
    return record.id


def assert_run_once_and_edit_in_force(ledger, schedule_id: str) -> None:
    runs = ledger.schedule_runs(schedule_id)
    assert [(r.due_at, r.version, r.rows) for r in runs] == [(DUE, 1, 2)]
    assert ledger.get_batch(runs[0].batch_id).row_count == 2
    now = ledger.get_schedule(schedule_id)
    assert (now.version, now.pending_version) == (2, None)
    assert now.next_due_at == DUE + timedelta(days=7)


def test_a_worker_that_read_the_schedule_before_the_approval_still_records_the_run_once(
    any_ledger, settings, monkeypatch
):
    schedule_id = edited_schedule(any_ledger)
    # The worker's pass reads the due schedules, then the approval commits, then the worker
    # writes: it holds the schedule as it was before the approval.
    read_before = any_ledger.due_schedules(AT)
    assert [r.id for r in read_before] == [schedule_id]
    schedules.approve(any_ledger, schedule_id, approver="vikram", now=AT)
    monkeypatch.setattr(any_ledger, "due_schedules", lambda now: read_before)
    schedules.materialise_due(any_ledger, settings, now=AT, actor="worker")
    assert_run_once_and_edit_in_force(any_ledger, schedule_id)


def test_an_approval_overtaken_by_a_workers_pass_still_approves_and_the_run_is_made_once(
    any_ledger, settings, monkeypatch
):
    schedule_id = edited_schedule(any_ledger)
    real_get = any_ledger.get_schedule
    overtaken: list[bool] = []

    def read_then_the_worker_writes(wanted: str):
        found = real_get(wanted)
        if not overtaken:  # the approval has read the schedule; a worker records the run now
            overtaken.append(True)
            made = schedules.materialise_due(any_ledger, settings, now=AT, actor="worker")
            assert [r.due_at for r in made] == [DUE]
        return found

    monkeypatch.setattr(any_ledger, "get_schedule", read_then_the_worker_writes)
    approved = schedules.approve(any_ledger, schedule_id, approver="vikram", now=AT)
    assert overtaken and approved.version == 2
    assert_run_once_and_edit_in_force(any_ledger, schedule_id)


def test_an_approval_and_a_workers_pass_at_the_same_instant_record_the_due_run_once(
    any_ledger, settings
):
    outcomes: Counter = Counter()
    for round_number in range(12):
        schedule_id = edited_schedule(any_ledger, label=f"Weekly {round_number}")
        barrier = threading.Barrier(2)
        results: list[object] = [None, None]

        def worker(results=results, barrier=barrier) -> None:
            barrier.wait()
            try:
                results[0] = schedules.materialise_due(any_ledger, settings, now=AT, actor="w")
            except Exception as error:  # reported below
                results[0] = error

        def approver(results=results, barrier=barrier, schedule_id=schedule_id) -> None:
            barrier.wait()
            try:
                results[1] = schedules.approve(any_ledger, schedule_id, approver="vikram", now=AT)
            except Exception as error:
                results[1] = error

        threads = [threading.Thread(target=worker), threading.Thread(target=approver)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not [r for r in results if isinstance(r, Exception)], results
        assert_run_once_and_edit_in_force(any_ledger, schedule_id)
        made_by_worker = any(r.schedule_id == schedule_id for r in results[0])  # type: ignore[union-attr]
        outcomes["worker" if made_by_worker else "approval"] += 1
    assert sum(outcomes.values()) == 12  # who recorded it varies; that it was recorded does not


def test_what_the_approver_saw_is_approved_though_a_worker_recorded_a_run_since(
    any_ledger, settings
):
    schedule_id = edited_schedule(any_ledger)
    seen = any_ledger.get_schedule(schedule_id)  # the page as the approver opened it
    schedules.materialise_due(any_ledger, settings, now=AT, actor="worker")  # no person's change
    approved = schedules.approve(any_ledger, schedule_id, approver="vikram", now=AT, seen=seen)
    assert approved.version == 2
    assert_run_once_and_edit_in_force(any_ledger, schedule_id)

    # A person's change since the approver looked is another matter: nothing is approved.
    other = edited_schedule(any_ledger, label="Other")
    seen = any_ledger.get_schedule(other)
    schedules.edit(
        any_ledger, other, actor="asha", label="Other", rule=schedules.rule_of(seen),
        rows=rows(["EKC0000001"], amount="5"), now=AT,
    )  # fmt: skip
    with pytest.raises(AlreadyDecided):
        schedules.approve(any_ledger, other, approver="vikram", now=AT, seen=seen)
    assert any_ledger.get_schedule(other).pending_version == 3


# --- no run from before approval ------------------------------------------------------------------


def test_a_start_date_in_the_past_is_refused_and_nothing_is_recorded(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True):
        for rule, words in (
            (weekly(start=date(2027, 1, 9)), "The start date 09 Jan 2027 is in the past"),
            (Rule(Repeat.ONCE, date(2026, 1, 10), time(9)), "The date 10 Jan 2026 is in the past"),
        ):
            with pytest.raises(InvalidInput) as refused:
                schedules.create(
                    desk.ledger, label="Back-dated", programme="BONUS", rule=rule,
                    rows=rows(["EKC04AZHXP"]), maker="asha",
                )  # fmt: skip
            assert set(refused.value.fields) == {"start_on"}  # said next to the date
            assert refused.value.fields["start_on"].startswith(words)
            assert "choose today or a later day" in refused.value.fields["start_on"]
        assert desk.ledger.list_schedules() == []
        today = schedules.create(
            desk.ledger, label="From today", programme="BONUS",
            rule=weekly(start=date(2027, 1, 10)), rows=rows(["EKC04AZHXP"]), maker="asha",
        )  # fmt: skip
        assert today.state == "pending_approval"


def test_a_late_approval_makes_no_run_from_before_it_and_the_first_is_the_one_shown(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        card_ids = cards(desk, 1)
        before = len(desk.sandbox.store.transactions())
        rule = weekly(weekday=0)  # Mondays 09:00 from 11 Jan
        record = schedules.create(
            desk.ledger, label="Mondays", programme="BONUS", rule=rule,
            rows=rows(card_ids), maker="asha",
        )  # fmt: skip
        # The approver looks nine days later: 11 and 18 Jan have passed.
        clock.move_to(ist(2027, 1, 19, 10))
        shown = view_of(desk.ledger, record.id)
        assert shown.next_run == ist(2027, 1, 25, 9)
        approved = schedules.approve(desk.ledger, record.id, approver="vikram")
        assert approved.next_due_at == shown.next_run  # what the approver saw
        assert shown.next_run_if_approved == shown.next_run
        tick(desk)
        assert desk.ledger.schedule_runs(record.id) == []  # nothing from before the approval
        assert desk.ledger.list_batches(limit=100) == []
        assert schedules.waiting_count(desk.ledger) == 0
        approval = schedules.history(desk.ledger, record.id)[-1]
        assert approval.action == "approved"
        assert "first run 25 Jan 2027, 09:00 IST" in approval.detail
        assert "2 earlier occurrence(s) (from 11 Jan 2027, 09:00 IST) fell before" in (
            approval.detail
        )

        clock.move_to(ist(2027, 1, 25, 9, 1))
        tick(desk)
        (run,) = desk.ledger.schedule_runs(record.id)
        assert (run.due_at, run.state) == (ist(2027, 1, 25, 9), "sent")
        assert len(desk.sandbox.store.transactions()) - before == 1


def test_a_schedule_set_up_long_ago_with_a_start_a_year_back_makes_no_past_runs(desk):
    # Set up (when a past start was still accepted) a year ago, approved now: no year of
    # waiting runs for anyone to "Send now", and the next run is the one the view says.
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True):
        card_ids = cards(desk, 1)
        record = schedules.create(
            desk.ledger, label="Weekly", programme="BONUS", rule=weekly(start=date(2026, 1, 12)),
            rows=rows(card_ids), maker="asha", now=ist(2026, 1, 11),
        )  # fmt: skip
        shown = view_of(desk.ledger, record.id).next_run
        approved = schedules.approve(desk.ledger, record.id, approver="vikram")
        assert approved.next_due_at == shown == ist(2027, 1, 13, 9)
        tick(desk)
        assert desk.ledger.schedule_runs(record.id, limit=1000) == []
        assert schedules.waiting_count(desk.ledger) == 0
        assert "52 earlier occurrence(s)" in schedules.history(desk.ledger, record.id)[-1].detail


def test_the_next_run_shown_for_an_edit_is_what_its_approval_makes(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        record = schedules.create(
            desk.ledger, label="Weekly", programme="BONUS", rule=weekly(),
            rows=rows(["EKC04AZHXP"]), maker="asha",
        )  # fmt: skip
        assert view_of(desk.ledger, record.id).next_run_if_approved == ist(2027, 1, 13, 9)
        schedules.approve(desk.ledger, record.id, approver="vikram")
        assert view_of(desk.ledger, record.id).next_run_if_approved is None  # nothing waits
        # Moved to Fridays at 18:00, asked on Tuesday 12 Jan.
        clock.move_to(ist(2027, 1, 12, 10))
        schedules.edit(
            desk.ledger, record.id, actor="asha", label="Weekly",
            rule=weekly(weekday=4, at=time(18)), rows=rows(["EKC04AZHXP"]),
        )  # fmt: skip
        shown = view_of(desk.ledger, record.id)
        assert shown.next_run == ist(2027, 1, 13, 9)  # the approved version's, until approved
        assert shown.next_run_if_approved == ist(2027, 1, 15, 18)
        approved = schedules.approve(desk.ledger, record.id, approver="vikram")
        assert approved.next_due_at == shown.next_run_if_approved


def test_an_edit_keeps_the_schedules_own_past_start_but_cannot_move_it_into_the_past(desk):
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        record = schedules.create(
            desk.ledger, label="Weekly", programme="BONUS", rule=weekly(),
            rows=rows(["EKC04AZHXP"]), maker="asha",
        )  # fmt: skip
        schedules.approve(desk.ledger, record.id, approver="vikram")
        clock.move_to(ist(2027, 1, 20, 10))
        # The form shows the start it has (11 Jan): saving it unchanged is fine.
        kept = schedules.edit(
            desk.ledger, record.id, actor="asha", label="Weekly", rule=weekly(),
            rows=rows(["EKC04AZHXP"], amount="300"),
        )  # fmt: skip
        assert kept.pending_version == 2
        with pytest.raises(InvalidInput) as refused:
            schedules.edit(
                desk.ledger, record.id, actor="asha", label="Weekly",
                rule=weekly(start=date(2027, 1, 12)), rows=rows(["EKC04AZHXP"]),
            )  # fmt: skip
        assert set(refused.value.fields) == {"start_on"}
        assert desk.ledger.get_schedule(record.id).pending_version == 2  # nothing saved


# --- the page: the refusal next to the date field -------------------------------------------------


def test_the_page_says_next_to_the_date_that_a_past_start_is_refused(app, app_desk):
    from tests.test_pages_money import page_text
    from tests.test_pages_schedules import SCHEDULES

    app.switch_page(SCHEDULES).run()
    app.text_input(key="new_sched_label").input("Back-dated")
    app.radio(key="new_sched_repeat").set_value("weekly").run()
    yesterday = datetime.now(IST).date() - timedelta(days=1)
    app.date_input(key="new_sched_start_on").set_value(yesterday)
    app.text_input(key="new_sched_reason").input("allowance")
    app.text_area(key="new_sched_rows").input("EKC04AZHXP, 100")
    app.button(key="new_sched_submit").click().run()
    assert not app.exception, app.exception
    assert f"The start date {yesterday:%d %b %Y} is in the past" in page_text(app)
    assert app_desk.ledger.list_schedules() == []


def test_a_worker_that_read_the_schedule_before_an_edit_was_approved_sends_the_new_rows(desk):
    """A worker reads the schedule (version 1), an edit is approved a moment before the run is
    due, then the worker records that run from what it read: the schedule's version moved, so
    the worker's record is refused and its next look sends the approved edit's rows."""
    with time_machine.travel(ist(2027, 1, 10, 10), tick=True) as clock:
        card_ids = cards(desk, 1)
        record = schedules.create(
            desk.ledger, label="Weekly", programme="BONUS", rule=weekly(),
            rows=rows(card_ids, amount="100"), maker="asha",
        )  # fmt: skip
        schedules.approve(desk.ledger, record.id, approver="vikram")
        clock.move_to(ist(2027, 1, 13, 8, 59))
        (stale,) = [r for r in desk.ledger.due_schedules(ist(2027, 1, 13, 9)) if r.id == record.id]
        schedules.edit(
            desk.ledger, record.id, actor="asha", label="Weekly", rule=weekly(),
            rows=rows(card_ids, amount="250"),
        )  # fmt: skip
        approved = schedules.approve(desk.ledger, record.id, approver="vikram")
        assert approved.version == 2 and approved.next_due_at == ist(2027, 1, 13, 9)

        clock.move_to(ist(2027, 1, 13, 9, 0, 1))
        made = schedules._catch_up(
            desk.ledger, stale, now=ist(2027, 1, 13, 9, 0, 1), window=timedelta(hours=24),
            actor="worker",
        )  # fmt: skip
        assert made == []  # refused: the schedule is not at the version it read
        tick(desk)
        (run,) = desk.ledger.schedule_runs(record.id)
        assert (run.due_at, run.version) == (ist(2027, 1, 13, 9), 2)
        assert amounts(desk, run.batch_id) == [Decimal("250")]
