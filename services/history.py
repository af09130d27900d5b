"""What was moved, to whom, when, and what is left: read-only queries for the History page.

Every aggregation runs in SQL (SQLAlchemy Core on the ledger's engine) and returns a handful of
rows, so the pages never load the ledger into memory: a million rows cost the database a scan,
not the browser a download. Days are India Standard Time days: a transaction at 23:30 UTC on
1 March happened on 2 March in IST and is counted there, on SQLite and PostgreSQL alike.

Money in the figures counts ``SUCCEEDED`` rows only (points that actually moved); transaction
counts and the status breakdown count every row the filter matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.models import Kind, Status
from services.store import (
    AuditEvent,
    Ledger,
    LedgerRow,
    audit_events,
    card_balances,
    card_days,
    daily_totals,
    from_cents,
    ledger_row,
    programmes,
    transactions,
)

IST = timezone(timedelta(hours=5, minutes=30), "IST")
_IST_SQLITE_SHIFT = "'+330 minutes'"  # SQLite's date() modifier for UTC -> IST
_IST_ZONE = "'Asia/Kolkata'"  # PostgreSQL's zone name; India has no daylight saving

t = transactions
_SUCCEEDED = t.c.status == Status.SUCCEEDED.value
_DEBIT = t.c.kind == Kind.DEBIT.value


class Granularity(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def ist_today(now: datetime | None = None) -> date:
    """Today's date in India."""
    return (now or datetime.now(UTC)).astimezone(IST).date()


def ist_midnight(day: date) -> datetime:
    """The UTC instant an IST day starts (00:00 IST is 18:30 UTC the day before)."""
    return datetime.combine(day, time(0), IST).astimezone(UTC)


# --- the filter ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFilter:
    """Which transactions to look at. Empty tuples and ``None`` mean "any".

    ``start`` and ``end`` are IST calendar days, both included. ``employee`` is search text
    matched against first name, email, mobile and card id. ``session_id`` keeps only the rows
    one browser session created ("this session only").
    """

    start: date | None = None
    end: date | None = None
    kinds: tuple[Kind, ...] = ()
    statuses: tuple[Status, ...] = ()
    operators: tuple[str, ...] = ()
    batch_id: str | None = None
    employee: str = ""
    session_id: str | None = None
    #: Programme codes (any of them); empty: every programme.
    programmes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.start and self.end and self.start > self.end:
            raise ValueError("The start date is after the end date")
        object.__setattr__(self, "kinds", tuple(Kind(k) for k in self.kinds))
        object.__setattr__(self, "statuses", tuple(Status(s) for s in self.statuses))
        object.__setattr__(self, "operators", tuple(self.operators))
        object.__setattr__(
            self, "programmes", tuple(c.strip().upper() for c in self.programmes if c.strip())
        )
        object.__setattr__(self, "employee", " ".join((self.employee or "").split()))

    @classmethod
    def last_days(cls, days: int, today: date | None = None, **others: Any) -> HistoryFilter:
        """The last ``days`` IST days, today included."""
        end = today or ist_today()
        return cls(start=end - timedelta(days=days - 1), end=end, **others)

    @property
    def days(self) -> int | None:
        """Length of the period in days (``None`` when open-ended)."""
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).days + 1

    def previous(self) -> HistoryFilter | None:
        """The same filter over the period of equal length just before this one."""
        if self.days is None:
            return None
        assert self.start is not None
        return replace(
            self, start=self.start - timedelta(days=self.days), end=self.start - timedelta(days=1)
        )

    def utc_bounds(self) -> tuple[datetime | None, datetime | None]:
        """``[from, to)`` in UTC covering the IST days."""
        low = ist_midnight(self.start) if self.start else None
        high = ist_midnight(self.end + timedelta(days=1)) if self.end else None
        return low, high

    def key(self) -> str:
        """A stable text form, for cache keys."""
        return repr(self)


def _employee_match(text: str) -> Any:
    pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern += "%"
    matches = [
        sa.func.lower(column).like(pattern, escape="\\")
        for column in (t.c.first_name, t.c.email, t.c.mobile, t.c.card_id)
    ]
    digits = re.sub(r"\D", "", text)
    if len(digits) >= 3 and digits != text:
        matches.append(t.c.mobile.like(f"%{digits[-10:]}%"))  # "+91 96000-98867"
    return sa.or_(*matches)


def filter_conditions(f: HistoryFilter, *, dates: bool = True) -> list[Any]:
    where: list[Any] = []
    if dates:
        low, high = f.utc_bounds()
        if low is not None:
            where.append(t.c.created_at >= low)
        if high is not None:
            where.append(t.c.created_at < high)
    if f.kinds:
        where.append(t.c.kind.in_([k.value for k in f.kinds]))
    if f.statuses:
        where.append(t.c.status.in_([s.value for s in f.statuses]))
    if f.operators:
        where.append(t.c.operator.in_(list(f.operators)))
    if f.batch_id:
        where.append(t.c.batch_id == f.batch_id)
    if f.programmes:
        where.append(
            t.c.programme_id.in_(
                sa.select(programmes.c.id).where(programmes.c.code.in_(list(f.programmes)))
            )
        )
    if f.session_id:
        where.append(t.c.session_id == f.session_id)
    if f.employee:
        where.append(_employee_match(f.employee))
    return where


# --- the daily totals (services/store/summaries.py) ----------------------------------------------

d = daily_totals


def summarised(f: HistoryFilter) -> bool:
    """Whether the daily totals can answer for ``f``: they know days, kinds, statuses,
    operators and programmes, not batches, sessions or employees (those filters read the rows)."""
    return not (f.batch_id or f.session_id or f.employee)


def _programme_ids(codes: Iterable[str]) -> Any:
    return sa.select(programmes.c.id).where(programmes.c.code.in_(list(codes)))


def summary_conditions(f: HistoryFilter, *, dates: bool = True) -> list[Any]:
    where: list[Any] = []
    if dates and f.start is not None:
        where.append(d.c.day >= f.start)
    if dates and f.end is not None:
        where.append(d.c.day <= f.end)
    if f.kinds:
        where.append(d.c.kind.in_([k.value for k in f.kinds]))
    if f.statuses:
        where.append(d.c.status.in_([s.value for s in f.statuses]))
    if f.operators:
        where.append(d.c.operator.in_(list(f.operators)))
    if f.programmes:
        where.append(d.c.programme_id.in_(_programme_ids(f.programmes)))
    return where


def _summed(condition: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, d.c.amount_cents), else_=0)), 0)


_S_SUCCEEDED = d.c.status == Status.SUCCEEDED.value
_S_DEBIT = d.c.kind == Kind.DEBIT.value
_S_CREDITED = _summed(sa.and_(_S_SUCCEEDED, ~_S_DEBIT))
_S_DEBITED = _summed(sa.and_(_S_SUCCEEDED, _S_DEBIT))
_S_ROWS = sa.func.coalesce(sa.func.sum(d.c.rows), 0)


def _distinct_cards(conn: Connection, f: HistoryFilter) -> int:
    """Cards with a succeeded row in the period: from ``card_days`` (one row per card and day)
    unless kinds, operators or programmes are chosen, else from the rows. Either way a hashed SELECT
    DISTINCT in a subquery (count(DISTINCT) sorts: 3x slower on PostgreSQL). ``card_days`` keeps
    no zero rows, so its range is read from ``pk_card_days`` alone (an index-only scan: 140 ms ->
    52 ms for 90 days at 1M rows on PostgreSQL, where testing ``rows`` read the table)."""
    if f.statuses and Status.SUCCEEDED not in f.statuses:
        return 0
    if f.kinds or f.operators or f.programmes:
        cards = sa.select(t.c.card_id).where(
            *filter_conditions(f), _SUCCEEDED, t.c.card_id.is_not(None)
        )
    else:
        c = card_days
        cards = sa.select(c.c.card_id)
        if f.start is not None:
            cards = cards.where(c.c.day >= f.start)
        if f.end is not None:
            cards = cards.where(c.c.day <= f.end)
    found = cards.distinct().subquery()
    return int(conn.execute(sa.select(sa.func.count()).select_from(found)).scalar_one())


def _sum_cents(condition: Any) -> Any:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, t.c.amount_cents), else_=0)), 0)


_CREDITED = _sum_cents(sa.and_(_SUCCEEDED, ~_DEBIT))
_DEBITED = _sum_cents(sa.and_(_SUCCEEDED, _DEBIT))


# --- totals --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodTotals:
    """Headline figures of a period: points moved (succeeded rows), people, transactions."""

    credited: Decimal = Decimal("0.00")
    debited: Decimal = Decimal("0.00")
    employees: int = 0  # distinct cards with a succeeded transaction
    transactions: int = 0  # every row, whatever its status

    @property
    def net(self) -> Decimal:
        return self.credited - self.debited


def _totals_from(row: Any) -> PeriodTotals:
    return PeriodTotals(
        credited=from_cents(int(row.credited)),  # type: ignore[arg-type]
        debited=from_cents(int(row.debited)),  # type: ignore[arg-type]
        employees=int(row.employees),
        transactions=int(row.transactions),
    )


def totals(ledger: Ledger, f: HistoryFilter) -> PeriodTotals:
    """Totals of the rows the filter matches."""
    return compare_totals(ledger, f, previous=False)[0]


def compare_totals(
    ledger: Ledger,
    f: HistoryFilter,
    previous: HistoryFilter | bool | None = True,
) -> tuple[PeriodTotals, PeriodTotals | None]:
    """Totals of ``f`` and of a comparison period (one scan when the two are adjacent).

    ``previous=True`` compares with the period of equal length just before (``None`` for an
    open-ended filter); a ``HistoryFilter`` compares with that (e.g. the same days last month);
    ``False`` skips the comparison.
    """
    other = f.previous() if previous is True else (previous or None)
    queries = [f] if other is None else [f, other]
    employees = sa.func.count(sa.distinct(sa.case((_SUCCEEDED, t.c.card_id), else_=None)))
    columns = [
        _CREDITED.label("credited"),
        _DEBITED.label("debited"),
        employees.label("employees"),
        sa.func.count().label("transactions"),
    ]
    found: list[PeriodTotals] = []
    with ledger.engine.connect() as conn:
        for each in queries:
            if summarised(each):
                sums = conn.execute(
                    sa.select(
                        _S_CREDITED.label("credited"),
                        _S_DEBITED.label("debited"),
                        _S_ROWS.label("transactions"),
                    ).where(*summary_conditions(each))
                ).one()
                people = _distinct_cards(conn, each)
                found.append(
                    PeriodTotals(
                        credited=from_cents(int(sums.credited)),  # type: ignore[arg-type]
                        debited=from_cents(int(sums.debited)),  # type: ignore[arg-type]
                        employees=int(people),
                        transactions=int(sums.transactions),
                    )
                )
                continue
            row = conn.execute(sa.select(*columns).where(*filter_conditions(each))).one()
            found.append(_totals_from(row))
    return found[0], (found[1] if other is not None else None)


# --- by programme -------------------------------------------------------------------------------

#: How the History page names rows that belong to no programme (reversals, rows written around
#: the store): ``programme_id`` 0 in the daily totals.
NO_PROGRAMME = "No programme"


@dataclass(frozen=True)
class ProgrammeTotals:
    """One programme's figures in a period (points count succeeded rows only)."""

    programme_id: int  # 0: rows without a programme
    code: str
    name: str
    credited: Decimal
    debited: Decimal
    transactions: int

    @property
    def net(self) -> Decimal:
        return self.credited - self.debited


def programme_totals(ledger: Ledger, f: HistoryFilter) -> list[ProgrammeTotals]:
    """Each programme's credited, debited and transactions for ``f``, largest credited first
    (only programmes with rows in the period): the daily totals grouped by ``programme_id``
    when they can answer, else the rows."""
    return [
        ProgrammeTotals(pid, code, name, *_money(c, b), n)
        for (pid, code, name), (c, b, n) in sorted(
            _by_programme(ledger, f, None).items(), key=lambda kv: (-kv[1][0], kv[0][2])
        )
    ]


def programme_series(
    ledger: Ledger, f: HistoryFilter, granularity: Granularity = Granularity.DAY
) -> dict[tuple[int, str, str], list[SeriesPoint]]:
    """Per programme (``(id, code, name)``) its points moved per IST bucket, every bucket of the
    period present for every programme (one query however many programmes)."""
    granularity = Granularity(granularity)
    found = _by_programme(ledger, f, granularity)
    per: dict[tuple[int, str, str], dict[date, SeriesPoint]] = {}
    for (pid, code, name, bucket), (c, b, n) in found.items():
        per.setdefault((pid, code, name), {})[bucket] = SeriesPoint(bucket, *_money(c, b), n)
    if not per:
        return {}
    buckets = {b for points in per.values() for b in points}
    first = bucket_start(f.start or min(buckets), granularity)
    last = bucket_start(f.end or max(buckets), granularity)
    zero = Decimal("0.00")
    series: dict[tuple[int, str, str], list[SeriesPoint]] = {}
    for key in sorted(per, key=lambda k: (k[0] == 0, k[2])):
        filled, day = [], first
        while day <= last:
            filled.append(per[key].get(day, SeriesPoint(day, zero, zero, 0)))
            day = _next_bucket(day, granularity)
        series[key] = filled
    return series


def _money(credited: int, debited: int) -> tuple[Decimal, Decimal]:
    return from_cents(credited), from_cents(debited)  # type: ignore[return-value]


def _by_programme(
    ledger: Ledger, f: HistoryFilter, granularity: Granularity | None
) -> dict[tuple, tuple[int, int, int]]:
    """Sums per (programme id, code, name[, bucket]): (credited, debited, transactions) cents."""
    with ledger.engine.connect() as conn:
        if summarised(f):
            keys: list[Any] = [d.c.programme_id]
            if granularity is not None:
                keys.append(d.c.day)
            query = (
                sa.select(*keys, _S_CREDITED, _S_DEBITED, _S_ROWS)
                .where(*summary_conditions(f))
                .group_by(*keys)
            )
        else:
            pid = sa.func.coalesce(t.c.programme_id, 0)
            keys = [pid]
            if granularity is not None:
                keys.append(ist_bucket(conn.dialect.name, granularity))
            query = (
                sa.select(*keys, _CREDITED, _DEBITED, sa.func.count())
                .where(*filter_conditions(f))
                .group_by(*keys)
            )
        rows = conn.execute(query).all()
        names = {
            int(i): (c, n)
            for i, c, n in conn.execute(
                sa.select(programmes.c.id, programmes.c.code, programmes.c.name)
            )
        }
    sums: dict[tuple, list[int]] = {}
    for row in rows:
        pid_value = int(row[0] or 0)
        code, name = names.get(pid_value, ("", NO_PROGRAMME))
        key: tuple = (pid_value, code, name)
        if granularity is not None:
            key += (bucket_start(_as_date(row[1]), granularity),)
        entry = sums.setdefault(key, [0, 0, 0])
        for i, value in enumerate(row[-3:]):
            entry[i] += int(value)
    return {k: (v[0], v[1], v[2]) for k, v in sums.items()}


# --- series --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesPoint:
    """Points moved in one IST day, week (starting Monday) or month (starting the 1st)."""

    bucket: date
    credited: Decimal
    debited: Decimal
    transactions: int = 0

    @property
    def net(self) -> Decimal:
        return self.credited - self.debited


def ist_bucket(dialect: str, granularity: Granularity) -> Any:
    """SQL for the IST day / week (Monday) / month (1st) a row was created in."""
    column = t.c.created_at
    if dialect == "sqlite":
        # created_at is stored as naive UTC text; shift to IST before taking the date.
        shift = sa.literal_column(_IST_SQLITE_SHIFT)
        if granularity is Granularity.DAY:
            return sa.func.date(column, shift)
        if granularity is Granularity.WEEK:
            # 'weekday 0' moves forward to Sunday (or stays), '-6 days' lands on that week's Monday.
            return sa.func.date(
                column, shift, sa.literal_column("'weekday 0'"), sa.literal_column("'-6 days'")
            )
        return sa.func.strftime(sa.literal_column("'%Y-%m-01'"), column, shift)
    local = sa.func.timezone(sa.literal_column(_IST_ZONE), column)
    unit = sa.literal_column(f"'{granularity.value}'")
    return sa.cast(sa.func.date_trunc(unit, local), sa.Date)


def bucket_start(day: date, granularity: Granularity) -> date:
    """The first day of the bucket ``day`` falls in."""
    if granularity is Granularity.WEEK:
        return day - timedelta(days=day.weekday())
    if granularity is Granularity.MONTH:
        return day.replace(day=1)
    return day


def _next_bucket(day: date, granularity: Granularity) -> date:
    if granularity is Granularity.DAY:
        return day + timedelta(days=1)
    if granularity is Granularity.WEEK:
        return day + timedelta(days=7)
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def series(
    ledger: Ledger, f: HistoryFilter, granularity: Granularity = Granularity.DAY
) -> list[SeriesPoint]:
    """Points credited and debited per IST bucket, every bucket of the period present (gaps are
    zeros, so a chart's time axis is even)."""
    granularity = Granularity(granularity)
    if summarised(f):
        found = _summary_series(ledger, f, granularity)
    else:
        found = _raw_series(ledger, f, granularity)
    if not found and (f.start is None or f.end is None):
        return []
    first = bucket_start(f.start or min(found), granularity)
    last = bucket_start(f.end or max(found), granularity)
    zero = Decimal("0.00")
    filled, day = [], first
    while day <= last:
        filled.append(found.get(day, SeriesPoint(day, zero, zero, 0)))
        day = _next_bucket(day, granularity)
    return filled


def _summary_series(
    ledger: Ledger, f: HistoryFilter, granularity: Granularity
) -> dict[date, SeriesPoint]:
    """Per IST day from the daily totals, then into weeks or months here (a few hundred rows)."""
    query = (
        sa.select(
            d.c.day,
            _S_CREDITED.label("credited"),
            _S_DEBITED.label("debited"),
            _S_ROWS.label("transactions"),
        )
        .where(*summary_conditions(f))
        .group_by(d.c.day)
    )
    sums: dict[date, list[int]] = {}
    with ledger.engine.connect() as conn:
        for row in conn.execute(query):
            bucket = bucket_start(_as_date(row.day), granularity)
            entry = sums.setdefault(bucket, [0, 0, 0])
            entry[0] += int(row.credited)
            entry[1] += int(row.debited)
            entry[2] += int(row.transactions)
    return {
        bucket: SeriesPoint(bucket, from_cents(c), from_cents(b), n)  # type: ignore[arg-type]
        for bucket, (c, b, n) in sums.items()
    }


def _raw_series(
    ledger: Ledger, f: HistoryFilter, granularity: Granularity
) -> dict[date, SeriesPoint]:
    bucket = ist_bucket(ledger.engine.dialect.name, granularity).label("bucket")
    query = (
        sa.select(
            bucket,
            _CREDITED.label("credited"),
            _DEBITED.label("debited"),
            sa.func.count().label("transactions"),
        )
        .where(*filter_conditions(f))
        .group_by(bucket)
        .order_by(bucket)
    )
    with ledger.engine.connect() as conn:
        return {
            _as_date(row.bucket): SeriesPoint(
                _as_date(row.bucket),
                from_cents(int(row.credited)),  # type: ignore[arg-type]
                from_cents(int(row.debited)),  # type: ignore[arg-type]
                int(row.transactions),
            )
            for row in conn.execute(query)
        }


def opening_net(ledger: Ledger, f: HistoryFilter) -> Decimal:
    """Net points issued before the period starts (same filters otherwise); 0 if open-ended."""
    low, _ = f.utc_bounds()
    if low is None:
        return Decimal("0.00")
    if summarised(f):
        assert f.start is not None
        query = sa.select((_S_CREDITED - _S_DEBITED).label("net")).where(
            *summary_conditions(f, dates=False), d.c.day < f.start
        )
    else:
        query = sa.select((_CREDITED - _DEBITED).label("net")).where(
            *filter_conditions(f, dates=False), t.c.created_at < low
        )
    with ledger.engine.connect() as conn:
        return from_cents(int(conn.execute(query).scalar_one()))  # type: ignore[return-value]


def cumulative(points: Iterable[SeriesPoint], opening: Decimal) -> list[tuple[date, Decimal]]:
    """Running net issued at the end of each bucket, starting from ``opening``."""
    running, out = opening, []
    for point in points:
        running += point.net
        out.append((point.bucket, running))
    return out


# --- balances ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardBalance:
    card_id: str
    name: str
    balance: Decimal


@dataclass(frozen=True)
class Balances:
    """What is left on the cards: the top ``len(top)`` cards and the rest as "Others"."""

    top: list[CardBalance] = field(default_factory=list)
    others_count: int = 0
    others_total: Decimal = Decimal("0.00")
    unknown: int = 0  # cards whose latest succeeded row carries no balance (settled by lookup)

    @property
    def total(self) -> Decimal:
        return sum((c.balance for c in self.top), Decimal("0.00")) + self.others_total

    @property
    def cards(self) -> int:
        return len(self.top) + self.others_count


def _not_an_index_key(column: Any, ledger: Ledger) -> Any:
    """``column``, written so that SQLite cannot pick an index by it.

    SQLite plans without statistics until ANALYZE has run, and a new ledger has none. For a
    card's latest succeeded row it then picks the (status, updated_at) index, which walks every
    succeeded row newest first until one is the card's: 1.1 s instead of 0.01 s for the
    balances of 1,000 cards among 10,000 rows. ``status || ''`` is the same value but no index
    key, so each card is one seek of its own rows. PostgreSQL keeps its statistics up to date
    and is asked as written.
    """
    return column.op("||")("") if ledger.engine.dialect.name == "sqlite" else column


def balances(ledger: Ledger, f: HistoryFilter | None = None, top: int = 10) -> Balances:
    """Each card's known balance (the ``balance_after`` of its latest succeeded row, as
    ``Ledger.known_balance`` defines it) at the end of the period, largest first.

    Only the period's end and the employee search apply: a balance belongs to a card, not to a
    kind, an operator or a batch.
    """
    f = f or HistoryFilter()
    _, high = f.utc_bounds()
    if balances_summarised(f):
        return _current_balances(ledger, top)
    inner = t.alias("latest")
    cards = sa.select(t.c.card_id).where(_SUCCEEDED, t.c.card_id.is_not(None)).distinct()
    if high is not None:
        cards = cards.where(t.c.updated_at < high)
    if f.employee:
        cards = cards.where(_employee_match(f.employee))
    cards_sub = cards.subquery("cards")
    # One index seek per card (ix_transactions_card_latest) rather than sorting every row.
    query = sa.select(
        cards_sub.c.card_id,
        sa.select(inner.c.balance_after_cents)
        .where(
            inner.c.card_id == cards_sub.c.card_id,
            _not_an_index_key(inner.c.status, ledger) == Status.SUCCEEDED.value,
            *([inner.c.updated_at < high] if high is not None else []),
        )
        .order_by(inner.c.updated_at.desc(), inner.c.id.desc())
        .limit(1)
        .scalar_subquery()
        .label("cents"),
    )
    with ledger.engine.connect() as conn:
        found = conn.execute(query).all()
        known = sorted(
            ((card, int(cents)) for card, cents in found if cents is not None),
            key=lambda pair: (-pair[1], pair[0]),
        )
        unknown = len(found) - len(known)
        leaders = known[:top]
        names = _names(conn, [card for card, _ in leaders])
    rest = known[top:]
    return Balances(
        top=[
            CardBalance(card, names.get(card) or card, from_cents(cents))  # type: ignore[arg-type]
            for card, cents in leaders
        ],
        others_count=len(rest),
        others_total=from_cents(sum(cents for _, cents in rest)),  # type: ignore[arg-type]
        unknown=unknown,
    )


def balances_summarised(f: HistoryFilter) -> bool:
    """Whether ``card_balances`` can answer: no employee search, and the period ends now or
    later (a balance at an earlier end reads the rows)."""
    _, high = f.utc_bounds()
    return not f.employee and (high is None or high > datetime.now(UTC))


def _current_balances(ledger: Ledger, top: int) -> Balances:
    """Balances now, from ``card_balances`` (each card's latest succeeded row, kept by the store
    with every write): a few small queries however many rows the ledger holds."""
    b = card_balances
    known = b.c.balance_after_cents.is_not(None)
    with ledger.engine.connect() as conn:
        leaders = [
            (card, int(cents))
            for card, cents in conn.execute(
                sa.select(b.c.card_id, b.c.balance_after_cents)
                .where(known)
                .order_by(b.c.balance_after_cents.desc(), b.c.card_id)
                .limit(top)
            )
        ]
        sums = conn.execute(
            sa.select(
                sa.func.count(b.c.balance_after_cents).label("known"),
                sa.func.coalesce(sa.func.sum(b.c.balance_after_cents), 0).label("cents"),
                sa.func.count().label("cards"),
            )
        ).one()
        names = _names(conn, [card for card, _ in leaders])
    rest_cents = int(sums.cents) - sum(cents for _, cents in leaders)
    return Balances(
        top=[
            CardBalance(card, names.get(card) or card, from_cents(cents))  # type: ignore[arg-type]
            for card, cents in leaders
        ],
        others_count=int(sums.known) - len(leaders),
        others_total=from_cents(rest_cents),  # type: ignore[arg-type]
        unknown=int(sums.cards) - int(sums.known),
    )


def _names(conn: Connection, cards: list[str]) -> dict[str, str]:
    """Each card's latest first name (or email) from its succeeded rows, as the pickers do."""
    if not cards:
        return {}
    found = conn.execute(
        sa.select(t.c.card_id, t.c.first_name, t.c.email)
        .where(
            t.c.card_id.in_(cards),
            _SUCCEEDED,
            sa.or_(t.c.first_name.is_not(None), t.c.email.is_not(None)),
        )
        .order_by(t.c.updated_at, t.c.id)
    )
    names: dict[str, str] = {}
    for card, first_name, email in found:
        names[card] = first_name or email
    return names


# --- statuses, pages, detail, choices ------------------------------------------------------------


@dataclass(frozen=True)
class StatusCount:
    status: Status
    transactions: int
    amount: Decimal


def status_breakdown(ledger: Ledger, f: HistoryFilter) -> list[StatusCount]:
    """How many of the filtered rows are in each status, and their points (every status listed)."""
    if summarised(f):
        query = (
            sa.select(d.c.status, _S_ROWS, sa.func.coalesce(sa.func.sum(d.c.amount_cents), 0))
            .where(*summary_conditions(f))
            .group_by(d.c.status)
        )
    else:
        query = (
            sa.select(
                t.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(t.c.amount_cents), 0)
            )
            .where(*filter_conditions(f))
            .group_by(t.c.status)
        )
    with ledger.engine.connect() as conn:
        found = {Status(s): (int(n), int(c)) for s, n, c in conn.execute(query)}
    return [
        StatusCount(s, found.get(s, (0, 0))[0], from_cents(found.get(s, (0, 0))[1]))  # type: ignore[arg-type]
        for s in Status
    ]


#: Where a page of the table starts: the (created_at, id) of the row just before it (newer).
Cursor = tuple[datetime, int]


@dataclass(frozen=True)
class Page:
    rows: list[LedgerRow]
    total: int
    number: int  # 1-based
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def next_cursor(self) -> Cursor | None:
        """Where the next (older) page starts; ``None`` on the last page."""
        if not self.rows or self.number >= self.pages:
            return None
        last = self.rows[-1]
        return (last.created_at, last.id)


def older_than(cursor: Cursor) -> Any:
    """Rows after ``cursor`` in the table's order (newest first): a key range, not an offset."""
    created, row_id = cursor
    # created_at <= c first, so the database walks the created_at index from the cursor on.
    return sa.and_(
        t.c.created_at <= created,
        sa.or_(t.c.created_at < created, sa.and_(t.c.created_at == created, t.c.id < row_id)),
    )


_NEWEST_FIRST = (t.c.created_at.desc(), t.c.id.desc())


def rows_after(
    ledger: Ledger, f: HistoryFilter, cursor: Cursor | None, size: int
) -> list[LedgerRow]:
    """The ``size`` filtered rows after ``cursor`` (from the newest when ``None``), newest
    first. Rows added meanwhile are newer than any cursor, so walking on from a cursor never
    shows a row twice or skips one."""
    query = (
        sa.select(t, programmes.c.code.label("programme_code"))
        .outerjoin(programmes, programmes.c.id == t.c.programme_id)
        .where(*filter_conditions(f))
        .order_by(*_NEWEST_FIRST)
        .limit(size)
    )
    if cursor is not None:
        query = query.where(older_than(cursor))
    with ledger.engine.connect() as conn:
        return [ledger_row(m) for m in conn.execute(query).mappings()]


def _cursor_at(ledger: Ledger, f: HistoryFilter, skipped: int) -> Cursor | None:
    """The key of the ``skipped``-th row (a page jumped to without its cursor): the offset walks
    the created_at index, the page itself is then a key range."""
    query = (
        sa.select(t.c.created_at, t.c.id)
        .where(*filter_conditions(f))
        .order_by(*_NEWEST_FIRST)
        .limit(1)
        .offset(skipped - 1)
    )
    with ledger.engine.connect() as conn:
        found = conn.execute(query).first()
    return (found[0], found[1]) if found else None


def count(ledger: Ledger, f: HistoryFilter) -> int:
    """How many rows the filter matches."""
    with ledger.engine.connect() as conn:
        if summarised(f):
            query = sa.select(_S_ROWS).where(*summary_conditions(f))
        else:
            query = sa.select(sa.func.count()).select_from(t).where(*filter_conditions(f))
        return int(conn.execute(query).scalar_one())


def page(
    ledger: Ledger,
    f: HistoryFilter,
    number: int = 1,
    size: int = 50,
    *,
    cursor: Cursor | None = None,
) -> Page:
    """One page of the filtered rows, newest first, with the total count.

    ``cursor`` is where page ``number`` starts (the previous page's ``next_cursor``): the page is
    then one key range, as fast at page 10,000 as at page 1. Without it a page beyond the first
    finds its start by counting keys along the created_at index first.
    """
    total = count(ledger, f)
    pages = max(1, -(-total // size))
    number = min(max(1, int(number)), pages)
    if number > 1 and cursor is None:
        cursor = _cursor_at(ledger, f, (number - 1) * size)
    rows = rows_after(ledger, f, cursor if number > 1 else None, size)
    return Page(rows, total, number, size)


def detail(ledger: Ledger, reference: str) -> tuple[LedgerRow, list[AuditEvent]] | None:
    """One transaction and its audit trail, oldest event first; ``None`` if unknown."""
    row = ledger.get(reference)
    if row is None:
        return None
    return row, ledger.audit_trail(reference)


def _distinct(ledger: Ledger, column: str, limit: int) -> list[str]:
    # A loose index scan: one index seek per distinct value instead of reading every row.
    if column not in ("operator", "batch_id"):
        raise ValueError(column)
    sql = sa.text(
        f"WITH RECURSIVE v(x) AS ("  # noqa: S608 (column is one of two constants)
        f" SELECT MIN({column}) FROM transactions"
        f" UNION ALL SELECT (SELECT MIN({column}) FROM transactions WHERE {column} > v.x)"
        f" FROM v WHERE v.x IS NOT NULL)"
        f" SELECT x FROM v WHERE x IS NOT NULL LIMIT :limit"
    )
    with ledger.engine.connect() as conn:
        return [str(x) for x in conn.execute(sql, {"limit": limit}).scalars()]


def operators(ledger: Ledger, limit: int = 500) -> list[str]:
    """Every operator who has a row, alphabetically (for the filter's choices)."""
    return _distinct(ledger, "operator", limit)


def batch_ids(ledger: Ledger, limit: int = 500) -> list[str]:
    """Batch ids, alphabetically (for the filter's choices)."""
    return _distinct(ledger, "batch_id", limit)


def change_marker(ledger: Ledger) -> tuple[Any, ...]:
    """Changes whenever the ledger does: every write appends an audit event, and the newest
    event's id and time identify the state (a reset then new rows reuse ids, not times)."""
    with ledger.engine.connect() as conn:
        newest = conn.execute(
            sa.select(audit_events.c.id, audit_events.c.at)
            .order_by(audit_events.c.id.desc())
            .limit(1)
        ).first()
        last_row = conn.execute(sa.select(sa.func.max(t.c.id))).scalar()
    return (str(ledger.engine.url), tuple(newest) if newest else None, last_row)
