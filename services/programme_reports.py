"""Programme reports: burn rate, projected exhaustion and burn-down for the Overview, and the
programme statement for finance (CSV and XLSX).

Burn is what a programme used for good per IST day (succeeded credits less succeeded debits, the
same figures as History), averaged over the last 30 days. The projection divides what is left by
that rate; it is ``None`` when nothing was used or the programme has no budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from services import history
from services.errors import InvalidInput
from services.export import MAX_ROWS
from services.history import IST, Granularity, HistoryFilter, filter_conditions
from services.models import Kind, Status
from services.numbers import points
from services.spreadsheet import to_csv, to_xlsx
from services.store import Ledger, LedgerRow, Programme, UnknownProgramme, ledger_row
from services.store.schema import transactions

#: Days the burn rate is averaged over.
BURN_DAYS = 30


@dataclass(frozen=True)
class ProgrammeReport:
    """One programme on the Overview."""

    programme: Programme
    burn_per_day: Decimal  # net used per IST day over the last ``BURN_DAYS`` days
    exhausts_on: date | None  # when the remaining budget runs out at that rate
    burn_down: list[tuple[date, Decimal | None]]  # remaining at the end of each IST day


def report(
    ledger: Ledger,
    programme: Programme,
    *,
    today: date | None = None,
    days: list[history.SeriesPoint] | None = None,
) -> ProgrammeReport:
    """Burn rate, projected exhaustion date and the last ``BURN_DAYS`` days of remaining budget.
    ``days``: the programme's last ``BURN_DAYS`` IST days, when the caller read them already."""
    today = today or history.ist_today()
    if days is None:
        f = HistoryFilter.last_days(BURN_DAYS, today, programmes=(programme.code,))
        days = history.series(ledger, f, Granularity.DAY)
    used = [(p.bucket, p.credited - p.debited) for p in days]
    burn = (sum((u for _, u in used), Decimal(0)) / BURN_DAYS).quantize(Decimal("0.01"))
    remaining = programme.remaining
    exhausts_on = None
    if remaining is not None and burn > 0:
        exhausts_on = today + timedelta(days=max(0, math.ceil(remaining / burn)))
    # Remaining at the end of each day: today's remaining, plus what later days used.
    burn_down: list[tuple[date, Decimal | None]] = []
    later = Decimal(0)
    for day, amount in reversed(used):
        burn_down.append((day, None if remaining is None else remaining + later))
        later += amount
    burn_down.reverse()
    return ProgrammeReport(programme, burn, exhausts_on, burn_down)


def active_reports(ledger: Ledger, *, today: date | None = None) -> list[ProgrammeReport]:
    """A report per active programme (General first): every programme's last ``BURN_DAYS`` days
    in ONE query of the daily totals (``history.programme_series``), not one per programme."""
    today = today or history.ist_today()
    active = ledger.list_programmes(["active"])
    f = HistoryFilter.last_days(BURN_DAYS, today, programmes=tuple(p.code for p in active))
    found = {
        key[0]: days for key, days in history.programme_series(ledger, f, Granularity.DAY).items()
    }
    assert f.start is not None
    zero = Decimal("0.00")
    quiet = [
        history.SeriesPoint(f.start + timedelta(days=i), zero, zero, 0) for i in range(BURN_DAYS)
    ]
    return [report(ledger, p, today=today, days=found.get(p.id, quiet)) for p in active]


# --- the statement ------------------------------------------------------------------------------

STATEMENT_HEADER = [
    "Date (IST)",
    "Reference",
    "Kind",
    "Status",
    "Points",
    "Card id",
    "Employee",
    "Reason",
    "Maker",
    "Checker",
    "Batch id",
    "Remaining after",
]


def _movements(ledger: Ledger, code: str) -> Iterator[LedgerRow]:
    """The programme's movements, oldest first (``InvalidInput`` past the export limit)."""
    f = HistoryFilter(programmes=(code,))
    matched = history.count(ledger, f)
    if matched > MAX_ROWS:
        raise InvalidInput(
            f"{matched:,} movements belong to {code}; a statement holds at most {MAX_ROWS:,}."
        )
    t = transactions
    query = sa.select(t).where(*filter_conditions(f)).order_by(t.c.created_at, t.c.id)
    with ledger.reading() as conn:
        found = [ledger_row(m) for m in conn.execute(query).mappings()]
    yield from found


def statement_rows(ledger: Ledger, code: str) -> list[list[Any]]:
    """Opening budget, every movement with its maker and checker, closing remainder."""
    programme = ledger.programme(code)
    if programme is None:
        raise UnknownProgramme(f"There is no programme with code {code}.")
    budget = programme.budget
    opening = "no limit" if budget is None else budget
    rows: list[list[Any]] = [
        ["Opening budget", programme.code, programme.name, "", opening, *[""] * 7]
    ]
    spent = Decimal(0)
    for row in _movements(ledger, programme.code):
        succeeded = row.status is Status.SUCCEEDED
        if succeeded:
            spent += -row.amount if row.kind is Kind.DEBIT else row.amount
        rows.append(
            [
                row.created_at.astimezone(IST).strftime("%d %b %Y %H:%M"),
                row.reference,
                row.kind.value.title(),
                row.status.value.title(),
                row.amount,
                row.card_id or "",
                row.first_name or row.email or "",
                row.reason,
                row.operator,
                row.approved_by or "",
                row.batch_id or "",
                "" if budget is None or not succeeded else budget - spent,
            ]
        )
    remaining = programme.remaining
    rows.append(
        [
            "Closing remainder",
            programme.code,
            f"used {points(programme.used)}, reserved (in flight) {points(programme.reserved)}",
            "",
            "no limit" if remaining is None else remaining,
            *[""] * 7,
        ]
    )
    return rows


def statement_csv(ledger: Ledger, code: str) -> bytes:
    return to_csv(STATEMENT_HEADER, statement_rows(ledger, code))


def statement_xlsx(ledger: Ledger, code: str) -> bytes:
    return to_xlsx(STATEMENT_HEADER, statement_rows(ledger, code), sheet_title="Statement")


def statement_name(code: str, extension: str, *, now: datetime | None = None) -> str:
    moment = (now or datetime.now(IST)).astimezone(IST)
    return f"programme-{code.lower()}-statement-{moment:%Y%m%d}.{extension}"
