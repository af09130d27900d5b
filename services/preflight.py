"""Pre-flight: what sending a file (or a schedule's run) will take, before it is confirmed.

For a set of planned rows: the expected duration at the measured send rate, the pool and each
programme's remaining budget after it, and which rows need a second person's approval. The
batch waits by the rules ``bulk.start_batch`` applies once it is queued: its total, any debit
above its programme's debit threshold (the global one where the programme sets none), and,
when the operator is known, credits past their monthly limit in a programme.

**The send rate.** Measured from the ledger: for each of the last ``RATE_BATCHES`` batches that
finished in the last ``RATE_DAYS`` days with at least ``RATE_MIN_ROWS`` settled rows, its rows
divided by the time from its first to its last outcome (pauses make a batch look slower, never
faster), per row sent at a time (``concurrency``); the median of those per-slot rates, times the
concurrency asked for, capped by the rate limit. With no such batch, it is an *estimate*:
``concurrency / median EnKash latency`` of the last ``RATE_DAYS`` days' exchanges (or
``ASSUMED_LATENCY`` when there are none), and it says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from services.allocations import debit_needs_approval, debit_threshold
from services.approvals import (
    DebitOverLimit,
    OperatorMonthOver,
    batch_reasons,
    operator_month,
)
from services.config import Settings
from services.models import BatchState, Kind, Status
from services.store import Ledger, Programme, batches, exchanges, transactions
from services.store.programmes import month_of
from services.store.schema import GENERAL_CODE

RATE_BATCHES = 5
RATE_DAYS = 30
RATE_MIN_ROWS = 20
ASSUMED_LATENCY = 0.25  # seconds per EnKash call when the ledger has measured none


@dataclass(frozen=True)
class PlannedRow:
    """One row about to be sent: its number (in the file), what it does, how much, where from."""

    number: int
    kind: Kind
    amount: Decimal
    programme_code: str | None = None


@dataclass(frozen=True)
class SendRate:
    """Rows per second expected, and whether it was measured or estimated (with why)."""

    rows_per_second: float
    measured: bool
    note: str


@dataclass(frozen=True)
class ProgrammeAfter:
    code: str
    name: str
    remaining: Decimal | None  # before; None: no limit
    credits: Decimal
    debits: Decimal

    @property
    def remaining_after(self) -> Decimal | None:
        return None if self.remaining is None else self.remaining - self.credits


@dataclass(frozen=True)
class Preflight:
    rows: int
    credit_points: Decimal
    debit_points: Decimal
    rate: SendRate
    expected_seconds: float
    pool_before: Decimal | None  # None: EnKash did not say
    programmes: list[ProgrammeAfter]
    batch_reasons: list[str]  # why the whole batch waits for approval (empty: it does not)
    approval_rows: list[int]  # rows that are debits above their debit limit

    @property
    def net_points(self) -> Decimal:
        return self.credit_points - self.debit_points

    @property
    def pool_after(self) -> Decimal | None:
        """The pool once every row went through (credits leave it, debits come back)."""
        return None if self.pool_before is None else self.pool_before - self.net_points

    @property
    def rows_needing_approval(self) -> int:
        """Every row when the batch waits; otherwise the debits above their limit."""
        return self.rows if self.batch_reasons else len(self.approval_rows)


def _per_slot_rates(ledger: Ledger, now: datetime) -> list[float]:
    b, t = batches, transactions
    recent = (
        sa.select(b.c.batch_id, b.c.concurrency)
        .where(
            b.c.state == BatchState.FINISHED.value,
            b.c.finished_at >= now - timedelta(days=RATE_DAYS),
        )
        .order_by(b.c.finished_at.desc())
        .limit(RATE_BATCHES * 3)
    )
    settled = (Status.SUCCEEDED.value, Status.FAILED.value)
    rates = []
    with ledger.reading() as conn:
        found = list(conn.execute(recent))
        for batch_id, concurrency in found:
            n, first, last = conn.execute(
                sa.select(
                    sa.func.count(), sa.func.min(t.c.updated_at), sa.func.max(t.c.updated_at)
                ).where(t.c.batch_id == batch_id, t.c.status.in_(settled))
            ).one()
            if n < RATE_MIN_ROWS or first is None:
                continue
            span = (_aware(last) - _aware(first)).total_seconds()
            if span <= 0:
                continue
            rates.append((n - 1) / span / max(1, concurrency))
            if len(rates) == RATE_BATCHES:
                break
    return rates


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def send_rate(
    ledger: Ledger, *, concurrency: int, rate_limit: float | None, now: datetime
) -> SendRate:
    """The rows per second a batch sent ``concurrency`` at a time can expect (module docstring)."""
    concurrency = max(1, concurrency)
    rates = _per_slot_rates(ledger, now)
    if rates:
        rate = statistics.median(rates) * concurrency
        measured = True
        note = (
            f"measured: {len(rates)} recent batch{'es' if len(rates) != 1 else ''}, "
            f"{statistics.median(rates):.1f} rows a second per row sent at a time"
        )
    else:
        e = exchanges
        with ledger.reading() as conn:
            latencies = [
                ms
                for (ms,) in conn.execute(
                    sa.select(e.c.latency_ms)
                    .where(e.c.at >= now - timedelta(days=RATE_DAYS), e.c.latency_ms.is_not(None))
                    .order_by(e.c.at.desc())
                    .limit(1000)
                )
            ]
        latency = statistics.median(latencies) / 1000 if latencies else ASSUMED_LATENCY
        latency = max(latency, 0.001)
        rate = concurrency / latency
        measured = False
        note = (
            f"estimate: {concurrency} at a time at {latency * 1000:.0f} ms per EnKash call "
            + ("(the median of recent calls)" if latencies else "(assumed: no call measured yet)")
            + "; no finished batch to measure yet"
        )
    if rate_limit:
        if rate > rate_limit:
            note += f"; capped at the batch's {rate_limit:g} rows a second"
        rate = min(rate, rate_limit)
    return SendRate(rate, measured, note)


def preflight(
    ledger: Ledger,
    settings: Settings,
    rows: Sequence[PlannedRow],
    *,
    pool_balance: Decimal | None,
    concurrency: int,
    rate_limit: float | None = None,
    programmes: Iterable[Programme] | None = None,
    now: datetime | None = None,
    operator: str | None = None,
) -> Preflight:
    """What sending ``rows`` will take: duration, pool and budgets after, approvals needed.
    ``operator``: who will send them, so credits past their monthly limit in a programme are
    counted as the batch will be (without it that rule is not looked at)."""
    now = now or datetime.now(UTC)
    known = {p.code: p for p in (ledger.list_programmes() if programmes is None else programmes)}
    credits = sum((r.amount for r in rows if r.kind is not Kind.DEBIT), Decimal(0))
    debits = sum((r.amount for r in rows if r.kind is Kind.DEBIT), Decimal(0))
    per_programme: dict[str, list[Decimal]] = {}
    approval_rows = []
    debit_over: DebitOverLimit | None = None
    for r in rows:
        code = (r.programme_code or GENERAL_CODE).strip().upper()
        moved = per_programme.setdefault(code, [Decimal(0), Decimal(0)])
        if r.kind is Kind.DEBIT:
            moved[1] += r.amount
            programme = known.get(code)
            override = programme.debit_threshold if programme is not None else None
            if debit_needs_approval(r.amount, settings, override):
                approval_rows.append(r.number)
                if debit_over is None or r.amount > debit_over.amount:
                    debit_over = DebitOverLimit(
                        r.number,
                        r.amount,
                        override if override is not None else debit_threshold(settings),
                        programme.name if programme is not None and override is not None else None,
                    )
        else:
            moved[0] += r.amount
    months_over = []
    for code, (credit, _) in sorted(per_programme.items()):
        programme = known.get(code)
        if operator is None or not credit or programme is None:
            continue
        limit = programme.monthly_operator_limit
        if limit is None:
            continue
        month = operator_month(ledger, programme.id, operator, month_of(now)) + credit
        if month > limit:
            months_over.append(OperatorMonthOver(operator, programme.name, limit, credit, month))
    after = [
        ProgrammeAfter(
            code,
            known[code].name if code in known else code,
            known[code].remaining if code in known else None,
            credit,
            debit,
        )
        for code, (credit, debit) in sorted(per_programme.items())
    ]
    rate = send_rate(ledger, concurrency=concurrency, rate_limit=rate_limit, now=now)
    return Preflight(
        rows=len(rows),
        credit_points=credits,
        debit_points=debits,
        rate=rate,
        expected_seconds=len(rows) / rate.rows_per_second if rows else 0.0,
        pool_before=pool_balance,
        programmes=after,
        batch_reasons=batch_reasons(
            credits + debits, settings, debit_over=debit_over, months_over=months_over
        ),
        approval_rows=sorted(approval_rows),
    )


def duration_words(seconds: float) -> str:
    """``about 2 min 5 s``: a duration for people, rounded up to the second."""
    whole = max(1, int(seconds + 0.999))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if minutes or hours:
        parts.append(f"{minutes} min")
    if not hours:
        parts.append(f"{secs} s")
    return "about " + " ".join(parts)
