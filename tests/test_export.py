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
    second, first = lines  # newest first
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


def test_exports_read_newest_first_in_the_words_of_the_page(ledger: Ledger):
    put(ledger, datetime(2025, 3, 1, 6, tzinfo=UTC), "100", kind="credit")
    put(ledger, datetime(2025, 3, 2, 6, tzinfo=UTC), "40", kind="debit")
    lines = read_csv(export.to_csv(ledger, HistoryFilter()))
    assert [line["Points"] for line in lines] == ["40.00", "100.00"]  # as the History table
    assert [line["Kind"] for line in lines] == ["Debit", "Credit"]
    assert {line["Status"] for line in lines} == {"Succeeded"}
    sheet = load_workbook(io.BytesIO(export.to_xlsx(ledger, HistoryFilter()))).active
    header = [cell.value for cell in sheet[1]]
    assert [row[header.index("Kind")].value for row in sheet.iter_rows(min_row=2)] == [
        "Debit",
        "Credit",
    ]


def test_xlsx_points_use_indian_grouping(ledger: Ledger):
    put(ledger, datetime(2025, 3, 1, 6, tzinfo=UTC), "1234567.50", balance="1234567.50")
    sheet = load_workbook(io.BytesIO(export.to_xlsx(ledger, HistoryFilter()))).active
    header = [cell.value for cell in sheet[1]]
    for column in ("Points", "Balance after"):
        assert sheet[2][header.index(column)].number_format == "#,##,##0.00"


def test_bulk_reports_use_indian_grouping_for_points():
    from services.spreadsheet import to_xlsx

    data = to_xlsx(["card", "amount"], [["C1", Decimal("1234567.50")], ["=x", 3]])
    sheet = load_workbook(io.BytesIO(data)).active
    assert sheet["B2"].value == pytest.approx(1234567.5)
    assert sheet["B2"].number_format == "#,##,##0.00"
    assert sheet["A3"].value == "'=x"


@pytest.mark.parametrize(
    ("value", "decimals", "text"),
    [
        (Decimal("4538338.50"), True, "45,38,338.50"),
        (Decimal("1860.50"), True, "1,860.50"),
        (Decimal("-1234567.5"), True, "-12,34,567.50"),
        (Decimal("100000"), False, "1,00,000"),
        (None, True, "—"),
    ],
)
def test_points_read_in_lakh_and_crore(value, decimals, text):
    from services.numbers import points

    assert points(value, decimals=decimals) == text
