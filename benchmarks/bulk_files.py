"""Reading and checking bulk files: how long a 50,000-row upload takes before the preview shows.

    .venv/bin/python -m benchmarks.bulk_files [--rows 50000] [--repeat 3]

Builds the files in memory (nothing is written to disk): a CSV and an XLSX of ``--rows`` rows, one
third each create, credit and debit with a distinct employee or card per row (the slow case: every
email and mobile is checked once), the same with only create rows, and the hostile workbook of a
few KB that declares all 17 billion cells of Excel (``A1:XFD1048576``) with a styled cell in the
last one. For each it prints the best of ``--repeat`` runs: seconds to read (``parse_file``) and to
check (``check_rows``), in wall-clock and CPU time (on a shared machine the CPU figure is the
steadier one), and rows per second.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import time
import zipfile
from collections.abc import Callable
from typing import Any

from openpyxl import Workbook

from services.bulk_files import COLUMNS, check_rows, parse_file


def rows_of(count: int, *, creates_only: bool) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for n in range(count):
        amount = 100 + n % 50
        if creates_only or n % 3 == 0:
            name = "Ravi" + "abcdefghijklmnopqrstuvwxyz"[n % 26]
            email = f"employee{n}@example.com"
            rows.append(["create", name, "Mr", "M", email, 9600000000 + n, None, amount, f"Q3 {n}"])
        elif n % 3 == 1:
            rows.append(["credit", None, None, None, None, None, f"EKC{n:07d}", amount, "Q3"])
        else:
            rows.append(["debit", None, None, None, None, None, f"EKC{n:07d}", 10, None])
    return rows


def csv_file(rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buffer.getvalue().encode("utf-8")


def xlsx_file(rows: list[list[Any]]) -> bytes:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Rows")
    sheet.append(list(COLUMNS))
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def hostile_xlsx() -> bytes:
    """A normal two-row workbook whose sheet claims every cell of Excel and styles the last."""
    workbook = Workbook()
    workbook.active.append(list(COLUMNS))
    workbook.active.append(["credit", None, None, None, None, None, "EKC04AZHXP", 250, "Q3"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    source = zipfile.ZipFile(buffer)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "xl/worksheets/sheet1.xml":
                data = re.sub(
                    rb'<dimension ref="[^"]*"\s*/>', b'<dimension ref="A1:XFD1048576"/>', data
                )
                data = data.replace(
                    b"</sheetData>", b'<row r="1048576"><c r="XFD1048576" s="0"/></row></sheetData>'
                )
            target.writestr(name, data)
    return out.getvalue()


def best(run: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Best wall-clock and CPU seconds of ``repeat`` runs, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def measure(label: str, name: str, content: bytes, rows: int, repeat: int) -> None:
    read_wall, read_cpu, parsed = best(lambda: parse_file(name, content), repeat)
    check_wall, check_cpu, preview = best(lambda: check_rows(parsed), repeat)
    total_wall, total_cpu = read_wall + check_wall, read_cpu + check_cpu
    print(
        f"{label:<24} {len(content) / 1024 / 1024:6.1f} MB  read {read_wall:5.2f} s "
        f"(cpu {read_cpu:5.2f})  check {check_wall:5.2f} s (cpu {check_cpu:5.2f})  "
        f"total {total_wall:5.2f} s (cpu {total_cpu:5.2f})  {rows / total_wall:8,.0f} rows/s"
        f"  valid {preview.totals.valid:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    mixed = rows_of(args.rows, creates_only=False)
    creates = rows_of(args.rows, creates_only=True)
    print(f"{args.rows:,} rows; best of {args.repeat} runs")
    measure("CSV, mixed kinds", "mixed.csv", csv_file(mixed), args.rows, args.repeat)
    measure("XLSX, mixed kinds", "mixed.xlsx", xlsx_file(mixed), args.rows, args.repeat)
    measure("CSV, create only", "creates.csv", csv_file(creates), args.rows, args.repeat)
    measure("XLSX, create only", "creates.xlsx", xlsx_file(creates), args.rows, args.repeat)
    hostile = hostile_xlsx()
    wall, cpu, parsed = best(lambda: parse_file("hostile.xlsx", hostile), args.repeat)
    print(
        f"{'XLSX, A1:XFD1048576':<24} {len(hostile) / 1024:6.1f} KB  read {wall:5.2f} s "
        f"(cpu {cpu:5.2f})  rows read {len(parsed.rows)}"
    )


if __name__ == "__main__":
    main()
