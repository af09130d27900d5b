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
import contextlib
import csv
import gc
import hashlib
import io
import logging
import posixpath
import pyexpat
import re
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from services.errors import InvalidInput
from services.models import DEFAULT_MAX_POINTS, Allocation, Employee, Kind, field_errors
from services.numbers import count, points
from services.spreadsheet import restore, to_csv

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ROWS = 50_000
MAX_COLUMNS = 200
#: Wall-clock budget for reading one upload (a 50,000-row file takes about a second).
MAX_READ_SECONDS = 20.0
#: Longer cell texts are cut here (and so refused by every column's own length check).
MAX_CELL_CHARS = 1000

log = logging.getLogger("points_desk.bulk_files")

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
#: Columns a file may carry beyond the template's (old files without them stay valid). A
#: correction file's ``corrects`` is one: the rejected-rows file must keep it, or a fixed row would
#: go out as a plain payment and the failed row it corrects could be paid again.
OPTIONAL_COLUMNS = ("programme", "corrects")
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
    # A correction file's link to the failed row each row pays instead (bulk.correction_file).
    "corrects": ("corrects", "corrects reference", "original reference"),
    # Optional: without it every row takes the programme chosen for the whole file.
    "programme": ("programme", "program", "programme code", "program code", "programme name"),
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
    "programme": "programme",
    "row": "row",
}


class BulkFileError(InvalidInput):
    """The file as a whole cannot be used; the message says why and what to do."""


# --- the template --------------------------------------------------------------------------------

#: The templates' one example row: it shows how a row is filled, and the check refuses it (by its
#: reason or its email), so a template uploaded untouched pays nobody.
EXAMPLE_REASON = "Example — delete this row"
EXAMPLE_EMAIL = "example.employee@example.com"
EXAMPLE_ROW = {
    "kind": "create",
    "first_name": "Example",
    "title": "Ms",
    "gender": "F",
    "email": EXAMPLE_EMAIL,
    "mobile": "9876543210",
    "card_id": "",
    "amount": "1500",
    "reason": EXAMPLE_REASON,
}
EXAMPLE_REFUSED = "This is the template's example row; replace it"
_EXAMPLE_MARK = re.compile(r"^\s*example\b.*\bdelete this row\b", re.IGNORECASE)


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
    (
        "programme",
        "Optional: the code or name of the programme whose budget the row counts against. "
        "Empty: the programme chosen for the whole file on the Bulk page.",
    ),
    (
        "example",
        f'Row 2 of the Rows sheet is an example: replace it (a row reading "{EXAMPLE_REASON}" '
        "is refused, so nobody is paid by it).",
    ),
]


def is_example_row(values: dict[str, str]) -> bool:
    """Whether a row is (still) the templates' example: its reason or its email says so."""
    reason = values.get("reason", "") or ""
    email = (values.get("email", "") or "").strip().casefold()
    return bool(_EXAMPLE_MARK.match(reason)) or email == EXAMPLE_EMAIL


def template_csv() -> bytes:
    """The CSV template: the header and the example row (UTF-8 with a BOM, so Excel reads it
    right)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerow([EXAMPLE_ROW[column] for column in COLUMNS])
    return codecs.BOM_UTF8 + buffer.getvalue().encode("utf-8")


def template_xlsx() -> bytes:
    """The XLSX template: a ``Rows`` sheet with the header and the example row (in grey
    italics), and a ``How to fill`` sheet."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Rows"
    sheet.append(list(COLUMNS))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.append(
        [
            int(value) if column == "amount" else value or None
            for column, value in EXAMPLE_ROW.items()
        ]
    )
    for cell in sheet[2]:
        cell.font = Font(italic=True, color="808080")
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
    #: Filled cells beyond the header's last column: the row's values may have moved (an amount
    #: written as 50,000 in a CSV splits into two cells), so the row is refused, not guessed.
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedFile:
    """A readable file: its rows, which columns were recognised, and which were ignored."""

    name: str
    digest: str
    rows: list[RawRow]
    columns: dict[str, str]  # template column -> header as written in the file
    ignored: list[str]  # headers that match no template column
    encoding: str
    #: A workbook's sheet that was read, and its other worksheets (not read), in their order.
    sheet: str | None = None
    other_sheets: tuple[str, ...] = ()


def file_digest(content: bytes) -> str:
    """SHA-256 of the file's bytes: the same file uploaded twice has the same digest."""
    return hashlib.sha256(content).hexdigest()


def _header_key(text: Any) -> str:
    cleaned = str(text or "").replace("\ufeff", "").strip().lower()
    cleaned = re.sub(r"[\s_\-.:#]+", " ", cleaned)
    return cleaned.strip()


def parse_file(
    name: str,
    content: bytes,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_rows: int = MAX_ROWS,
    max_columns: int = MAX_COLUMNS,
    max_seconds: float = MAX_READ_SECONDS,
) -> ParsedFile:
    """Read a CSV or XLSX upload. ``BulkFileError`` (a sentence to show) if it cannot be used.

    Nothing else escapes: a file that breaks the reader in a way not foreseen here is refused with
    a general message (and the cause is logged, without the file's content).
    """
    try:
        with _no_cycle_collection():
            return _parse_file(name, content, max_bytes, max_rows, max_columns, max_seconds)
    except BulkFileError:
        raise
    except Exception as exc:
        log.warning("bulk file %r could not be read: %s", name[:100], type(exc).__name__)
        raise BulkFileError(
            "The file could not be read. Save it again from Excel as Excel Workbook (.xlsx) or "
            "CSV UTF-8 and upload the new file."
        ) from exc


def _parse_file(
    name: str,
    content: bytes,
    max_bytes: int,
    max_rows: int,
    max_columns: int,
    max_seconds: float,
) -> ParsedFile:
    if len(content) > max_bytes:
        raise BulkFileError(
            f"The file is {len(content) / 1024 / 1024:.1f} MB; the limit is "
            f"{max_bytes / 1024 / 1024:.0f} MB. Split it into smaller files."
        )
    if not content.strip():
        raise BulkFileError("The file is empty.")
    deadline = _Deadline(max_seconds)
    lower = name.lower()
    if content.startswith(b"\xd0\xcf\x11\xe0") or lower.endswith(".xls"):
        raise BulkFileError(
            "This is an old Excel (.xls) file or a password-protected workbook. Save it as Excel "
            "Workbook (.xlsx) without a password, or as CSV, first."
        )
    sheets: _Sheets | None = None
    if content.startswith(b"PK\x03\x04"):
        sheets = _Sheets()
        table, encoding = _xlsx_table(content, deadline, max_columns, sheets), "xlsx"
    else:
        try:
            text, encoding = decode_text(content)
        except BulkFileError:
            if lower.endswith((".xlsx", ".xlsm")):  # neither a workbook nor text
                raise BulkFileError(
                    "The file could not be read as an Excel workbook (.xlsx): it is not a "
                    "complete workbook file. Save it again from Excel, or as CSV."
                ) from None
            raise
        table = _csv_table(text, max_columns)  # a CSV, whatever its name says
    return _from_table(
        name, file_digest(content), table, encoding, max_rows, max_columns, deadline, sheets
    )


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Reading and checking a file creates 10^5 small objects, none in a reference cycle; the
    cycle collector would scan all of them again and again (a third of the checking time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Deadline:
    """The wall-clock budget for reading one file; ``check`` refuses the file once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise BulkFileError(
                f"Reading the file took longer than {self.seconds:g} seconds, so it was stopped. "
                "Keep only the rows and columns to send (no formatting of empty rows), or split "
                "it into smaller files."
            )


# --- CSV -----------------------------------------------------------------------------------------

_SAVE_AS_UTF8 = 'Save it from Excel as "CSV UTF-8 (Comma delimited)" and upload it again.'


def decode_text(content: bytes) -> tuple[str, str]:
    """Text of a CSV and the encoding it was read with.

    A byte-order mark decides (UTF-8, UTF-16, UTF-32); without one, the pattern of NUL bytes
    recognises UTF-16/UTF-32 (little or big endian); else UTF-8, else Windows-1252 (what Excel
    writes for "CSV (Comma delimited)"). Text that fits none of them is refused with what to do.
    """
    for bom, codec, encoding in (
        (codecs.BOM_UTF8, "utf-8", "utf-8-sig"),
        (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"),  # before UTF-16 LE: FF FE 00 00
        (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
    ):
        if content.startswith(bom):
            return _decode(content[len(bom) :], codec, encoding), encoding
    unmarked = _unmarked_wide_encoding(content[:4096])
    if unmarked is not None:
        return _decode(content, unmarked, unmarked), unmarked
    if b"\x00" in content[:4096]:
        raise BulkFileError(
            "This does not look like a CSV or XLSX file. Save it from Excel as CSV or Excel "
            "Workbook (.xlsx)."
        )
    try:
        return content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    text = content.decode("cp1252", errors="replace")
    if "\ufffd" in text:  # a byte cp1252 leaves undefined: not Excel's Windows text either
        raise BulkFileError(f"The file's text encoding could not be recognised. {_SAVE_AS_UTF8}")
    return text, "cp1252"


def _decode(content: bytes, codec: str, encoding: str) -> str:
    try:
        text = content.decode(codec)
    except UnicodeDecodeError as exc:
        name = encoding.upper().replace("-SIG", "").replace("-LE", " LE").replace("-BE", " BE")
        raise BulkFileError(
            f"The file looks like {name} text but has bytes that are not {name} "
            f"(at byte {exc.start:,}). {_SAVE_AS_UTF8}"
        ) from exc
    if "\x00" in text:
        raise BulkFileError(
            f"The file holds NUL characters, which a CSV never has. {_SAVE_AS_UTF8}"
        )
    return text


def _unmarked_wide_encoding(sample: bytes) -> str | None:
    """UTF-16/32 without a byte-order mark, told by where the NUL bytes fall (the header is ASCII).

    ASCII in UTF-16 LE is ``k\\0i\\0``: NULs at odd offsets only; BE puts them at even offsets.
    UTF-32 has three NULs in every four bytes (two for any character up to U+FFFF).
    """
    if sample.count(0) < len(sample) // 4:
        return None
    quads = len(sample) // 4 * 4
    if quads >= 8:
        nuls = [sample[offset:quads:4].count(0) / (quads // 4) for offset in range(4)]
        if nuls[2] > 0.9 and nuls[3] > 0.9 and nuls[0] < 0.1:
            return "utf-32-le"
        if nuls[0] > 0.9 and nuls[1] > 0.9 and nuls[3] < 0.1:
            return "utf-32-be"
    pairs = len(sample) // 2 * 2
    if pairs >= 4:
        even = sample[0:pairs:2].count(0) / (pairs // 2)
        odd = sample[1:pairs:2].count(0) / (pairs // 2)
        if odd > 0.3 and even < 0.05:
            return "utf-16-le"
        if even > 0.3 and odd < 0.05:
            return "utf-16-be"
    return None


def _delimiter(text: str) -> str:
    first = next((line for line in io.StringIO(text[:65536]) if line.strip()), "")
    counts = {sep: first.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _csv_table(text: str, max_columns: int) -> Iterator[tuple[int, list[Any]]]:
    """``(row number, cells)``: the row number is the record, as Excel shows the file.

    A quote (``"``) opened in a cell and closed only rows later (or never) makes the csv reader
    pour the following lines into that one cell. A line inside a cell that holds a whole row's
    worth of delimiters (as many as the header has, less one) is exactly that, so the file is
    refused, naming the row and line, rather than silently losing the rows swallowed. A cell of
    a few lines of text (Alt+Enter in Excel), commas and all, is read as one cell.
    """
    delimiter = _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    number = 0
    line = 1  # the line of the file the next record starts on
    a_row: int | None = None  # delimiters in a whole row: the header's columns, less one
    try:
        for cells in reader:
            number += 1
            for index, cell in enumerate(cells):
                if ("\n" in cell or "\r" in cell) and _swallowed(cell, delimiter, a_row, cells):
                    _unclosed_quote(number, line, reader.line_num, index, max_columns)
            if a_row is None and any(cell.strip() for cell in cells):  # the header
                a_row = max(1, max(i for i, cell in enumerate(cells) if cell.strip()))
            line = reader.line_num + 1
            yield number, cells
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise BulkFileError(
                f"Row {number + 1} (line {line} of the file) has a cell longer than "
                f'{csv.field_size_limit():,} characters. This is usually a quote (") that is '
                "opened and never closed, which runs the rest of the file into one cell. Close "
                "the quote or remove it, and upload the file again."
            ) from exc
        raise BulkFileError(f"The CSV file is damaged near line {reader.line_num}: {exc}") from exc


def _swallowed(cell: str, delimiter: str, a_row: int | None, cells: list[str]) -> bool:
    """Whether a cell with line breaks holds rows of the file: a line after a break has half a
    row's delimiters or more (the last line swallowed may be cut short where the quote closes),
    or the record came out wider than the header with a delimiter after a break. Before the
    header is known, any delimiter after a break."""
    after = cell.splitlines()[1:]
    if a_row is None:
        return any(delimiter in part for part in after)
    return any(part.count(delimiter) >= max(2, (a_row + 1) // 2) for part in after) or (
        len(cells) > a_row + 1 and any(delimiter in part for part in after)
    )


def _unclosed_quote(number: int, line: int, end: int, index: int, max_columns: int) -> None:
    column = f"column {index + 1}" if index < max_columns else "a cell"
    raise BulkFileError(
        f'Row {number} (line {line} of the file) has a quote (") in {column} that is not closed '
        f"where the cell ends, so lines {line + 1}–{end} were read into that one cell instead of "
        "as rows of their own. Close the quote or remove it, and upload the file again. (If the "
        "cell really holds several lines, put it on one line.)"
    )


# --- XLSX ----------------------------------------------------------------------------------------
#
# The workbook is read straight from its zip with expat, not with openpyxl: openpyxl's read-only
# mode trusts the sheet's declared dimension (a sheet that says A1:C10 but holds 500 rows loses
# 490 of them; one that says A1:XFD1048576 takes minutes padding 17 billion empty cells). Here the
# rows are the <row> elements actually present, cells beyond the column limit are never stored,
# every part has a size limit, any DOCTYPE (which an XLSX never has) is refused, and the reader
# stops at the row limit and the time budget.

_XLSX_MAX_PART_BYTES = 100 * 1024 * 1024  # unpacked size of one part (the sheet, its texts)
_XLSX_MAX_SMALL_PART_BYTES = 10 * 1024 * 1024  # the workbook, relationships, styles
_XLSX_CHUNK = 256 * 1024
_XLSX_MAX_ROW = 1_048_576  # Excel's last row
_XLSX_MAX_COLUMN = 16_384  # Excel's last column, XFD
_REL_OFFICE_DOCUMENT = "/officeDocument"
_SAVE_AGAIN = "Open it in Excel, save it again and upload the new file (or save it as CSV)."


def _damaged(what: str) -> BulkFileError:
    return BulkFileError(f"The Excel workbook is damaged: {what}. {_SAVE_AGAIN}")


def _local(tag: str) -> str:
    return tag.rpartition(":")[2]


def _refuse_doctype(*_: Any) -> None:
    raise _damaged("it holds a DOCTYPE declaration, which Excel never writes")


def _expat(handlers: Any) -> Any:
    parser = pyexpat.ParserCreate()
    parser.buffer_text = True
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_doctype
    parser.StartElementHandler = handlers.start
    parser.EndElementHandler = handlers.end
    parser.CharacterDataHandler = handlers.text
    return parser


def _part_info(archive: zipfile.ZipFile, name: str, limit: int) -> zipfile.ZipInfo:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise _damaged(f"its part {name} is missing") from None
    if info.file_size > limit:
        raise BulkFileError(
            f"The Excel workbook's part {name} unpacks to {info.file_size / 1024 / 1024:,.0f} MB; "
            f"the limit is {limit / 1024 / 1024:.0f} MB. Keep only the rows to send, or split "
            "the file."
        )
    if info.flag_bits & 0x1:
        raise BulkFileError(
            "The Excel workbook is password-protected. Save it without a password and upload it "
            "again."
        )
    return info


def _stream_part(
    archive: zipfile.ZipFile, name: str, handlers: Any, deadline: _Deadline
) -> Iterator[None]:
    """Feed one part to expat chunk by chunk; yields after each chunk so rows can be taken."""
    info = _part_info(archive, name, _XLSX_MAX_PART_BYTES)
    parser = _expat(handlers)
    with _reading(name), archive.open(info) as stream:
        while chunk := stream.read(_XLSX_CHUNK):
            deadline.check()
            parser.Parse(chunk, False)
            yield
        parser.Parse(b"", True)
        yield


# What zipfile, zlib and expat raise for a damaged archive or part (ValueError: bad offsets,
# NotImplementedError: unknown zip versions and compressions, RuntimeError: encrypted entries).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    zlib.error,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


@contextlib.contextmanager
def _reading(name: str) -> Iterator[None]:
    """Turn what unpacking or parsing part ``name`` raises into a sentence for the manager."""
    try:
        yield
    except BulkFileError:
        raise
    except pyexpat.ExpatError as exc:
        raise _damaged(
            f"{name} is not well-formed XML (line {exc.lineno}, column {exc.offset})"
        ) from exc
    except _ZIP_ERRORS as exc:
        raise _damaged(f"its part {name} cannot be unpacked (the zip data is corrupt)") from exc


class _Elements:
    """Collects a small part (workbook, relationships, styles) as (tag, attributes) pairs."""

    def __init__(self) -> None:
        self.found: list[tuple[str, dict[str, str]]] = []

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        self.found.append((_local(tag), attributes))

    def end(self, tag: str) -> None:
        pass

    def text(self, data: str) -> None:
        pass


def _small_part(
    archive: zipfile.ZipFile, name: str, *, required: bool = True
) -> list[tuple[str, dict[str, str]]]:
    if not required and name not in archive.NameToInfo:
        return []
    info = _part_info(archive, name, _XLSX_MAX_SMALL_PART_BYTES)
    handlers = _Elements()
    with _reading(name):
        _expat(handlers).Parse(archive.read(info), True)
    return handlers.found


def _relationships(archive: zipfile.ZipFile, part: str) -> dict[str, tuple[str, str]]:
    """``{id: (type, part name)}`` for the relationships of ``part`` (missing file: none)."""
    folder, _, base = part.rpartition("/")
    rels = f"{folder}/_rels/{base}.rels" if folder else f"_rels/{base}.rels"
    found: dict[str, tuple[str, str]] = {}
    for tag, attributes in _small_part(archive, rels, required=False):
        if tag != "Relationship" or attributes.get("TargetMode") == "External":
            continue
        target = attributes.get("Target", "")
        resolved = target.lstrip("/") if target.startswith("/") else f"{folder}/{target}"
        found[attributes.get("Id", "")] = (
            attributes.get("Type", ""),
            posixpath.normpath(resolved).lstrip("/"),
        )
    return found


@dataclass
class _Sheets:
    """Which worksheet of a workbook was read, and the other ones, for the preview to name."""

    read: str | None = None
    others: tuple[str, ...] = ()


def _first_sheet(
    archive: zipfile.ZipFile, sheets: _Sheets
) -> tuple[str, dict[str, tuple[str, str]], bool]:
    """The sheet to read: the one Excel opens on (the active sheet) when it is a visible worksheet
    and not the template's guide, else the first such sheet. ``sheets`` learns its name and the
    other worksheets' names.

    Also the workbook's relationships (where the shared texts and styles are) and whether its
    dates count from 1904.
    """
    if "[Content_Types].xml" not in archive.NameToInfo:
        raise BulkFileError(
            "The file could not be read as an Excel workbook (.xlsx): it is a zip archive of "
            "something else. Save the sheet from Excel as Excel Workbook (.xlsx) or CSV."
        )
    office = [
        p for t, p in _relationships(archive, "").values() if t.endswith(_REL_OFFICE_DOCUMENT)
    ]
    workbook = office[0] if office else "xl/workbook.xml"
    elements = _small_part(archive, workbook)
    relations = _relationships(archive, workbook)
    date1904 = any(
        tag == "workbookPr" and attributes.get("date1904", "").lower() in ("1", "true")
        for tag, attributes in elements
    )
    active = next(
        (attributes.get("activeTab", "0") for tag, attributes in elements if tag == "workbookView"),
        "0",
    )
    # (position among the workbook's sheets, name, path, whether it is to be passed over)
    candidates: list[tuple[int, str, str, bool]] = []
    position = -1
    for tag, attributes in elements:
        if tag != "sheet":
            continue
        position += 1
        relation = next((v for k, v in attributes.items() if _local(k) == "id"), "")
        kind, path = relations.get(relation, ("", ""))
        if not kind.endswith("/worksheet"):
            continue  # a chart sheet or a dangling entry
        title = attributes.get("name", "").strip()
        hidden = attributes.get("state", "visible") != "visible"
        candidates.append((position, title, path, hidden or title.lower() == "how to fill"))
    if not candidates:
        raise _damaged("it lists no worksheet")
    usable = [c for c in candidates if not c[3]] or candidates[:1]
    chosen = next((c for c in usable if str(c[0]) == active.strip()), usable[0])
    sheets.read = chosen[1]
    sheets.others = tuple(c[1] for c in usable if c is not chosen)
    return chosen[2], relations, date1904


def _date_styles(archive: zipfile.ZipFile, relations: dict[str, tuple[str, str]]) -> set[int]:
    """Indexes of the cell styles whose number format shows a date (Excel keeps dates as days)."""
    from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format

    path = next((p for t, p in relations.values() if t.endswith("/styles")), "")
    if not path:
        return set()
    custom: dict[int, str] = {}
    dates: set[int] = set()
    in_cell_xfs = False
    index = 0
    for tag, attributes in _small_part(archive, path, required=False):
        if tag == "numFmt":
            with contextlib.suppress(ValueError):
                custom[int(attributes.get("numFmtId", ""))] = attributes.get("formatCode", "")
        elif tag == "cellXfs":
            in_cell_xfs = True
        elif tag in ("cellStyleXfs", "cellStyles", "dxfs"):
            in_cell_xfs = False
        elif tag == "xf" and in_cell_xfs:
            try:
                number_format = int(attributes.get("numFmtId", "0"))
            except ValueError:
                number_format = 0
            code = custom.get(number_format, BUILTIN_FORMATS.get(number_format, ""))
            if code and is_date_format(code):
                dates.add(index)
            index += 1
    return dates


class _SharedStrings:
    """The workbook's shared texts (``<si>``), rich runs joined, phonetic guides left out."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.parts: list[str] = []
        self.in_text = False
        self.phonetic = 0
        self.length = 0

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        name = _local(tag)
        if name == "t" and not self.phonetic:
            self.in_text = True
        elif name == "si":
            self.parts = []
            self.length = 0
        elif name == "rPh":
            self.phonetic += 1

    def end(self, tag: str) -> None:
        name = _local(tag)
        if name == "t":
            self.in_text = False
        elif name == "si":
            self.strings.append("".join(self.parts)[: MAX_CELL_CHARS + 1])
        elif name == "rPh":
            self.phonetic -= 1

    def text(self, data: str) -> None:
        if self.in_text and self.length <= MAX_CELL_CHARS:  # longer texts are cut anyway
            self.parts.append(data)
            self.length += len(data)


class _SheetRows:
    """Turns a worksheet's <row>/<c> elements into ``(row number, cells)``; cells by column.

    The declared dimension is ignored: rows are what the sheet holds. Row and column numbers are
    taken from the ``r`` attributes (or counted on when absent) and checked; cells past
    ``max_columns`` are not stored, and one with a value there refuses the file.
    """

    def __init__(
        self, shared: list[str], date_styles: set[int], date1904: bool, max_columns: int
    ) -> None:
        from openpyxl.utils.datetime import CALENDAR_MAC_1904, CALENDAR_WINDOWS_1900

        self.shared = shared
        self.date_styles = date_styles
        self.epoch = CALENDAR_MAC_1904 if date1904 else CALENDAR_WINDOWS_1900
        self.max_columns = max_columns
        self.rows: list[tuple[int, list[Any]]] = []
        self.row_number = 0
        self.cells: list[Any] = []
        self.column = 0
        self.kind = ""
        self.style = ""
        self.reference = ""
        self.parts: list[str] = []
        self.length = 0
        self.value: str | None = None
        self.in_value = False
        self.in_inline = False
        self.phonetic = 0
        self.in_row = False
        self.column_cache: dict[str, int] = {}

    def start(self, tag: str, attributes: dict[str, str]) -> None:
        name = _local(tag) if ":" in tag else tag
        if name == "c":
            if not self.in_row:
                raise _damaged("a cell stands outside any row")
            self.reference = attributes.get("r", "")
            self.column = self._column(self.reference) if self.reference else self.column + 1
            self.kind = attributes.get("t", "n")
            self.style = attributes.get("s", "")
            self.value = None
            self.parts = []
            self.length = 0
        elif name == "v":
            self.in_value = True
            self.parts = []
            self.length = 0
        elif name == "t":
            self.in_value = self.in_inline and not self.phonetic
        elif name == "is":
            self.in_inline = True
            self.parts = []
            self.length = 0
        elif name == "rPh":
            self.phonetic += 1
        elif name == "row":
            self._start_row(attributes.get("r", ""))

    def end(self, tag: str) -> None:
        name = _local(tag) if ":" in tag else tag
        if name == "c":
            self._end_cell()
        elif name == "v":
            self.value = "".join(self.parts)
            self.in_value = False
        elif name == "t":
            self.in_value = False
        elif name == "is":
            self.value = "".join(self.parts)
            self.in_inline = False
        elif name == "rPh":
            self.phonetic -= 1
        elif name == "row":
            self.in_row = False
            if self.cells:
                self.rows.append((self.row_number, self.cells))

    def text(self, data: str) -> None:
        if self.in_value and self.length <= MAX_CELL_CHARS:  # longer texts are cut anyway
            self.parts.append(data)
            self.length += len(data)

    def _start_row(self, given: str) -> None:
        if given:
            try:
                number = int(given)
            except ValueError:
                raise _damaged(f'a row is numbered "{given[:20]}"') from None
        else:
            number = self.row_number + 1
        if not 1 <= number <= _XLSX_MAX_ROW:
            raise _damaged(f"a row is numbered {number:,}, outside Excel's rows")
        if number <= self.row_number:
            raise _damaged(f"row {number:,} comes after row {self.row_number:,}")
        self.row_number = number
        self.cells = []
        self.column = 0
        self.in_row = True

    def _column(self, reference: str) -> int:
        letters = reference.rstrip("0123456789")
        column = self.column_cache.get(letters)
        if column is None:
            if not (1 <= len(letters) <= 3 and letters.isascii() and letters.isupper()):
                raise _damaged(f'a cell is named "{reference[:20]}"')
            column = 0
            for letter in letters:
                column = column * 26 + ord(letter) - 64
            if column > _XLSX_MAX_COLUMN:
                raise _damaged(f'a cell is named "{reference[:20]}", outside Excel\'s columns')
            self.column_cache[letters] = column
        return column

    def _end_cell(self) -> None:
        value = self._cell_value()
        if value is None or value == "":
            return
        if self.column > self.max_columns:
            raise _too_many_columns(self.row_number, self.max_columns)
        cells = self.cells
        if len(cells) < self.column:
            cells.extend([None] * (self.column - len(cells)))
        cells[self.column - 1] = value

    def _cell_value(self) -> Any:
        raw = self.value
        if raw is None:
            return None
        kind = self.kind
        if kind == "s":
            try:
                return self.shared[int(raw)]
            except (ValueError, IndexError):
                where = self.reference or f"row {self.row_number}"
                raise _damaged(
                    f"cell {where[:20]} refers to text that is missing from the workbook"
                ) from None
        if kind == "b":
            return raw.strip() in ("1", "true")
        if kind == "n":
            try:
                number: int | float = (
                    float(raw) if "." in raw or "e" in raw or "E" in raw else int(raw)
                )
            except ValueError:
                return raw
            if self.style and self.date_styles:
                with contextlib.suppress(ValueError):
                    if int(self.style) in self.date_styles:
                        return _excel_date(number, self.epoch)
            return number
        return raw  # inlineStr, str (a formula's text), e (#N/A), d (ISO date)


def _excel_date(number: float, epoch: Any) -> Any:
    from openpyxl.utils.datetime import from_excel

    try:
        return from_excel(number, epoch)
    except (OverflowError, ValueError):
        return number


def _too_many_columns(row: int, max_columns: int) -> BulkFileError:
    return BulkFileError(
        f"Row {row} has a value beyond column {max_columns}; Points Desk reads at most "
        f"{max_columns} columns. Delete the columns it does not need and upload the file again."
    )


def _xlsx_table(
    content: bytes, deadline: _Deadline, max_columns: int, sheets: _Sheets
) -> Iterator[tuple[int, list[Any]]]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except _ZIP_ERRORS as exc:
        raise BulkFileError(
            "The file could not be read as an Excel workbook (.xlsx): it is not a complete "
            "workbook file. Save it again from Excel, or as CSV."
        ) from exc
    with archive:
        sheet, relations, date1904 = _first_sheet(archive, sheets)
        shared = _SharedStrings()
        strings = next((p for t, p in relations.values() if t.endswith("/sharedStrings")), "")
        if strings:
            for _ in _stream_part(archive, strings, shared, deadline):
                pass
        rows = _SheetRows(shared.strings, _date_styles(archive, relations), date1904, max_columns)
        for _ in _stream_part(archive, sheet, rows, deadline):
            if rows.rows:
                taken, rows.rows = rows.rows, []
                yield from taken


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        text = value[: MAX_CELL_CHARS + 1]
        if len(text) > MAX_CELL_CHARS:
            text = text[:MAX_CELL_CHARS] + "…"
        # Points Desk's own files put a ' before text a spreadsheet would take for a formula; a
        # file downloaded, fixed and uploaded again gets the text back as it was.
        return restore(" ".join(text.replace("\ufeff", "").split()))
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        # Excel keeps numbers as binary floats: 9600098867.0 is a mobile, 1500.5 an amount. It
        # shows 15 significant digits, and so does this: =100*1.1 is 110, not 110.00000000000001.
        value = float(f"{value:.15g}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return _cell_text(str(value))


def _from_table(
    name: str,
    digest: str,
    table: Iterable[tuple[int, list[Any]]],
    encoding: str,
    max_rows: int,
    max_columns: int,
    deadline: _Deadline,
    sheets: _Sheets | None = None,
) -> ParsedFile:
    rows: list[RawRow] = []
    columns: dict[str, int] = {}
    headers: dict[str, str] = {}
    ignored: list[str] = []
    header_seen = False
    width = 0  # the header's last filled column
    for number, cells in table:
        deadline.check()
        if len(cells) > max_columns:
            if any(_cell_text(cell) for cell in cells[max_columns:]):
                raise _too_many_columns(number, max_columns)
            cells = cells[:max_columns]
        texts = [_cell_text(cell) for cell in cells]
        if not any(texts):
            continue
        if not header_seen:
            header_seen = True
            columns, headers, ignored = _read_header(texts, sheets)
            width = max(index for index, text in enumerate(texts) if text) + 1
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
        rows.append(RawRow(number, values, tuple(text for text in texts[width:] if text)))
    if not header_seen:
        raise BulkFileError(f"{_sheet_named(sheets, 'The file')} is empty.{_others(sheets)}")
    if not rows:
        raise BulkFileError(
            f"{_sheet_named(sheets, 'The file')} has a header row but no data rows."
            f"{_others(sheets)}"
        )
    return ParsedFile(
        name,
        digest,
        rows,
        headers,
        ignored,
        encoding,
        sheets.read if sheets else None,
        sheets.others if sheets else (),
    )


def _sheet_named(sheets: _Sheets | None, otherwise: str) -> str:
    return f'The sheet "{sheets.read}"' if sheets and sheets.read is not None else otherwise


def _others(sheets: _Sheets | None) -> str:
    """For a message about the sheet read: the workbook's other sheets, and how to choose one."""
    if not sheets or not sheets.others:
        return ""
    names = ", ".join(f'"{name}"' for name in sheets.others)
    return (
        f" Points Desk reads the sheet the workbook was saved on; its other sheets ({names}) "
        "were not read. Save the workbook with the sheet to send open, and upload it again."
    )


def _read_header(
    texts: list[str], sheets: _Sheets | None = None
) -> tuple[dict[str, int], dict[str, str], list[str]]:
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
        where = f' in the sheet "{sheets.read}"' if sheets and sheets.read is not None else ""
        raise BulkFileError(
            f"Missing column(s){where}: {', '.join(needed)}. Columns found: {found}.{unknown} "
            f"Download the template to see the expected headers.{_others(sheets)}"
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
    #: Per programme the file touches: its credits and debits against its remaining budget
    #: (``services.bulk_programmes.ProgrammeTotal``; filled by ``fit_programmes``).
    programmes: list[Any] = field(default_factory=list)

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


@dataclass
class _Memo:
    """What one ``check_rows`` call has already worked out, by the exact text in the file.

    A file names the same people again and again (a credit per month, a mobile per row); their
    email, mobile and name are checked once (email and mobile are the slow checks), not per row.
    """

    kinds: dict[str, Kind | str] = field(default_factory=dict)
    employees: dict[tuple[str, ...], tuple[Employee | None, dict[str, str]]] = field(
        default_factory=dict
    )


def _memo_kind(text: str, memo: _Memo) -> Kind:
    found = memo.kinds.get(text)
    if found is None:
        try:
            found = parse_kind(text)
        except ValueError as exc:
            found = str(exc)
        memo.kinds[text] = found
    if isinstance(found, Kind):
        return found
    raise ValueError(found)


def _memo_employee(given: dict[str, str], memo: _Memo) -> tuple[Employee | None, dict[str, str]]:
    key = tuple(given[column] for column in EMPLOYEE_COLUMNS)
    found = memo.employees.get(key)
    if found is None:
        try:
            found = (Employee.model_validate(given), {})
        except ValidationError as exc:
            found = (None, {_column_of(at): text for at, text in field_errors(exc).items()})
        memo.employees[key] = found
    return found


def _check_row(
    raw: RawRow, max_points: Decimal, memo: _Memo | None = None
) -> tuple[Allocation | None, dict[str, str]]:
    memo = memo if memo is not None else _Memo()
    values = raw.values
    if is_example_row(values):
        return None, {"row": EXAMPLE_REFUSED}
    if raw.extra:
        shown = ", ".join(f'"{text[:20]}"' for text in raw.extra[:3])
        return None, {
            "row": "More cells than the header, so values may have moved along: a number "
            'with a comma (50,000) splits in two unless quoted ("50,000"). Beyond the header: '
            f"{shown}"
        }
    errors: dict[str, str] = {}
    try:
        kind: Kind | None = _memo_kind(values.get("kind", ""), memo)
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
    # The employee is checked by its own model (once per distinct person, see _Memo), then the
    # allocation by its model with that employee in it: the same checks as the single forms.
    person, person_errors = _memo_employee(employee, memo) if employee else (None, {})
    data = {
        "reference": _PLACEHOLDER_REFERENCE,
        "kind": kind or Kind.CREDIT,
        "amount": values.get("amount", ""),
        "employee": person,
        "card_id": card_id or None,
        "reason": values.get("reason", ""),
    }
    try:
        allocation = Allocation.model_validate(data, context={"max_points": max_points})
    except ValidationError as exc:
        allocation = None
        found = {_column_of(at): text for at, text in field_errors(exc).items()}
    else:
        found = {}
    if person_errors:
        found.pop("row", None)  # "needs the employee's details": the fields say what is wrong
        # In the model's field order: amount, then the employee, then card_id and reason.
        amount = {"amount": found.pop("amount")} if "amount" in found else {}
        found = {**amount, **person_errors, **found}
    for column, message in found.items():
        errors.setdefault(column, message)
    if allocation is None or errors:
        return None, errors
    return allocation, {}


def _who(allocation: Allocation) -> str:
    if allocation.card_id:
        return f"card:{allocation.card_id}"
    assert allocation.employee is not None
    return f"email:{allocation.employee.email}"


def totals_of(rows: int, valid: list[ValidRow], rejected: int) -> Totals:
    """The preview's counts and points for these valid rows (credits and creates, debits)."""
    credits = [v.allocation.amount for v in valid if v.allocation.kind is not Kind.DEBIT]
    debits = [v.allocation.amount for v in valid if v.allocation.kind is Kind.DEBIT]
    return Totals(
        rows=rows,
        valid=len(valid),
        rejected=rejected,
        credit_rows=len(credits),
        credit_points=sum(credits, Decimal("0")),
        debit_rows=len(debits),
        debit_points=sum(debits, Decimal("0")),
    )


def with_rows(preview: Preview, valid: list[ValidRow], rejected: list[RejectedRow]) -> Preview:
    """The preview holding these valid and rejected rows, its totals counted again (a check run
    after ``check_rows`` that refuses rows: existing cards, corrections, programme budgets)."""
    totals = totals_of(preview.totals.rows, valid, len(rejected))
    return replace(preview, valid=valid, rejected=rejected, totals=totals)


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
    memo = _Memo()
    with _no_cycle_collection():
        checked = [(raw, *_check_row(raw, max_points, memo)) for raw in parsed.rows]
    for raw, allocation, errors in checked:
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
    totals = totals_of(len(parsed.rows), valid, len(rejected))
    warnings = []
    if parsed.other_sheets:
        others = ", ".join(f'"{name}"' for name in parsed.other_sheets)
        warnings.append(
            f'Read the sheet "{parsed.sheet}", the one the workbook was saved on; not read: '
            f"{others}. To send another sheet, save the workbook with it open and upload again."
        )
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
    columns = [*COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in preview.file.columns)]
    header = ["row", *columns, "problem"]
    rows = [
        [row.number, *(row.values.get(column, "") for column in columns), row.reason]
        for row in preview.rejected
    ]
    return to_csv(header, rows)
