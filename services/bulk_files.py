"""Bulk allocation files: the template, reading a manager's CSV/XLSX, and checking every row.

Reading is forgiving (encodings, delimiters, header spellings); checking is strict and uses the
same models as the single forms (``services.models.Allocation``), so a row that passes here is a
row the one-at-a-time page would have accepted too. Nothing here sends or stores anything.

Row numbers are the rows the manager sees in the file: the header is row 1, and blank rows still
count (they are skipped, not renumbered).

Duplicates within one file (decided here, shown to the manager before anything is sent):

- the same ``kind``, employee (card id, else email, else mobile), amount **and reason** as an
  earlier row: the later row is rejected ("looks like a copy of row N"). Two payments of the same
  amount to one person for different reasons are allowed;
- two ``create`` rows for the same email or the same mobile: the later one is rejected (the first
  opens the card; the second would only top up the same card).

Debits are checked against the balance the ledger last saw for the card
(``Ledger.known_balance``), adding up every debit on the same card in row order; the debits that
would take the card below zero are rejected. Credits in the same file are not counted towards a
debit, because rows are sent in parallel and a debit may reach EnKash before the credit does.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from services.models import DEFAULT_MAX_POINTS, Allocation, Kind, field_errors
from services.numbers import count, points
from services.spreadsheet import to_csv

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ROWS = 50_000

#: The columns of the template, in order; also the fields a parsed row carries.
COLUMNS = (
    "kind",
    "first_name",
    "title",
    "gender",
    "email",
    "mobile",
    "card_id",
    "amount",
    "reason",
)
EMPLOYEE_COLUMNS = ("first_name", "title", "gender", "email", "mobile")
REQUIRED_COLUMNS = ("kind", "amount")

# Header spellings, compared after _header_key (lower case, separators as single spaces).
_ALIASES: dict[str, tuple[str, ...]] = {
    "kind": (
        "kind",
        "type",
        "transaction type",
        "txn type",
        "transactiontype",
        "action",
        "cr dr",
        "cr/dr",
        "dr cr",
    ),
    "first_name": (
        "first name",
        "firstname",
        "name",
        "employee name",
        "given name",
        "employee first name",
    ),
    "title": ("title", "salutation"),
    "gender": ("gender", "sex"),
    "email": ("email", "e mail", "email address", "email id", "mail", "mail id", "employee email"),
    "mobile": (
        "mobile",
        "phone",
        "mobile number",
        "mobile no",
        "phone number",
        "phone no",
        "mobile phone",
        "cell",
        "contact number",
    ),
    "card_id": (
        "card id",
        "card",
        "enkash card id",
        "enkashcardid",
        "enkash card",
        "cardid",
    ),
    "amount": ("amount", "points", "load amount", "loadamount", "point", "value"),
    "reason": ("reason", "remarks", "remark", "note", "notes", "description", "comment"),
}
_HEADER_TO_COLUMN = {alias: column for column, aliases in _ALIASES.items() for alias in aliases}

_KIND_WORDS: dict[str, Kind] = {
    "create": Kind.CREATE,
    "new": Kind.CREATE,
    "open": Kind.CREATE,
    "create account": Kind.CREATE,
    "credit": Kind.CREDIT,
    "cr": Kind.CREDIT,
    "allocate": Kind.CREDIT,
    "top up": Kind.CREDIT,
    "topup": Kind.CREDIT,
    "debit": Kind.DEBIT,
    "dr": Kind.DEBIT,
    "unallocate": Kind.DEBIT,
    "deduct": Kind.DEBIT,
}

FIELD_LABELS = {
    "kind": "kind",
    "first_name": "first_name",
    "title": "title",
    "gender": "gender",
    "email": "email",
    "mobile": "mobile",
    "card_id": "card_id",
    "amount": "amount",
    "reason": "reason",
    "row": "row",
}


class BulkFileError(ValueError):
    """The file as a whole cannot be used; the message says why and what to do."""


# --- the template --------------------------------------------------------------------------------

_TEMPLATE_NOTES = [
    ("kind", "create (new card + first points), credit, or debit. CR and DR also work."),
    ("first_name", "create: the employee's first name. Ignored for credit/debit by card_id."),
    ("title", "create: Mr, Mrs or Ms."),
    ("gender", "create: M or F."),
    ("email", "create: the employee's email."),
    ("mobile", "create: a 10-digit Indian mobile number."),
    ("card_id", "credit/debit: the EnKash card id, like EKC04AZHXP."),
    ("amount", "Points, more than 0, at most 2 decimals (1500 or 1500.50)."),
    ("reason", "Optional, at most 200 characters; shown in reports."),
]


def template_csv() -> bytes:
    """The CSV template: the header row only (UTF-8 with a BOM, so Excel reads it right)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(COLUMNS)
    return codecs.BOM_UTF8 + buffer.getvalue().encode("utf-8")


def template_xlsx() -> bytes:
    """The XLSX template: an empty ``Rows`` sheet with the header, and a ``How to fill`` sheet."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Rows"
    sheet.append(list(COLUMNS))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for letter, width in zip("ABCDEFGHI", (9, 16, 7, 8, 28, 14, 14, 10, 30), strict=True):
        sheet.column_dimensions[letter].width = width
    # Text columns stay text: a mobile or card id must not become a number in Excel.
    for letter in "ABCDEFGI":
        sheet.column_dimensions[letter].number_format = "@"
    notes = workbook.create_sheet("How to fill")
    notes.append(["column", "what to write"])
    for cell in notes[1]:
        cell.font = Font(bold=True)
    for name, text in _TEMPLATE_NOTES:
        notes.append([name, text])
    notes.column_dimensions["A"].width = 12
    notes.column_dimensions["B"].width = 80
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawRow:
    """One data row as read: its row number in the file and its text per template column."""

    number: int
    values: dict[str, str]


@dataclass(frozen=True)
class ParsedFile:
    """A readable file: its rows, which columns were recognised, and which were ignored."""

    name: str
    digest: str
    rows: list[RawRow]
    columns: dict[str, str]  # template column -> header as written in the file
    ignored: list[str]  # headers that match no template column
    encoding: str


def file_digest(content: bytes) -> str:
    """SHA-256 of the file's bytes: the same file uploaded twice has the same digest."""
    return hashlib.sha256(content).hexdigest()


def _header_key(text: Any) -> str:
    cleaned = str(text or "").replace("\ufeff", "").strip().lower()
    cleaned = re.sub(r"[\s_\-.:#]+", " ", cleaned)
    return cleaned.strip()


def parse_file(
    name: str, content: bytes, *, max_bytes: int = MAX_FILE_BYTES, max_rows: int = MAX_ROWS
) -> ParsedFile:
    """Read a CSV or XLSX upload. ``BulkFileError`` (a sentence to show) if it cannot be used."""
    if len(content) > max_bytes:
        raise BulkFileError(
            f"The file is {len(content) / 1024 / 1024:.1f} MB; the limit is "
            f"{max_bytes / 1024 / 1024:.0f} MB. Split it into smaller files."
        )
    if not content.strip():
        raise BulkFileError("The file is empty.")
    lower = name.lower()
    if content.startswith(b"\xd0\xcf\x11\xe0") or lower.endswith(".xls"):
        raise BulkFileError(
            "This is an old Excel (.xls) file. Save it as Excel Workbook (.xlsx) or CSV first."
        )
    if content.startswith(b"PK\x03\x04") or lower.endswith((".xlsx", ".xlsm")):
        table, encoding = _xlsx_table(content), "xlsx"
    else:
        text, encoding = decode_text(content)
        table = _csv_table(text)
    return _from_table(name, file_digest(content), table, encoding, max_rows)


def decode_text(content: bytes) -> tuple[str, str]:
    """Text of a CSV: UTF-8 (BOM or not), UTF-16 with a BOM, else Windows-1252 (Excel's)."""
    if content.startswith(codecs.BOM_UTF8):
        return content[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), "utf-8-sig"
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return content.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise BulkFileError("The file says it is UTF-16 but cannot be read as such.") from exc
    try:
        return content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if b"\x00" in content[:4096]:
        raise BulkFileError(
            "This does not look like a CSV or XLSX file. Save it from Excel as CSV or Excel "
            "Workbook (.xlsx)."
        )
    # cp1252 leaves five bytes undefined; map those like latin-1 rather than fail the file.
    return content.decode("cp1252", errors="replace"), "cp1252"


def _delimiter(text: str) -> str:
    first = next((line for line in text.splitlines() if line.strip()), "")
    counts = {sep: first.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _csv_table(text: str) -> Iterator[list[Any]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    try:
        yield from reader
    except csv.Error as exc:
        raise BulkFileError(f"The CSV file is damaged near line {reader.line_num}: {exc}") from exc


def _xlsx_table(content: bytes) -> Iterator[list[Any]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise BulkFileError(
            "The file could not be read as an Excel workbook (.xlsx). Save it again from Excel, "
            "or as CSV."
        ) from exc
    try:
        sheets = [s for s in workbook.worksheets if s.title.strip().lower() != "how to fill"]
        sheet = sheets[0] if sheets else workbook.worksheets[0]
        for row in sheet.iter_rows(values_only=True):
            yield list(row)
    finally:
        workbook.close()


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        # Excel keeps numbers as binary floats: 9600098867.0 is a mobile, 1500.5 an amount.
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return " ".join(str(value).replace("\ufeff", "").split())


def _from_table(
    name: str, digest: str, table: Iterable[list[Any]], encoding: str, max_rows: int
) -> ParsedFile:
    rows: list[RawRow] = []
    columns: dict[str, int] = {}
    headers: dict[str, str] = {}
    ignored: list[str] = []
    header_seen = False
    for number, cells in enumerate(table, start=1):
        texts = [_cell_text(cell) for cell in cells]
        if not any(texts):
            continue
        if not header_seen:
            header_seen = True
            columns, headers, ignored = _read_header(texts)
            continue
        if len(rows) >= max_rows:
            raise BulkFileError(
                f"The file has more than {count(max_rows)} rows; the limit is {count(max_rows)} "
                "per upload. "
                "Split it into several files."
            )
        values = {
            column: texts[index] if index < len(texts) else "" for column, index in columns.items()
        }
        rows.append(RawRow(number, values))
    if not header_seen:
        raise BulkFileError("The file is empty.")
    if not rows:
        raise BulkFileError("The file has a header row but no data rows.")
    return ParsedFile(name, digest, rows, headers, ignored, encoding)


def _read_header(texts: list[str]) -> tuple[dict[str, int], dict[str, str], list[str]]:
    columns: dict[str, int] = {}
    headers: dict[str, str] = {}
    ignored: list[str] = []
    for index, text in enumerate(texts):
        if not text:
            continue
        column = _HEADER_TO_COLUMN.get(_header_key(text))
        if column is None:
            ignored.append(text)
            continue
        if column in columns:
            raise BulkFileError(
                f'Two columns mean the same thing: "{headers[column]}" and "{text}" are both read '
                f"as {column}. Keep one."
            )
        columns[column] = index
        headers[column] = text
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    who = "card_id" in columns or all(column in columns for column in EMPLOYEE_COLUMNS)
    if missing or not who:
        needed = list(missing)
        if not who:
            absent = [c for c in EMPLOYEE_COLUMNS if c not in columns]
            needed.append(f"card_id (or all of {', '.join(absent)})")
        found = ", ".join(f'"{t}"' for t in texts if t) or "none"
        unknown = f" Not recognised: {', '.join(repr(t) for t in ignored)}." if ignored else ""
        raise BulkFileError(
            f"Missing column(s): {', '.join(needed)}. Columns found: {found}.{unknown} "
            "Download the template to see the expected headers."
        )
    return columns, headers, ignored


# --- checking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidRow:
    number: int
    allocation: Allocation  # its reference is a placeholder until the batch is queued
    values: dict[str, str]


@dataclass(frozen=True)
class RejectedRow:
    number: int
    values: dict[str, str]
    errors: dict[str, str]  # column (or "row") -> what is wrong

    @property
    def reason(self) -> str:
        return "; ".join(f"{column}: {message}" for column, message in self.errors.items())


@dataclass(frozen=True)
class Totals:
    rows: int
    valid: int
    rejected: int
    credit_rows: int
    credit_points: Decimal
    debit_rows: int
    debit_points: Decimal

    @property
    def net_points(self) -> Decimal:
        return self.credit_points - self.debit_points


@dataclass(frozen=True)
class Preview:
    """Everything the manager sees before confirming; ``valid`` rows are what would be queued."""

    file: ParsedFile
    valid: list[ValidRow]
    rejected: list[RejectedRow]
    totals: Totals
    pool_balance: Decimal | None  # None when EnKash could not say
    warnings: list[str] = field(default_factory=list)

    @property
    def fits_pool(self) -> bool | None:
        """Whether the credits fit the pool (debits are not counted: they may land later)."""
        if self.pool_balance is None:
            return None
        return self.totals.credit_points <= self.pool_balance

    @property
    def shortfall(self) -> Decimal:
        if self.pool_balance is None:
            return Decimal("0")
        return max(Decimal("0"), self.totals.credit_points - self.pool_balance)


_PLACEHOLDER_REFERENCE = "PREVIEW-000000"


def parse_kind(text: str) -> Kind:
    key = _header_key(text)
    if key in _KIND_WORDS:
        return _KIND_WORDS[key]
    raise ValueError("kind must be create, credit or debit (CR and DR also work)")


def _column_of(location: str) -> str:
    if location.startswith("employee."):
        return location.removeprefix("employee.")
    if location in ("employee", "__all__", ""):
        return "row"
    return location if location in COLUMNS else "row"


def _check_row(raw: RawRow, max_points: Decimal) -> tuple[Allocation | None, dict[str, str]]:
    values = raw.values
    errors: dict[str, str] = {}
    try:
        kind = parse_kind(values.get("kind", ""))
    except ValueError as exc:
        errors["kind"] = str(exc)
        kind = None
    card_id = values.get("card_id", "")
    employee_given = {c: values.get(c, "") for c in EMPLOYEE_COLUMNS}
    employee: dict[str, str] | None = None
    if kind is Kind.CREATE:
        employee = employee_given
        if card_id:
            errors["card_id"] = "A new account has no card id yet; leave card_id empty for create"
    elif kind is not None and not card_id:
        if all(employee_given.values()):
            employee = employee_given  # EnKash finds the card by email/mobile
        else:
            errors["card_id"] = (
                f"Give the card id of the card to {kind.value} (or every employee column)"
            )
    data = {
        "reference": _PLACEHOLDER_REFERENCE,
        "kind": kind or Kind.CREDIT,
        "amount": values.get("amount", ""),
        "employee": employee,
        "card_id": card_id or None,
        "reason": values.get("reason", ""),
    }
    try:
        allocation = Allocation.model_validate(data, context={"max_points": max_points})
    except ValidationError as exc:
        for location, message in field_errors(exc).items():
            errors.setdefault(_column_of(location), message)
        return None, errors
    return (None, errors) if errors else (allocation, {})


def _who(allocation: Allocation) -> str:
    if allocation.card_id:
        return f"card:{allocation.card_id}"
    assert allocation.employee is not None
    return f"email:{allocation.employee.email}"


def check_rows(
    parsed: ParsedFile,
    *,
    known_balance: Any = None,
    pool_balance: Decimal | None = None,
    max_points: Decimal = DEFAULT_MAX_POINTS,
) -> Preview:
    """Check every row; ``known_balance(card_id) -> Decimal | None`` is usually the ledger's."""
    valid: list[ValidRow] = []
    rejected: list[RejectedRow] = []
    seen: dict[tuple[str, ...], int] = {}
    opened: dict[str, int] = {}
    debited: dict[str, Decimal] = {}
    balances: dict[str, Decimal | None] = {}
    unknown_cards: set[str] = set()
    for raw in parsed.rows:
        allocation, errors = _check_row(raw, max_points)
        if allocation is not None and not errors:
            errors = _duplicate(allocation, raw.number, seen, opened)
        if allocation is not None and not errors and allocation.kind is Kind.DEBIT:
            card = allocation.card_id
            if card and known_balance is not None:
                if card not in balances:
                    balances[card] = known_balance(card)
                balance = balances[card]
                if balance is None:
                    unknown_cards.add(card)
                else:
                    total = debited.get(card, Decimal("0")) + allocation.amount
                    if total > balance:
                        earlier = debited.get(card, Decimal("0"))
                        errors = {
                            "amount": f"Card {card} holds {points(balance)} points as last seen"
                            + (f"; earlier rows already debit {points(earlier)}" if earlier else "")
                            + "; this debit would take it below zero"
                        }
                    else:
                        debited[card] = total
        if allocation is None or errors:
            rejected.append(RejectedRow(raw.number, raw.values, errors))
        else:
            valid.append(ValidRow(raw.number, allocation, raw.values))
    credits = [v.allocation.amount for v in valid if v.allocation.kind is not Kind.DEBIT]
    debits = [v.allocation.amount for v in valid if v.allocation.kind is Kind.DEBIT]
    totals = Totals(
        rows=len(parsed.rows),
        valid=len(valid),
        rejected=len(rejected),
        credit_rows=len(credits),
        credit_points=sum(credits, Decimal("0")),
        debit_rows=len(debits),
        debit_points=sum(debits, Decimal("0")),
    )
    warnings = []
    if parsed.ignored:
        warnings.append("Ignored column(s): " + ", ".join(f'"{c}"' for c in parsed.ignored))
    if unknown_cards:
        shown = ", ".join(sorted(unknown_cards)[:5]) + (" …" if len(unknown_cards) > 5 else "")
        warnings.append(
            f"Points Desk has not seen the balance of {len(unknown_cards)} debited card(s) "
            f"({shown}); EnKash refuses a debit larger than the balance."
        )
    return Preview(parsed, valid, rejected, totals, pool_balance, warnings)


def _duplicate(
    allocation: Allocation,
    number: int,
    seen: dict[tuple[str, ...], int],
    opened: dict[str, int],
) -> dict[str, str]:
    key = (allocation.kind.value, _who(allocation), str(allocation.amount), allocation.reason)
    if key in seen:
        return {
            "row": f"Looks like a copy of row {seen[key]} (same kind, employee, amount and "
            "reason). Remove one, or give each its own reason."
        }
    if allocation.kind is Kind.CREATE and allocation.employee is not None:
        for identity in (
            f"email:{allocation.employee.email}",
            f"mobile:{allocation.employee.mobile}",
        ):
            if identity in opened:
                return {
                    identity.split(":")[0]: f"Row {opened[identity]} already opens an account "
                    "for this employee; use one create row (or credit the card later)"
                }
    seen[key] = number
    if allocation.kind is Kind.CREATE and allocation.employee is not None:
        opened.setdefault(f"email:{allocation.employee.email}", number)
        opened.setdefault(f"mobile:{allocation.employee.mobile}", number)
    return {}


# --- files for the manager -----------------------------------------------------------------------


def error_file(preview: Preview) -> bytes:
    """The rejected rows as CSV: the manager's own columns plus the row number and the reason."""
    header = ["row", *COLUMNS, "problem"]
    rows = [
        [row.number, *(row.values.get(column, "") for column in COLUMNS), row.reason]
        for row in preview.rejected
    ]
    return to_csv(header, rows)
