"""Exports for finance: formulas neutralised, amounts numeric, IST times, filters, the size cap."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook

from services import export
from services.history import HistoryFilter
from services.models import Kind
from services.store import Ledger
from tests.test_history import put


@pytest.fixture
def ledger(tmp_path: Path):
    opened = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield opened
    opened.dispose()


@pytest.mark.parametrize(
    "text",
    ["=1+1", "+91 96000", "-5", "@SUM(A1)", "\tTAB", "\rCR", '=HYPERLINK("http://x","y")'],
)
def test_text_that_a_spreadsheet_would_run_is_prefixed(text):
    assert export.neutralise(text) == "'" + text


@pytest.mark.parametrize("text", ["Asha", "9600098867", "a=b", " =x", ""])
def test_ordinary_text_is_left_alone(text):
    assert export.neutralise(text) == text


def read_csv(data: bytes) -> list[dict[str, str]]:
    assert data.startswith("\ufeff".encode())  # Excel reads UTF-8 names correctly with a BOM
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))


def test_csv_has_ist_times_numeric_amounts_and_no_runnable_cells(ledger: Ledger):
    # 20:00 UTC on 1 March is 01:30 IST on 2 March.
    when = datetime(2025, 3, 1, 20, 0, tzinfo=UTC)
    put(ledger, when, "1234.50", balance="1234.50", name="Ānand", reason="-10 for late entry")
    put(ledger, when, "10", kind="debit", reason="@fix", operator="=cmd|' /C calc'!A0")
    lines = read_csv(export.to_csv(ledger, HistoryFilter()))
    assert [line["Created (IST)"] for line in lines] == ["2025-03-02 01:30:00"] * 2
    first, second = lines
    assert first["Points"] == "1234.50" and first["Balance after"] == "1234.50"
    assert Decimal(first["Points"]) == Decimal("1234.50")
    assert first["First name"] == "Ānand"
    assert first["Reason"] == "'-10 for late entry"
    assert second["Reason"] == "'@fix"
    assert second["Operator"].startswith("'=")
    for line in lines:
        for value in line.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert "Session" not in ",".join(lines[0])  # internal ids stay out


def test_the_export_follows_the_filter(ledger: Ledger):
    put(ledger, datetime(2025, 3, 1, 6, tzinfo=UTC), "100", kind="credit")
    put(ledger, datetime(2025, 3, 2, 6, tzinfo=UTC), "40", kind="debit")
    put(ledger, datetime(2025, 4, 2, 6, tzinfo=UTC), "60", kind="debit")
    march_debits = HistoryFilter(date(2025, 3, 1), date(2025, 3, 31), kinds=(Kind.DEBIT,))
    lines = read_csv(export.to_csv(ledger, march_debits))
    assert [line["Points"] for line in lines] == ["40.00"]
    assert export.file_name(march_debits, "csv") == (
        "points-desk-transactions_2025-03-01_to_2025-03-31.csv"
    )


def test_xlsx_keeps_numbers_as_numbers_and_times_as_ist(ledger: Ledger):
    put(ledger, datetime(2025, 3, 1, 20, 0, tzinfo=UTC), "1234.50", balance="1500", reason="=2+2")
    sheet = load_workbook(io.BytesIO(export.to_xlsx(ledger, HistoryFilter()))).active
    header = [cell.value for cell in sheet[1]]
    row = dict(zip(header, [cell.value for cell in sheet[2]], strict=True))
    assert row["Points"] == pytest.approx(1234.5) and isinstance(row["Points"], (int, float))
    assert row["Balance after"] == 1500
    assert row["Created (IST)"] == datetime(2025, 3, 2, 1, 30)
    assert row["Reason"] == "'=2+2"
    assert sheet[2][header.index("Reason")].data_type == "s"  # text, not a formula


def test_more_rows_than_one_file_holds_is_refused_with_the_count(ledger: Ledger):
    for hour in range(4):
        put(ledger, datetime(2025, 3, 1, hour, tzinfo=UTC), "1")
    with pytest.raises(export.ExportTooLarge, match=r"4 transactions match.*at most 3"):
        export.to_csv(ledger, HistoryFilter(), max_rows=3)
    assert len(read_csv(export.to_csv(ledger, HistoryFilter(), max_rows=4))) == 4
