"""The runway projection (services/runway.py) against figures worked out by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import time_machine

from services import runway, schedules
from services.models import Allocation, AllocationResult, Kind, Status, UpcomingRun
from services.store import Programme

D = Decimal
# 12:00 IST on Tuesday 20 January 2026: "today" is 20 Jan (IST).
NOW = datetime(2026, 1, 20, 6, 30, tzinfo=UTC)


def programme(code: str, budget: str | None, credited: str = "0", **more) -> Programme:
    base = Programme(
        id=hash(code) % 1000,
        code=code,
        name=f"{code} programme",
        budget=None if budget is None else D(budget),
        starts_on=None,
        ends_on=None,
        owner="",
        description="",
        monthly_operator_limit=None,
        debit_threshold=None,
        state="active",
        reserved=D("0"),
        credited=D(credited),
        returned=D("0"),
        created_by="test",
        created_at=NOW,
        updated_at=NOW,
    )
    return replace(base, **more)


def run(schedule: str, due: datetime, total: str, code: str | None = None) -> UpcomingRun:
    return UpcomingRun(schedule, f"{schedule} run", due, D(total), code)


# A monthly Q1 run whose January occurrence is at 19:00 UTC on 31 Jan, which is 00:30 IST on
# 1 February (day 12), then 28 Feb and 31 Mar at 18:00 IST (days 39 and 70); and one General run
# of 600 on 10 Feb at 09:30 IST (day 21).
MONTHLY = [
    run("monthly", datetime(2026, 1, 31, 19, 0, tzinfo=UTC), "3000", "Q1"),
    run("monthly", datetime(2026, 2, 28, 12, 30, tzinfo=UTC), "3000", "Q1"),
    run("monthly", datetime(2026, 3, 31, 12, 30, tzinfo=UTC), "3000", "Q1"),
]
GENERAL_RUN = run("weekly", datetime(2026, 2, 10, 4, 0, tzinfo=UTC), "600")
PROGRAMMES = [programme("GENERAL", None), programme("Q1", "10000", credited="5000")]


def test_the_pool_is_projected_30_60_90_days_with_month_end_runs_counted_once():
    found = runway.project(D("10000.00"), D("150.00"), [*MONTHLY, GENERAL_RUN], PROGRAMMES, now=NOW)
    assert found.today == date(2026, 1, 20)
    # Days 0-29 hold the 1 Feb and 10 Feb runs: 3,600, i.e. 120 a day of the 150-a-day burn is
    # the schedules' own pace; 30 a day is projected on top of the runs.
    assert found.scheduled_per_day == D("120.00")
    assert found.ad_hoc_per_day == D("30.00")
    assert [(h.days, h.scheduled, h.burn, h.projected_balance) for h in found.horizons] == [
        (30, D("3600"), D("900.00"), D("5500.00")),  # 10,000 - 3,600 - 30 x 30
        (60, D("6600"), D("1800.00"), D("1600.00")),  # + the 28 Feb run
        (90, D("9600"), D("2700.00"), D("-2300.00")),  # + the 31 Mar run
    ]
    # Day 69 ends at 10,000 - 30 x 69 - 6,600 = 1,330; day 70 (31 Mar) takes 3,000 more.
    assert dict(found.daily)[date(2026, 3, 30)] == D("1330.00")
    assert dict(found.daily)[date(2026, 3, 31)] == D("-1700.00")
    assert found.runs_out_on == date(2026, 3, 31)
    assert found.days_left == 70
    # The 31 Jan 19:00 UTC run belongs to IST 1 Feb: day 11 (31 Jan) has no run in it.
    assert dict(found.daily)[date(2026, 1, 31)] == D("10000.00") - 30 * 11
    assert dict(found.daily)[date(2026, 2, 1)] == D("10000.00") - 30 * 12 - 3000


def test_runs_that_will_not_fit_the_pool_or_their_programme_budget_show_the_shortfall():
    found = runway.project(D("10000.00"), D("150.00"), [*MONTHLY, GENERAL_RUN], PROGRAMMES, now=NOW)
    short = [
        (s.run.due_at.date(), s.pool_before, s.pool_shortfall, s.programme_before,
         s.programme_shortfall)
        for s in found.shortfalls
    ]  # fmt: skip
    assert short == [
        # Q1 has 5,000 left; the 1 Feb run takes 3,000, so 28 Feb finds 2,000: 1,000 short.
        # The pool then holds 10,000 - 30 x 39 - 3,600 = 5,230: enough.
        (date(2026, 2, 28), D("5230.00"), D("0"), D("2000"), D("1000")),
        # 31 Mar: the pool holds 10,000 - 30 x 70 - 6,600 = 1,300 (1,700 short); Q1 has nothing
        # left (-1,000), so the whole 3,000 is short.
        (date(2026, 3, 31), D("1300.00"), D("1700.00"), D("-1000"), D("3000")),
    ]


def test_a_run_in_a_programme_that_has_ended_by_then_does_not_fit_at_all():
    ended = programme("Q2", "50000", ends_on=date(2026, 2, 5))
    late = run("q2-bonus", datetime(2026, 2, 10, 4, 0, tzinfo=UTC), "250", "Q2")
    found = runway.project(D("90000"), D("0"), [late], [ended], now=NOW)
    [only] = found.shortfalls
    assert only.pool_shortfall == 0
    assert only.programme_shortfall == D("250")
    assert "ended on 05 Feb 2026" in only.programme_note


def test_a_burn_slower_than_the_schedules_projects_only_the_runs_and_past_the_horizon_is_none():
    found = runway.project(D("10000"), D("50.00"), [*MONTHLY, GENERAL_RUN], PROGRAMMES, now=NOW)
    assert found.ad_hoc_per_day == D("0.00")  # 50 a day is less than the 120 a day scheduled
    assert found.horizons[-1].projected_balance == D("400.00")  # 10,000 - 9,600
    assert found.runs_out_on is None
    assert found.days_left is None
    # A run due before now, or after the 90th day, is not part of the projection.
    stale = run("old", datetime(2026, 1, 19, tzinfo=UTC), "99999")
    far = run("far", datetime(2026, 4, 21, tzinfo=UTC), "99999")  # day 91
    assert runway.project(D("10000"), D("0"), [stale, far], [], now=NOW).runs_out_on is None


def _paid(ledger, kind: Kind, amount: str, n: int) -> None:
    allocation = Allocation(
        kind=kind, reference=f"RWY{n:05d}", amount=D(amount), card_id="EKC0000001"
    )
    ledger.record_intent(allocation, operator="asha")
    ledger.transition(
        allocation.reference,
        Status.SUCCEEDED,
        actor="asha",
        from_statuses=(Status.SENDING,),
        result=AllocationResult(
            reference=allocation.reference,
            card_id="EKC0000001",
            transaction_id=f"TX{n}",
            balance_after=D("0"),
        ),
    )


def test_runway_for_reads_the_burn_from_the_daily_summaries_of_the_last_30_ist_days(
    ledger, monkeypatch
):
    # The window is 22 Dec .. 20 Jan (IST). 23:59 IST on 21 Dec is outside it; 00:01 IST on
    # 22 Dec (18:31 UTC on 21 Dec) is its first minute; 23:00 IST on 19 Jan is inside.
    with time_machine.travel(datetime(2025, 12, 21, 18, 29, tzinfo=UTC), tick=False):
        _paid(ledger, Kind.CREDIT, "9999", 1)
    with time_machine.travel(datetime(2025, 12, 21, 18, 31, tzinfo=UTC), tick=False):
        _paid(ledger, Kind.CREDIT, "3000", 2)
    with time_machine.travel(datetime(2026, 1, 19, 17, 30, tzinfo=UTC), tick=False):
        _paid(ledger, Kind.CREDIT, "1800", 3)
        _paid(ledger, Kind.DEBIT, "300", 4)
    assert runway.recent_burn(ledger, now=NOW) == D("150.00")  # (3,000 + 1,800 - 300) / 30

    asked = {}

    def upcoming(the_ledger, *, now, until):
        asked.update(now=now, until=until)
        return [*MONTHLY, GENERAL_RUN]

    monkeypatch.setattr(schedules, "upcoming_runs", upcoming)
    found = runway.runway_for(ledger, D("10000.00"), NOW)
    # Through the end of IST 20 April (day 90).
    assert asked == {"now": NOW, "until": datetime(2026, 4, 20, 18, 30, tzinfo=UTC)}
    assert found.burn_per_day == D("150.00")
    assert found.runs_out_on == date(2026, 3, 31)
    # General (no limit) comes from the ledger; the Q1 runs name a programme it does not know.
    assert found.shortfalls[-1].programme_before is None
