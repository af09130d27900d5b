"""Filtered transactions as a file for finance: CSV (UTF-8 with BOM, opens cleanly in Excel) or
XLSX (openpyxl write-only, so memory stays flat however many rows).

Rows are streamed from the database in chunks and written as they arrive. One file holds at most
``MAX_ROWS`` rows: beyond that ``ExportTooLarge`` says how many matched and asks for a narrower
filter (a spreadsheet of a million rows helps nobody, and the browser download is held in memory).

Safety: any text cell that a spreadsheet would read as a formula (starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return) is prefixed with ``'``. Amounts and balances stay
numbers. Times are India Standard Time. Nothing secret is in a ledger row, and the columns are
an explicit list, so nothing new leaks in when the table grows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from services import approvals, numbers
from services.errors import InvalidInput
from services.history import IST, HistoryFilter, count, rows_after
from services.spreadsheet import neutralise
from services.store import Ledger, LedgerRow

MAX_ROWS = 100_000
_CHUNK = 2_000


class ExportTooLarge(InvalidInput):
    """More rows match than one file may hold; nothing was produced."""

    def __init__(self, matched: int, limit: int):
        self.matched, self.limit = matched, limit
        super().__init__(
            f"{numbers.count(matched)} transactions match these filters; one export holds "
            f"at most {numbers.count(limit)}. "
            "Narrow the date range or the other filters and export in parts."
        )


def _ist(moment: datetime | None) -> datetime | None:
    return moment.astimezone(IST).replace(tzinfo=None) if moment else None


# (header, value of a row); values are str, Decimal, int, naive IST datetime or None. Kind and
# status read as on the History page ("Credit", "Succeeded", "Awaiting approval"); the EnKash type
# (CR/DR) is EnKash's own code, like the EnKash code column.
COLUMNS: list[tuple[str, Callable[[LedgerRow], Any]]] = [
    ("Created (IST)", lambda r: _ist(r.created_at)),
    ("Updated (IST)", lambda r: _ist(r.updated_at)),
    ("Reference", lambda r: r.reference),
    ("Kind", lambda r: r.kind.value.title()),
    ("EnKash type", lambda r: r.transaction_type),
    ("Status", lambda r: approvals.status_word(r)),
    ("Points", lambda r: r.amount),
    ("Balance after", lambda r: r.balance_after),
    ("Card id", lambda r: r.card_id),
    ("EnKash transaction id", lambda r: r.transaction_id),
    ("First name", lambda r: r.first_name),
    ("Email", lambda r: r.email),
    ("Mobile", lambda r: r.mobile),
    ("Reason", lambda r: r.reason),
    ("Operator", lambda r: r.operator),
    ("Approved by", lambda r: r.approved_by),
    ("Batch id", lambda r: r.batch_id),
    ("Batch row", lambda r: r.row_number),
    ("EnKash code", lambda r: r.enkash_code),
    ("EnKash message", lambda r: r.enkash_message),
    ("Programme", lambda r: r.programme),
]
HEADERS = [header for header, _ in COLUMNS]


def rows(ledger: Ledger, f: HistoryFilter, *, max_rows: int = MAX_ROWS) -> Iterator[LedgerRow]:
    """The filtered rows, newest first (as the History table shows them), streamed in chunks;
    ``ExportTooLarge`` before any row if more than ``max_rows`` match."""
    matched = count(ledger, f)
    if matched > max_rows:
        raise ExportTooLarge(matched, max_rows)
    # Chunk by chunk, each a key range after the last row of the one before: memory holds one
    # chunk, no read transaction stays open for the whole file, and rows added meanwhile (newer
    # than every cursor) neither repeat a row nor push one out.
    left, cursor = max_rows, None
    while left > 0:
        chunk = rows_after(ledger, f, cursor, min(_CHUNK, left))
        yield from chunk
        if len(chunk) < min(_CHUNK, left):
            return
        left -= len(chunk)
        cursor = (chunk[-1].created_at, chunk[-1].id)


def cells(row: LedgerRow) -> list[Any]:
    """One row's values, text neutralised, numbers left as numbers."""
    out: list[Any] = []
    for _, value_of in COLUMNS:
        value = value_of(row)
        out.append(neutralise(value))
    return out


def to_csv(ledger: Ledger, f: HistoryFilter, *, max_rows: int = MAX_ROWS) -> bytes:
    """The filtered rows as CSV bytes (UTF-8 with a BOM so Excel reads names correctly)."""
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADERS)
    for row in rows(ledger, f, max_rows=max_rows):
        writer.writerow(_csv_value(v) for v in cells(row))
    return buffer.getvalue().encode("utf-8")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return value


def to_xlsx(ledger: Ledger, f: HistoryFilter, *, max_rows: int = MAX_ROWS) -> bytes:
    """The filtered rows as an XLSX workbook: numbers as numbers, times as IST date-times."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Transactions")
    widths = {"A": 20, "B": 20, "C": 26, "G": 14, "H": 14, "I": 16, "L": 30, "N": 30}
    for letter, width in widths.items():
        sheet.column_dimensions[letter].width = width
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header = []
    for title in HEADERS:
        cell = WriteOnlyCell(sheet, value=title)
        cell.font = bold
        header.append(cell)
    sheet.append(header)
    money = {HEADERS.index("Points"), HEADERS.index("Balance after")}
    for row in rows(ledger, f, max_rows=max_rows):
        out: list[Any] = []
        for index, value in enumerate(cells(row)):
            if isinstance(value, datetime):
                cell = WriteOnlyCell(sheet, value=value)
                cell.number_format = "yyyy-mm-dd hh:mm:ss"
                out.append(cell)
            elif index in money and value is not None:
                cell = WriteOnlyCell(sheet, value=value)
                cell.number_format = numbers.XLSX_POINTS_FORMAT
                out.append(cell)
            elif isinstance(value, str):
                cell = WriteOnlyCell(sheet, value=value)
                cell.data_type = "s"  # text, even if openpyxl would guess otherwise
                out.append(cell)
            else:
                out.append(value)
        sheet.append(out)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def file_name(f: HistoryFilter, extension: str) -> str:
    """``points-desk-transactions_2025-01-01_to_2025-03-31.csv``."""
    period = f"{f.start:%Y-%m-%d}_to_{f.end:%Y-%m-%d}" if f.start and f.end else "all"
    return f"points-desk-transactions_{period}.{extension}"
