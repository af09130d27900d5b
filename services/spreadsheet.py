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
from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """A cell safe to open in a spreadsheet: text that could start a formula gets a leading '."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(header: list[str], rows: Iterable[list[Any]]) -> bytes:
    """CSV bytes (UTF-8 with BOM for Excel); text neutralised, numbers left as numbers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if cell is None else neutralise(cell) for cell in row])
    return codecs.BOM_UTF8 + buffer.getvalue().encode("utf-8")


def to_xlsx(header: list[str], rows: Iterable[list[Any]], sheet_title: str = "Rows") -> bytes:
    """XLSX bytes (write-only workbook); text neutralised, ``Decimal`` amounts as numbers."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(sheet_title)
    sheet.append(header)
    for row in rows:
        sheet.append([neutralise(cell) for cell in row])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
