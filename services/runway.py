"""Runway: the company pool projected forward, and the scheduled runs that will not fit.

The projection is a pure function (``project``) of the pool balance, the recent burn rate, the
upcoming scheduled runs and the programmes' remaining budgets; ``runway_for`` gathers those from
the ledger and the schedules' contract (``services.schedules.upcoming_runs``).

**Burn rate.** Net succeeded points per IST day (credits and account creations less debits, the
same figures History shows), read from the ``daily_totals`` summary for the last ``BURN_DAYS`` IST
days including today, divided by ``BURN_DAYS``: a quiet day counts as a day of zero burn. This is
the rate the programme reports use too.

**Scheduled outflow and burn, without counting twice.** The recent burn already contains the
schedules' own past runs (a monthly run of 3,000 points is 100 points a day of the last 30 days'
burn). So the projection takes only the *ad-hoc* part of the burn forward:
``ad_hoc = max(0, burn - scheduled in the next BURN_DAYS days / BURN_DAYS)``, assuming the
schedules ran at the same pace over the last ``BURN_DAYS`` days, and adds every scheduled run on
its own due day. A schedule that is new (no past runs in the burn) is then slightly
under-projected by at most its own daily pace; one that ran before is counted exactly once.

**Day by day.** Day ``k`` is the IST date ``today + k`` (day 0 is the rest of today, with no
ad-hoc burn; the 30-day horizon is days 0 to 30). The projected balance at the end of day ``k``
is ``pool - ad_hoc * k - (runs due on or before day k)``. The pool runs out on the first day
that balance is below zero (``None``: not within the horizon). A run is checked against what
the pool is projected to hold when it is due (that day's ad-hoc burn and every earlier run
already taken); its shortfall is what it needs beyond that (all of it when nothing is left).
Against its programme, a run is checked against the programme's remaining budget less that
programme's earlier scheduled runs (a programme's ad-hoc spending is not projected), and is
refused whole when the programme is closed or not open on that day.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import sqlalchemy as sa

from services import schedules
from services.models import UpcomingRun
from services.store import Ledger, Programme, daily_totals, from_cents
from services.store.schema import GENERAL_CODE
from services.store.summaries import IST, ist_day

#: Days the burn rate is averaged over (the same window as the programme reports).
BURN_DAYS = 30
#: The horizons the Overview shows; the projection runs to the longest.
HORIZONS = (30, 60, 90)
ZERO = Decimal("0.00")
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Horizon:
    """What the next ``days`` days hold: scheduled runs, ad-hoc burn, the balance after both."""

    days: int
    scheduled: Decimal  # net points of the runs due in the window
    burn: Decimal  # ad-hoc burn over the window (``ad_hoc_per_day * days``)
    projected_balance: Decimal  # pool - scheduled - burn


@dataclass(frozen=True)
class RunShortfall:
    """A scheduled run that will not fit the pool or its programme's budget."""

    run: UpcomingRun
    pool_before: Decimal  # what the pool is projected to hold when it is due
    pool_shortfall: Decimal  # what the run needs beyond that (0: the pool covers it)
    programme_before: Decimal | None  # its programme's remaining then (None: no limit)
    programme_shortfall: Decimal  # beyond the programme's remaining (0: it fits)
    programme_note: str = ""  # why, when the programme takes no credits at all that day


@dataclass(frozen=True)
class Runway:
    """The pool projected ``horizon_days`` forward from ``today``."""

    today: date  # IST
    pool_balance: Decimal
    burn_per_day: Decimal  # recent net burn, all movements
    scheduled_per_day: Decimal  # the schedules' pace, already inside ``burn_per_day``
    ad_hoc_per_day: Decimal  # what is projected on top of the scheduled runs
    horizons: list[Horizon]
    runs_out_on: date | None  # first IST day the projected balance is below zero
    shortfalls: list[RunShortfall]
    daily: list[tuple[date, Decimal]] = field(default_factory=list)  # balance at each day's end

    @property
    def days_left(self) -> int | None:
        """Whole days from today until the pool runs out (``None``: past the horizon)."""
        return None if self.runs_out_on is None else (self.runs_out_on - self.today).days


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def project(
    pool_balance: Decimal,
    burn_per_day: Decimal,
    runs: Sequence[UpcomingRun],
    programmes: Iterable[Programme],
    *,
    now: datetime,
    horizons: Sequence[int] = HORIZONS,
) -> Runway:
    """Project the pool ``max(horizons)`` days forward (see the module docstring for the rule).

    ``runs`` are the upcoming scheduled runs (any order; those due after the horizon are
    ignored); ``programmes`` the programmes with their counters, by code. Pure: no I/O.
    """
    horizon_days = max(horizons)
    today = ist_day(now)
    ahead = sorted(
        (r for r in runs if now < r.due_at and (ist_day(r.due_at) - today).days <= horizon_days),
        key=lambda r: (r.due_at, r.schedule_id),
    )
    by_day: dict[int, Decimal] = {}
    for r in ahead:
        k = (ist_day(r.due_at) - today).days
        by_day[k] = by_day.get(k, ZERO) + r.total
    # The schedules' pace over the next BURN_DAYS days (days 0 .. BURN_DAYS - 1).
    scheduled_window = sum((v for k, v in by_day.items() if k < BURN_DAYS), ZERO)
    scheduled_per_day = _money(scheduled_window / BURN_DAYS)
    ad_hoc = max(ZERO, _money(burn_per_day - scheduled_per_day))
    daily: list[tuple[date, Decimal]] = []
    runs_out_on = None
    taken = ZERO
    for k in range(horizon_days + 1):
        taken += by_day.get(k, ZERO)
        balance = pool_balance - ad_hoc * k - taken
        daily.append((today + timedelta(days=k), balance))
        if runs_out_on is None and balance < 0:
            runs_out_on = today + timedelta(days=k)

    shown = []
    for days in sorted(horizons):
        scheduled = sum((v for k, v in by_day.items() if k <= days), ZERO)
        burn = ad_hoc * days
        shown.append(Horizon(days, scheduled, burn, pool_balance - scheduled - burn))

    return Runway(
        today=today,
        pool_balance=pool_balance,
        burn_per_day=burn_per_day,
        scheduled_per_day=scheduled_per_day,
        ad_hoc_per_day=ad_hoc,
        horizons=shown,
        runs_out_on=runs_out_on,
        shortfalls=_shortfalls(pool_balance, ad_hoc, ahead, programmes, today),
        daily=daily,
    )


def _shortfalls(
    pool_balance: Decimal,
    ad_hoc: Decimal,
    ahead: list[UpcomingRun],
    programmes: Iterable[Programme],
    today: date,
) -> list[RunShortfall]:
    known = {p.code: p for p in programmes}
    spent: dict[str, Decimal] = {}  # per programme: its earlier scheduled runs
    earlier = ZERO
    found = []
    for run in ahead:
        day = ist_day(run.due_at)
        pool_before = pool_balance - ad_hoc * (day - today).days - earlier
        earlier += run.total
        pool_short = _short(run.total, pool_before)
        code = (run.programme_code or GENERAL_CODE).strip().upper()
        programme = known.get(code)
        programme_before: Decimal | None = None
        programme_short = ZERO
        note = ""
        if programme is not None:
            note = programme.why_closed(day) or ""
            if programme.remaining is not None:
                programme_before = programme.remaining - spent.get(code, ZERO)
                programme_short = _short(run.total, programme_before)
            if note and run.total > 0:
                programme_short = run.total
        spent[code] = spent.get(code, ZERO) + run.total
        if pool_short > 0 or programme_short > 0:
            found.append(
                RunShortfall(run, pool_before, pool_short, programme_before, programme_short, note)
            )
    return found


def _short(need: Decimal, available: Decimal) -> Decimal:
    """What ``need`` lacks beyond ``available`` (all of it once nothing is left)."""
    if need <= available or need <= 0:
        return ZERO
    return need - max(available, ZERO)


def recent_burn(ledger: Ledger, *, now: datetime, days: int = BURN_DAYS) -> Decimal:
    """Net succeeded points per IST day over the last ``days`` IST days including today,
    from the ``daily_totals`` summary (credits and creations less debits)."""
    today = ist_day(now)
    first = today - timedelta(days=days - 1)
    t = daily_totals
    signed = sa.case((t.c.kind == "debit", -t.c.amount_cents), else_=t.c.amount_cents)
    query = sa.select(sa.func.coalesce(sa.func.sum(signed), 0)).where(
        t.c.status == "SUCCEEDED", t.c.day >= first, t.c.day <= today
    )
    with ledger.reading() as conn:
        cents = int(conn.execute(query).scalar_one())
    return _money(from_cents(cents) / days)  # type: ignore[operator]


def runway_for(
    ledger: Ledger,
    pool_balance: Decimal,
    now: datetime,
    *,
    horizons: Sequence[int] = HORIZONS,
) -> Runway:
    """The runway from what the ledger knows: its recent burn, the schedules' upcoming runs
    (``services.schedules.upcoming_runs``) and the programmes' remaining budgets."""
    # Up to the end of the last IST day of the horizon.
    last = ist_day(now) + timedelta(days=max(horizons) + 1)
    until = datetime.combine(last, time(), IST).astimezone(UTC)
    runs = schedules.upcoming_runs(ledger, now=now, until=until)
    return project(
        pool_balance,
        recent_burn(ledger, now=now),
        runs,
        ledger.list_programmes(),
        now=now,
        horizons=horizons,
    )
