"""A file's rows and their programmes: which programme each row counts against, and which credits
the remaining budgets can cover (checked at preview, before anything is queued).

A row names its programme in the optional ``programme`` column, by code or name (case, spaces,
hyphens and underscores do not matter); an empty cell, or a file without the column, takes the
programme chosen for the whole file (General when none is). Credits are counted against each
programme's remaining budget in row order: a credit that no longer fits is refused with how much
is left, so the rows that are queued fit. The queueing itself reserves the budget again in the
batch's own transaction (``services/store/programmes.py``), so a preview that has gone stale
cannot overspend.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from services.bulk_files import Preview, RejectedRow, ValidRow, with_rows
from services.models import Kind
from services.numbers import points
from services.store import GENERAL_CODE, Ledger, Programme, UnknownProgramme
from services.store.programmes import programme_id_for, today_ist


@dataclass(frozen=True)
class ProgrammeTotal:
    """One programme a file touches: what its valid rows move against what it has left."""

    code: str
    name: str
    credit_rows: int
    credit_points: Decimal
    debit_rows: int
    debit_points: Decimal
    remaining: Decimal | None  # before this file; None: no limit
    refused_rows: int  # credits refused because the budget could not cover them

    @property
    def remaining_after(self) -> Decimal | None:
        return None if self.remaining is None else self.remaining - self.credit_points


def match_key(text: str) -> str:
    """How a programme's code or name is compared: case, spaces, ``-`` and ``_`` ignored."""
    return "".join(ch for ch in text.casefold() if not ch.isspace() and ch not in "-_")


def _index(everyone: list[Programme]) -> dict[str, Programme]:
    index: dict[str, Programme] = {}
    for programme in everyone:  # codes first: a code always wins over another's name
        index.setdefault(match_key(programme.code), programme)
    for programme in everyone:
        index.setdefault(match_key(programme.name), programme)
    return index


def fit_programmes(preview: Preview, ledger: Ledger, default: str | None = None) -> Preview:
    """Give each valid row its programme and refuse the rows that cannot have one: an unknown
    programme, a closed or ended one (credits), or a credit past the remaining budget."""
    if ledger.programme(GENERAL_CODE) is None:  # made by the migration; a reset may remove it
        with ledger.writing() as conn:
            programme_id_for(conn, None)
    everyone = ledger.list_programmes()
    index = _index(everyone)
    chosen = ledger.programme(default or GENERAL_CODE)
    if chosen is None:
        raise UnknownProgramme(f"There is no programme with code {default}.")
    day = today_ist()
    taken: dict[str, Decimal] = {}
    moved: dict[str, dict[str, Decimal | int]] = {}
    valid: list[ValidRow] = []
    refused: dict[int, tuple[ValidRow, dict[str, str]]] = {}
    for row in preview.valid:
        text = (row.values.get("programme") or "").strip()
        programme = index.get(match_key(text)) if text else chosen
        if programme is None:
            refused[row.number] = (
                row,
                {"programme": f'No programme has the code or name "{text}" (see the Programmes '
                 "page)"},
            )  # fmt: skip
            continue
        tally = moved.setdefault(
            programme.code,
            {"credit_rows": 0, "credit": Decimal(0), "debit_rows": 0, "debit": Decimal(0),
             "refused": 0},
        )  # fmt: skip
        amount = row.allocation.amount
        if row.allocation.kind is not Kind.DEBIT:
            why = programme.why_closed(day)
            if why is not None:
                refused[row.number] = (row, {"programme": f"{why}."})
                continue
            if programme.remaining is not None:
                earlier = taken.get(programme.code, Decimal(0))
                left = programme.remaining - earlier
                if amount > left:
                    tally["refused"] += 1
                    refused[row.number] = (
                        row,
                        {
                            "programme": f"{programme.name} has {points(max(left, Decimal(0)))} "
                            "points left"
                            + (f" after earlier rows take {points(earlier)}" if earlier else "")
                            + f"; this credit of {points(amount)} does not fit"
                        },
                    )
                    continue
            taken[programme.code] = taken.get(programme.code, Decimal(0)) + amount
            tally["credit_rows"] += 1
            tally["credit"] += amount
        else:
            tally["debit_rows"] += 1
            tally["debit"] += amount
        valid.append(
            replace(row, allocation=row.allocation.model_copy(update={"programme": programme.code}))
        )
    by_code = {p.code: p for p in everyone}
    totals_list = [
        ProgrammeTotal(
            code=code,
            name=by_code[code].name,
            credit_rows=int(t["credit_rows"]),
            credit_points=Decimal(t["credit"]),
            debit_rows=int(t["debit_rows"]),
            debit_points=Decimal(t["debit"]),
            remaining=by_code[code].remaining,
            refused_rows=int(t["refused"]),
        )
        for code, t in moved.items()
        if code in by_code
    ]
    if not refused:
        return replace(preview, valid=valid, programmes=totals_list)
    rejected = sorted(
        [*preview.rejected, *(RejectedRow(r.number, r.values, e) for r, e in refused.values())],
        key=lambda row: row.number,
    )
    return replace(with_rows(preview, valid, rejected), programmes=totals_list)
