"""Cells safe to open in a spreadsheet, and small CSV/XLSX writers that use them.

Any text a spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or
a carriage return) gets a leading ``'``; numbers stay numbers. Every file Points Desk hands out
(history exports, bulk reports, rejected-row files) goes through ``neutralise``.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from services.numbers import XLSX_POINTS_FORMAT

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """A cell safe to open in a spreadsheet: text that could start a formula gets a leading '.

    So does text that already starts with quotes before such a start, so that ``restore`` gives
    back exactly the text neutralised, whatever it was.
    """
    if isinstance(value, str) and value.lstrip("'").startswith(_FORMULA_START):
        return "'" + value
    return value


def restore(text: str) -> str:
    """The text ``neutralise`` was given: a cell of a file Points Desk wrote, read back."""
    return (
        text[1:] if text.startswith("'") and text.lstrip("'").startswith(_FORMULA_START) else text
    )


def to_csv(header: list[str], rows: Iterable[list[Any]]) -> bytes:
    """CSV bytes (UTF-8 with BOM for Excel); text neutralised, numbers left as numbers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if cell is None else neutralise(cell) for cell in row])
    return codecs.BOM_UTF8 + buffer.getvalue().encode("utf-8")


def to_xlsx(header: list[str], rows: Iterable[list[Any]], sheet_title: str = "Rows") -> bytes:
    """XLSX bytes (write-only workbook); text neutralised, ``Decimal`` amounts as numbers in
    Indian grouping (``#,##,##0.00``)."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(sheet_title)
    sheet.append(header)
    for row in rows:
        out: list[Any] = []
        for cell in row:
            if isinstance(cell, Decimal):  # points: a number, shown 12,34,567.50
                number = WriteOnlyCell(sheet, value=cell)
                number.number_format = XLSX_POINTS_FORMAT
                out.append(number)
            else:
                out.append(neutralise(cell))
        sheet.append(out)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
