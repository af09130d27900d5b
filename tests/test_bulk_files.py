"""Reading and checking bulk files: encodings, headers, limits, per-row errors, duplicates."""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import random
import re
import zipfile
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook

from services import models
from services.bulk_files import (
    COLUMNS,
    BulkFileError,
    check_rows,
    error_file,
    parse_file,
    template_csv,
    template_xlsx,
    to_csv,
)
from services.models import Kind
from services.spreadsheet import neutralise, restore

HEADER = ",".join(COLUMNS)
GOOD_CREATE = "create,Ravi,Mr,M,ravi@example.com,9600098867,,1500,Q3 incentive"


def csv_bytes(*lines: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode("utf-8")


def xlsx_bytes(rows: list[list[object]]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# --- templates -----------------------------------------------------------------------------------


def test_csv_template_has_every_column_and_an_example_row_that_is_refused():
    template = template_csv()
    assert template.startswith(codecs.BOM_UTF8)
    parsed = parse_file("template.csv", template)
    assert list(parsed.columns) == list(COLUMNS)
    (example,) = parsed.rows
    assert example.values["reason"] == "Example — delete this row"
    preview = check_rows(parsed)
    assert preview.valid == [] and preview.totals.credit_points == 0
    assert preview.rejected[0].errors == {"row": "This is the template's example row; replace it"}
    # Filled in: the manager's own rows go under (or over) the example, which stays refused.
    parsed = parse_file("filled.csv", template + GOOD_CREATE.encode() + b"\r\n")
    preview = check_rows(parsed)
    assert [v.values["email"] for v in preview.valid] == ["ravi@example.com"]
    assert [r.number for r in preview.rejected] == [2]


def test_xlsx_template_has_the_header_an_example_and_a_guide_sheet_and_reads_back():
    workbook = load_workbook(io.BytesIO(template_xlsx()))
    assert workbook.sheetnames == ["Rows", "How to fill"]
    assert [c.value for c in workbook["Rows"][1]] == list(COLUMNS)
    untouched = check_rows(parse_file("template.xlsx", template_xlsx()))
    assert untouched.valid == []
    assert untouched.rejected[0].reason == "row: This is the template's example row; replace it"
    workbook["Rows"].append(GOOD_CREATE.split(","))
    buffer = io.BytesIO()
    workbook.save(buffer)
    parsed = parse_file("filled.xlsx", buffer.getvalue())
    assert [row.number for row in parsed.rows] == [2, 3]
    assert parsed.rows[1].values["first_name"] == "Ravi"
    assert [v.number for v in check_rows(parsed).valid] == [3]


@pytest.mark.parametrize(
    "changed",
    [
        {"amount": "99999"},  # only the amount changed: the reason still says "delete this row"
        {"reason": "example - Delete this row!"},  # retyped by hand
        {"reason": "Q3 incentive"},  # the reason replaced, the example's email kept
        {"email": "Example.Employee@Example.com", "reason": "Q3"},
    ],
)
def test_an_example_row_half_filled_is_still_refused(changed):
    from services.bulk_files import EXAMPLE_ROW

    values = {**EXAMPLE_ROW, **changed}
    line = ",".join(values[column] for column in COLUMNS)
    preview = check_rows(parse_file("half.csv", csv_bytes(line)))
    assert preview.valid == []
    assert "template's example row" in preview.rejected[0].reason


# --- encodings and delimiters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "encoding"),
    [
        (lambda text: text.encode("utf-8"), "utf-8"),
        (lambda text: codecs.BOM_UTF8 + text.encode("utf-8"), "utf-8-sig"),
        (lambda text: text.encode("utf-16"), "utf-16"),  # Python writes the BOM
        (lambda text: text.encode("cp1252"), "cp1252"),
    ],
)
def test_encodings_are_read_and_the_name_survives(encoded, encoding):
    text = f"{HEADER}\ncreate,José,Mr,M,jose@example.com,9600098867,,100,Bonus – Q3\n"
    parsed = parse_file("people.csv", encoded(text))
    assert parsed.encoding == encoding
    assert parsed.rows[0].values["first_name"] == "José"
    assert parsed.rows[0].values["reason"] == "Bonus – Q3"


def test_semicolon_files_from_european_excel_are_sniffed():
    content = (
        b"kind;first_name;title;gender;email;mobile;card_id;amount;reason\n"
        b'create;Ravi;Mr;M;ravi@example.com;9600098867;;1500,50;"Q3; top performer"\n'
    )
    row = parse_file("semi.csv", content).rows[0]
    assert row.values["amount"] == "1500,50"  # a decimal comma is refused later, not misread
    assert row.values["reason"] == "Q3; top performer"


# --- headers -------------------------------------------------------------------------------------


def test_headers_are_matched_forgivingly_and_cr_dr_are_kinds():
    content = csv_bytes(
        "CR,,,,,,EKC04AZHXP,250,top-up",
        "dr,,,,,,EKC04AZHXP,50,",
        header="Transaction Type, First Name ,Salutation,SEX,E-mail,Mobile Number,"
        "EnKash_Card_ID,POINTS,Remarks",
    )
    parsed = parse_file("loose.csv", content)
    assert parsed.columns["first_name"] == "First Name"
    assert parsed.columns["card_id"] == "EnKash_Card_ID"
    preview = check_rows(parsed)
    assert [v.allocation.kind for v in preview.valid] == [Kind.CREDIT, Kind.DEBIT]


def test_name_and_phone_aliases():
    content = csv_bytes(
        "create,Priya,Ms,F,priya@example.com,+91 96000 98868,,10,",
        header="type,name,title,gender,email,phone,card,amount,note",
    )
    preview = check_rows(parse_file("aliases.csv", content))
    assert preview.valid[0].allocation.employee.mobile == "9600098868"


def test_missing_required_headers_are_named_with_what_was_found():
    content = b"kind,first name,Emial,value2\ncreate,Ravi,x,1\n"
    with pytest.raises(BulkFileError) as error:
        parse_file("bad.csv", content)
    message = str(error.value)
    assert "Missing column(s): amount" in message
    assert "card_id" in message
    assert "'Emial'" in message and "'value2'" in message
    assert "template" in message


def test_unknown_headers_are_ignored_with_a_warning():
    content = csv_bytes(GOOD_CREATE + ",E123", header=HEADER + ",employee code")
    preview = check_rows(parse_file("extra.csv", content))
    assert preview.totals.valid == 1
    assert preview.warnings == ['Ignored column(s): "employee code"']


def test_two_columns_meaning_the_same_thing_are_refused():
    with pytest.raises(BulkFileError, match='"amount" and "points"'):
        parse_file("double.csv", b"kind,card_id,amount,points\ncredit,EKC1234,1,2\n")


# --- limits and damaged files --------------------------------------------------------------------


def test_size_limit_says_how_big_and_what_to_do():
    with pytest.raises(BulkFileError, match=r"1\.0 MB; the limit is 0 MB.*Split"):
        parse_file("big.csv", b"x" * 1024 * 1024, max_bytes=1000)


def test_row_limit_counts_data_rows():
    lines = [f"credit,,,,,,EKC0000{n},1,r{n}" for n in range(5)]
    assert len(parse_file("ok.csv", csv_bytes(*lines), max_rows=5).rows) == 5
    with pytest.raises(BulkFileError, match="more than 4 rows"):
        parse_file("big.csv", csv_bytes(*lines), max_rows=4)


def test_empty_old_excel_and_broken_xlsx_files_get_plain_messages():
    with pytest.raises(BulkFileError, match="empty"):
        parse_file("empty.csv", b"\n\n")
    with pytest.raises(BulkFileError, match=r"\.xls"):
        parse_file("old.xls", b"\xd0\xcf\x11\xe0" + b"\x00" * 100)
    with pytest.raises(BulkFileError, match="Excel workbook"):
        parse_file("broken.xlsx", b"PK\x03\x04 not really a zip")


# --- xlsx values ---------------------------------------------------------------------------------


def test_xlsx_numbers_and_blank_rows_keep_the_row_numbers_the_manager_sees():
    content = xlsx_bytes(
        [
            list(COLUMNS),
            ["create", "Ravi", "Mr", "M", "ravi@example.com", 9600098867, None, 1500.5, "Q3"],
            [None] * 9,
            ["credit", None, None, None, None, None, "EKC04AZHXP", 250, None],
        ]
    )
    parsed = parse_file("sheet.xlsx", content)
    assert [row.number for row in parsed.rows] == [2, 4]
    assert parsed.rows[0].values["mobile"] == "9600098867"
    preview = check_rows(parsed)
    assert [v.allocation.amount for v in preview.valid] == [Decimal("1500.50"), Decimal("250.00")]


# --- checking rows -------------------------------------------------------------------------------


def test_every_bad_field_is_reported_with_its_row_number():
    content = csv_bytes(
        GOOD_CREATE,
        "create,R2D2,Dr,X,not-an-email,12345,,1e3,",
        "credit,,,,,,,250,",
        "refund,,,,,,EKC04AZHXP,10,",
        "debit,,,,,,EKC04AZHXP,-5,",
        "create,Asha,Ms,F,asha@example.com,9600098869,EKC04AZHXP,10,",
    )
    preview = check_rows(parse_file("mixed.csv", content))
    assert [v.number for v in preview.valid] == [2]
    rejected = {r.number: r.errors for r in preview.rejected}
    assert set(rejected) == {3, 4, 5, 6, 7}
    assert rejected[3]["first_name"].startswith("First name can hold letters")
    assert rejected[3]["title"] == "Title must be one of Mr, Mrs, Ms"
    assert rejected[3]["gender"] == "Gender must be one of M, F"
    assert rejected[3]["email"].startswith("Not a valid email address")
    assert "10-digit" in rejected[3]["mobile"]
    assert rejected[3]["amount"].startswith("Enter the points as a number")
    assert rejected[4]["card_id"].startswith("Give the card id")
    assert rejected[5]["kind"].startswith("kind must be create, credit or debit")
    assert rejected[6]["amount"] == "Points must be more than zero"
    assert "leave card_id empty" in rejected[7]["card_id"]
    assert preview.totals.rows == 6 and preview.totals.rejected == 5


def test_amount_above_the_configured_maximum_is_refused():
    preview = check_rows(
        parse_file("max.csv", csv_bytes("credit,,,,,,EKC04AZHXP,5000,")),
        max_points=Decimal("1000"),
    )
    assert preview.rejected[0].errors["amount"] == "At most 1,000 points in one transaction"


def test_duplicates_within_the_file_are_flagged_against_the_first_row():
    content = csv_bytes(
        GOOD_CREATE,
        "credit,,,,,,EKC04AZHXP,100,Q3",
        "credit,,,,,,ekc04azhxp,100.00,Q3",  # same card (case), same amount and reason
        "credit,,,,,,EKC04AZHXP,100,referral",  # a different reason: a separate payment
        "create,Ravi K,Mr,M,RAVI@example.com,9600098870,,200,",  # same email as row 2
        "create,Ravi,Mr,M,other@example.com,+91 96000 98867,,300,",  # same mobile as row 2
    )
    preview = check_rows(parse_file("dupes.csv", content))
    assert [v.number for v in preview.valid] == [2, 3, 5]
    rejected = {r.number: r.errors for r in preview.rejected}
    assert "copy of row 3" in rejected[4]["row"]
    assert "Row 2 already opens an account" in rejected[6]["email"]
    assert "Row 2 already opens an account" in rejected[7]["mobile"]


def test_debits_on_one_card_add_up_against_the_known_balance():
    balances = {"EKCAAAA1": Decimal("500.00"), "EKCBBBB2": None}
    content = csv_bytes(
        "debit,,,,,,EKCAAAA1,300,a",
        "debit,,,,,,EKCAAAA1,150,b",
        "debit,,,,,,EKCAAAA1,100,c",  # 550 > 500: refused
        "debit,,,,,,EKCAAAA1,50,d",  # 500: fits
        "debit,,,,,,EKCBBBB2,10000,",  # balance unknown: allowed, with a warning
    )
    preview = check_rows(parse_file("debits.csv", content), known_balance=balances.get)
    assert [v.number for v in preview.valid] == [2, 3, 5, 6]
    message = preview.rejected[0].errors["amount"]
    assert preview.rejected[0].number == 4
    assert "holds 500.00 points" in message and "already debit 450.00" in message
    assert any("EKCBBBB2" in warning for warning in preview.warnings)


def test_totals_and_the_pool_verdict():
    content = csv_bytes(
        GOOD_CREATE,
        "credit,,,,,,EKC04AZHXP,500.25,",
        "debit,,,,,,EKC04AZHXP,200,",
        "debit,,,,,,EKC04AZHXP,oops,",
    )
    parsed = parse_file("totals.csv", content)
    fits = check_rows(parsed, pool_balance=Decimal("2000.25"))
    totals = fits.totals
    assert (totals.rows, totals.valid, totals.rejected) == (4, 3, 1)
    assert (totals.credit_rows, totals.credit_points) == (2, Decimal("2000.25"))
    assert (totals.debit_rows, totals.debit_points) == (1, Decimal("200.00"))
    assert totals.net_points == Decimal("1800.25")
    assert fits.fits_pool is True
    short = check_rows(parsed, pool_balance=Decimal("2000.24"))
    assert short.fits_pool is False and short.shortfall == Decimal("0.01")
    assert check_rows(parsed).fits_pool is None


# --- the error file and neutralising -------------------------------------------------------------


def test_error_file_lists_rejected_rows_with_reasons_and_neutralises_formulas():
    content = csv_bytes(
        GOOD_CREATE,
        'create,=HYPERLINK("http://x"),Mr,M,bad,123,,10,@SUM(A1)',
    )
    preview = check_rows(parse_file("evil.csv", content))
    text = error_file(preview).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["row", *COLUMNS, "problem"]
    assert len(rows) == 2 and rows[1][0] == "3"
    assert rows[1][2].startswith("'=HYPERLINK")
    assert rows[1][9] == "'@SUM(A1)"
    assert "email: Not a valid email address" in rows[1][10]


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@x", "\tx", "\rx"])
def test_neutralise_prefixes_formula_starts(text):
    assert neutralise(text) == "'" + text


def test_neutralise_leaves_numbers_and_plain_text():
    assert neutralise(Decimal("-5.00")) == Decimal("-5.00")
    assert neutralise("Ravi") == "Ravi"
    assert to_csv(["a"], [[Decimal("12.50")]]).decode("utf-8-sig").splitlines()[1] == "12.50"


# --- hostile and damaged files -------------------------------------------------------------------
#
# Each file below is made here: a normal workbook from openpyxl whose zip parts are then rewritten.

SHEET = "xl/worksheets/sheet1.xml"
MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
CREDIT_ROW = ["credit", None, None, None, None, None, "EKC04AZHXP", 250, "Q3"]


def rezip(content: bytes, parts: dict[str, bytes | None]) -> bytes:
    """The same workbook with ``parts`` replaced, added, or (``None``) removed."""
    source = zipfile.ZipFile(io.BytesIO(content))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
        for name in source.namelist():
            data = parts.get(name, source.read(name)) if name in parts else source.read(name)
            if data is not None:
                target.writestr(name, data)
        for name, data in parts.items():
            if name not in source.namelist() and data is not None:
                target.writestr(name, data)
    return buffer.getvalue()


def part(content: bytes, name: str) -> bytes:
    return zipfile.ZipFile(io.BytesIO(content)).read(name)


def credit_rows(count: int) -> list[list[object]]:
    return [
        ["credit", None, None, None, None, None, f"EKC{n:07d}", 10 + n, f"r{n}"]
        for n in range(count)
    ]


def with_dimension(content: bytes, ref: str) -> bytes:
    sheet = part(content, SHEET).decode()
    sheet, count = re.subn(r'<dimension ref="[^"]*"\s*/>', f'<dimension ref="{ref}"/>', sheet)
    assert count == 1
    return rezip(content, {SHEET: sheet.encode()})


@pytest.mark.timeout(20)
def test_a_sheet_declaring_every_cell_of_excel_is_read_in_moments():
    content = with_dimension(xlsx_bytes([list(COLUMNS), CREDIT_ROW]), "A1:XFD1048576")
    # Formatting reaching Excel's last cell (an empty, styled cell there) is what Excel writes
    # after a whole-sheet format; the rows between are not in the file at all.
    corner = b'<row r="1048576"><c r="XFD1048576" s="0"/></row></sheetData>'
    content = rezip(content, {SHEET: part(content, SHEET).replace(b"</sheetData>", corner)})
    assert len(content) < 10_000  # a few KB that used to cost many minutes of CPU
    parsed = parse_file("huge.xlsx", content)
    assert [row.number for row in parsed.rows] == [2]
    assert parsed.rows[0].values["card_id"] == "EKC04AZHXP"


def test_a_sheet_declaring_fewer_rows_than_it_holds_loses_none():
    content = with_dimension(xlsx_bytes([list(COLUMNS), *credit_rows(30)]), "A1:I2")
    parsed = parse_file("short.xlsx", content)
    assert [row.number for row in parsed.rows] == list(range(2, 32))
    assert parsed.rows[-1].values["card_id"] == "EKC0000029"


def shared_strings_workbook(*, with_strings: bool = True) -> bytes:
    """A workbook the way Excel writes it: texts in xl/sharedStrings.xml, cells point at them."""
    texts = [*COLUMNS, "credit", "EKC04AZHXP"]
    cells = "".join(
        f'<c r="{letter}1" t="s"><v>{index}</v></c>' for index, letter in enumerate("ABCDEFGHI")
    )
    sheet = (
        f'<worksheet xmlns="{MAIN_NS}"><dimension ref="A1:I2"/><sheetData>'
        f'<row r="1">{cells}</row>'
        '<row r="2"><c r="A2" t="s"><v>9</v></c><c r="G2" t="s"><v>10</v></c>'
        '<c r="H2"><v>1500.5</v></c><c r="I2" t="s"><v>11</v></c></row>'
        "</sheetData></worksheet>"
    )
    items = "".join(f"<si><t>{text}</t></si>" for text in texts)
    # A rich-text reason with a phonetic guide: the runs are joined, the guide left out.
    items += "<si><r><t>Q3 </t></r><r><rPr><b/></rPr><t>top</t></r><rPh><t>x</t></rPh></si>"
    strings = f'<sst xmlns="{MAIN_NS}">{items}</sst>'
    base = xlsx_bytes([["x"]])
    rels = part(base, "xl/_rels/workbook.xml.rels").decode()
    rels = rels.replace(
        "</Relationships>",
        '<Relationship Id="rIdS" Target="sharedStrings.xml" Type="http://schemas.openxmlformats'
        '.org/officeDocument/2006/relationships/sharedStrings"/></Relationships>',
    )
    return rezip(
        base,
        {
            SHEET: sheet.encode(),
            "xl/_rels/workbook.xml.rels": rels.encode(),
            "xl/sharedStrings.xml": strings.encode() if with_strings else None,
        },
    )


def test_shared_texts_are_read_like_excel_writes_them():
    parsed = parse_file("excel.xlsx", shared_strings_workbook())
    assert list(parsed.columns) == list(COLUMNS)
    values = parsed.rows[0].values
    assert (values["kind"], values["card_id"], values["amount"]) == (
        "credit",
        "EKC04AZHXP",
        "1500.5",
    )
    assert values["reason"] == "Q3 top"


NOT_WELL_FORMED = f'<worksheet xmlns="{MAIN_NS}"><sheetData><row r="1"><c r="A1"'.encode()
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b'<worksheet xmlns="' + MAIN_NS.encode() + b'"><sheetData><row r="1">'
    b'<c r="A1" t="inlineStr"><is><t>&lol3;</t></is></c></row></sheetData></worksheet>'
)


def damaged_sheet(sheet: bytes | None) -> bytes:
    return rezip(xlsx_bytes([list(COLUMNS), CREDIT_ROW]), {SHEET: sheet})


def truncated(content: bytes) -> bytes:
    return content[: len(content) * 2 // 3]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: truncated(xlsx_bytes([list(COLUMNS), CREDIT_ROW])), "not a complete workbook"),
        (lambda: damaged_sheet(None), "part xl/worksheets/sheet1.xml is missing"),
        (lambda: damaged_sheet(NOT_WELL_FORMED), "sheet1.xml is not well-formed XML"),
        (lambda: damaged_sheet(BILLION_LAUGHS), "DOCTYPE"),
        (lambda: shared_strings_workbook(with_strings=False), "xl/sharedStrings.xml is missing"),
        (
            lambda: damaged_sheet(
                f'<worksheet xmlns="{MAIN_NS}"><sheetData><row r="1"><c r="B1" t="s"><v>0</v>'
                "</c></row></sheetData></worksheet>".encode()
            ),
            "cell B1 refers to text that is missing",
        ),
        (
            lambda: damaged_sheet(
                f'<worksheet xmlns="{MAIN_NS}"><sheetData><row r="3"/><row r="2"/>'
                "</sheetData></worksheet>".encode()
            ),
            "row 2 comes after row 3",
        ),
        (
            lambda: rezip(xlsx_bytes([["x"]]), {"xl/workbook.xml": b"<workbook><sheets>"}),
            "workbook.xml is not well-formed XML",
        ),
        (
            lambda: rezip(xlsx_bytes([["x"]]), {"[Content_Types].xml": None}),
            "zip archive of something else",
        ),
    ],
    ids=[
        "truncated-zip",
        "sheet-missing",
        "invalid-xml",
        "entity-expansion",
        "shared-texts-part-missing",
        "shared-text-missing",
        "rows-out-of-order",
        "workbook-invalid",
        "not-a-workbook",
    ],
)
def test_damaged_workbooks_are_refused_with_a_sentence(make, message):
    with pytest.raises(BulkFileError, match=re.escape(message)) as error:
        parse_file("damaged.xlsx", make())
    assert "Excel" in str(error.value)


@pytest.mark.timeout(60)
def test_a_part_that_unpacks_to_more_than_the_limit_is_not_unpacked():
    padding = b" " * (101 * 1024 * 1024)  # deflates to about 100 KB
    sheet = part(xlsx_bytes([list(COLUMNS), CREDIT_ROW]), SHEET)
    bomb = damaged_sheet(sheet.replace(b"<sheetData>", b"<sheetData>" + padding, 1))
    assert len(bomb) < 1024 * 1024
    with pytest.raises(BulkFileError, match=r"sheet1\.xml unpacks to 101 MB; the limit is 100 MB"):
        parse_file("bomb.xlsx", bomb)


def test_hidden_sheets_and_the_guide_are_skipped_for_the_first_visible_sheet():
    workbook = Workbook()
    workbook.active.title = "Secret"
    workbook.active.append(list(COLUMNS))
    workbook.active.append(["credit", None, None, None, None, None, "EKCHIDDEN1", 1, None])
    workbook.active.sheet_state = "hidden"
    workbook.create_sheet("How to fill").append(["column", "what to write"])
    shown = workbook.create_sheet("Rows")
    shown.append(list(COLUMNS))
    shown.append(CREDIT_ROW)
    buffer = io.BytesIO()
    workbook.save(buffer)
    parsed = parse_file("sheets.xlsx", buffer.getvalue())
    assert [row.values["card_id"] for row in parsed.rows] == ["EKC04AZHXP"]


def test_xlsx_dates_numbers_and_booleans_read_as_the_cell_shows_them():
    content = xlsx_bytes(
        [
            list(COLUMNS),
            ["credit", None, None, None, None, None, "EKC04AZHXP", 12.25, datetime(2025, 4, 1)],
        ]
    )
    values = parse_file("dates.xlsx", content).rows[0].values
    assert values["amount"] == "12.25"
    assert values["reason"] == "2025-04-01T00:00:00"


def test_reading_stops_at_the_row_limit_and_at_the_time_budget():
    content = xlsx_bytes([list(COLUMNS), *credit_rows(10)])
    assert len(parse_file("ok.xlsx", content, max_rows=10).rows) == 10
    with pytest.raises(BulkFileError, match="more than 9 rows"):
        parse_file("big.xlsx", content, max_rows=9)
    for name, data in (("slow.xlsx", content), ("slow.csv", csv_bytes(GOOD_CREATE))):
        with pytest.raises(BulkFileError, match=r"took longer than 0 seconds, so it was stopped"):
            parse_file(name, data, max_seconds=0)


def test_values_beyond_the_column_limit_are_refused_and_long_cells_cut():
    wide = xlsx_bytes([list(COLUMNS), [*CREDIT_ROW, *([None] * 200), "stray"]])
    with pytest.raises(BulkFileError, match="Row 2 has a value beyond column 200"):
        parse_file("wide.xlsx", wide)
    with pytest.raises(BulkFileError, match="Row 3 has a value beyond column 9"):
        parse_file(
            "wide.csv", csv_bytes("credit,,,,,,EKC1,1,", "credit,,,,,,EKC2,1,,x"), max_columns=9
        )
    long_reason = "x" * 5000
    parsed = parse_file("long.csv", csv_bytes(f"credit,,,,,,EKC04AZHXP,1,{long_reason}"))
    assert len(parsed.rows[0].values["reason"]) == 1001
    preview = check_rows(parsed)
    assert preview.rejected[0].errors["reason"] == "Reason can be at most 200 characters"


@pytest.mark.timeout(120)
def test_no_corruption_of_a_workbook_or_csv_escapes_the_reader():
    """Flip bytes anywhere in real files: the reader answers with rows or a BulkFileError."""
    workbook = shared_strings_workbook()
    plain = xlsx_bytes([list(COLUMNS), CREDIT_ROW, *credit_rows(20)])
    text = csv_bytes(GOOD_CREATE, 'credit,,,,,,EKC04AZHXP,1,"a, b"')
    randomness = random.Random(20250401)
    for original, name in ((workbook, "w.xlsx"), (plain, "p.xlsx"), (text, "t.csv")):
        for _ in range(150):
            damaged = bytearray(original)
            for _ in range(randomness.randint(1, 6)):
                damaged[randomness.randrange(len(damaged))] = randomness.randrange(256)
            with contextlib.suppress(BulkFileError):
                parse_file(name, bytes(damaged))


# --- hostile CSV text ----------------------------------------------------------------------------


def test_an_unclosed_quote_that_swallows_rows_is_refused_naming_the_row():
    content = csv_bytes(
        "credit,,,,,,EKC04AZHXP,100,first",
        'credit,,,,,,EKC04AZHXQ,200,"Q3 bonus',
        "credit,,,,,,EKC04AZHXR,300,third",
        "credit,,,,,,EKC04AZHXS,400,fourth",
    )
    with pytest.raises(BulkFileError) as error:
        parse_file("quote.csv", content)
    message = str(error.value)
    assert message.startswith('Row 3 (line 3 of the file) has a quote (") in column 9')
    assert "lines 4–5 were read into that one cell" in message


def test_a_quote_closed_rows_later_is_refused_too_but_a_cell_with_a_line_break_is_read():
    with pytest.raises(BulkFileError, match=r"Row 2 \(line 2 of the file\) has a quote"):
        parse_file("late.csv", csv_bytes('credit,,,,,,EKC04AZHXP,"1', 'credit,,,,,,EKC2,2",x'))
    parsed = parse_file("multi.csv", csv_bytes('credit,,,,,,EKC04AZHXP,100,"Q3\ntop"'))
    assert parsed.rows[0].values["reason"] == "Q3 top"


def test_a_cell_longer_than_the_csv_field_limit_is_explained():
    content = csv_bytes('credit,,,,,,EKC04AZHXP,100,"' + "x" * (csv.field_size_limit() + 10))
    with pytest.raises(BulkFileError, match=r"Row 2 \(line 2 of the file\) has a cell longer"):
        parse_file("long.csv", content)


TEXT = f"{HEADER}\ncreate,José,Mr,M,jose@example.com,9600098867,,100,Bonus – Q3\n"


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (TEXT.encode("utf-16-le"), "utf-16-le"),
        (TEXT.encode("utf-16-be"), "utf-16-be"),
        (TEXT.encode("utf-32"), "utf-32"),
        (TEXT.encode("utf-32-le"), "utf-32-le"),
        (TEXT.encode("utf-32-be"), "utf-32-be"),
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16"),
        (TEXT.replace(",", "\t").encode("utf-16"), "utf-16"),  # Excel's "Unicode Text"
    ],
)
def test_utf16_and_utf32_are_recognised_with_or_without_a_byte_order_mark(content, encoding):
    parsed = parse_file("wide.csv", content)
    assert parsed.encoding == encoding
    assert parsed.rows[0].values["first_name"] == "José"
    assert parsed.rows[0].values["reason"] == "Bonus – Q3"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (TEXT.encode("cp1252").replace(b"Jos\xe9", b"Jos\x81"), "could not be recognised"),
        (codecs.BOM_UTF8 + TEXT.encode("cp1252"), "looks like UTF-8 text but has bytes"),
        (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")[:-1], "looks like UTF-16 text"),
        (HEADER.encode() + b"\ncredit,\x00,,,,,EKC04AZHXP,1,\n", "not look like a CSV"),
    ],
    ids=["undefined-cp1252-byte", "bad-utf8-after-bom", "odd-utf16", "nul-bytes"],
)
def test_text_in_no_known_encoding_says_to_save_as_csv_utf8(content, message):
    with pytest.raises(BulkFileError, match=message):
        parse_file("odd.csv", content)


def test_a_decimal_comma_amount_is_refused_as_ambiguous_not_read_as_hundreds():
    content = (
        b"kind;card_id;amount;reason\n"
        b"credit;EKC04AZHXP;1,5;a\n"
        b"credit;EKC04AZHXP;1500,50;b\n"
        b'credit;EKC04AZHXP;"1,50,000";c\n'
        b"credit;EKC04AZHXP;150,000;d\n"
    )
    preview = check_rows(parse_file("commas.csv", content))
    rejected = {row.number: row.errors["amount"] for row in preview.rejected}
    assert rejected == {
        2: "1,5 is ambiguous: write 1.5 or 15",
        3: "1500,50 is ambiguous: write 1500.50 or 150050",
    }
    assert [v.allocation.amount for v in preview.valid] == [Decimal("150000.00")] * 2


def test_each_distinct_employee_is_validated_once(monkeypatch):
    calls = []
    real = models.parse_email
    monkeypatch.setattr(models, "parse_email", lambda value: calls.append(value) or real(value))
    person = "Ravi,Mr,M,ravi@example.com,9600098867"
    content = csv_bytes(
        f"credit,{person},,100,January",
        f"credit,{person},,100,February",
        f"credit,{person},,100,March",
        "create,Asha,Ms,F,asha@example.com,9600098869,,10,",
    )
    preview = check_rows(parse_file("repeat.csv", content))
    assert preview.totals.valid == 4
    assert calls == ["ravi@example.com", "asha@example.com"]
    employees = {id(v.allocation.employee) for v in preview.valid[:3]}
    assert len(employees) == 1


# --- files that moved, files sent back, workbooks of several sheets -------------------------------


def test_a_row_with_more_cells_than_the_header_is_refused_not_shifted():
    """50,000 written without quotes splits into two cells: the row would pay 50 with "000" as
    its reason. It is refused, naming the cells beyond the header."""
    preview = check_rows(
        parse_file(
            "commas.csv",
            csv_bytes(
                "credit,,,,,,EKC04AZHXP,1,500,Diwali bonus",
                "credit,,,,,,EKC04AZHXQ,250,Diwali bonus,",  # an empty cell more: harmless
            ),
        )
    )
    (refused,) = preview.rejected
    assert refused.number == 2
    assert "More cells than the header" in refused.reason
    assert refused.reason.endswith('Beyond the header: "Diwali bonus"')
    assert 'splits in two unless quoted ("50,000")' in refused.reason
    (ready,) = preview.valid
    assert ready.number == 3 and ready.allocation.amount == Decimal("250")


def test_a_cell_of_several_lines_with_commas_is_read_as_one_cell():
    parsed = parse_file(
        "lines.csv", csv_bytes('credit,,,,,,EKC04AZHXP,100,"Diwali\nand, after it, Q3"')
    )
    assert parsed.rows[0].values["reason"] == "Diwali and, after it, Q3"


def _fixed(error_csv: bytes | str, **changes: str) -> bytes:
    """The rejected-rows file as a manager sends it back: fixed, without its row and problem."""
    text = error_csv.decode("utf-8-sig") if isinstance(error_csv, bytes) else error_csv
    rows = list(csv.DictReader(io.StringIO(text)))
    columns = [c for c in rows[0] if c not in ("row", "problem")]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(row | changes for row in rows)
    return out.getvalue().encode()


def test_the_rejected_rows_of_a_correction_file_keep_what_they_correct():
    """Without ``corrects``, a fixed row would go out as a plain payment, and the failed row it
    corrects could then be paid again from the correction file."""
    header = f"{HEADER},corrects"
    content = csv_bytes(
        "credit,,,,,,EKC04AZHXP,700.001,Diwali,PD-B1-000002",
        "credit,,,,,,EKC04AZHXQ,700,Diwali,PD-B1-000003",
        header=header,
    )
    preview = check_rows(parse_file("corrections.csv", content))
    rows = list(csv.DictReader(io.StringIO(error_file(preview).decode("utf-8-sig"))))
    assert [(r["row"], r["corrects"]) for r in rows] == [("2", "PD-B1-000002")]
    again = check_rows(parse_file("fixed.csv", _fixed(error_file(preview), amount="700")))
    (row,) = again.valid
    assert row.values["corrects"] == "PD-B1-000002"


def test_a_rejected_row_downloaded_fixed_and_uploaded_reads_as_it_was_written():
    """The rejected-rows file puts a ' before text that starts like a formula; reading the file
    back takes it away again, so +asha@example.com does not become '+asha@example.com."""
    content = csv_bytes("create,Asha,Dr,F,+asha@example.com,9600098867,,100,-5% adjustment")
    preview = check_rows(parse_file("first.csv", content))
    (rejected,) = preview.rejected
    assert "title" in rejected.reason
    text = error_file(preview).decode("utf-8-sig")
    assert "'+asha@example.com" in text and "'-5% adjustment" in text  # safe to open
    again = check_rows(parse_file("fixed.csv", _fixed(text, title="Ms")))
    (row,) = again.valid
    assert row.allocation.employee.email == "+asha@example.com"
    assert row.allocation.reason == "-5% adjustment"


@given(st.text())
def test_restore_gives_back_whatever_text_was_neutralised(text):
    assert restore(neutralise(text)) == text
    assert not neutralise(text).startswith(("=", "+", "-", "@", "\t", "\r"))


def _workbook(sheets: list[tuple[str, list[list[object]]]], active: int) -> bytes:
    workbook = Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets:
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    workbook.active = active
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_a_workbook_is_read_on_the_sheet_it_was_saved_on_and_the_preview_names_it():
    january = [list(COLUMNS), ["credit", "", "", "", "", "", "EKCJAN0001", 5000, "January"]]
    february = [list(COLUMNS), ["credit", "", "", "", "", "", "EKCFEB0001", 100, "February"]]
    content = _workbook([("January (paid)", january), ("February", february)], active=1)
    parsed = parse_file("months.xlsx", content)
    assert parsed.sheet == "February" and parsed.other_sheets == ("January (paid)",)
    assert [r.values["card_id"] for r in parsed.rows] == ["EKCFEB0001"]
    (warning,) = check_rows(parsed).warnings
    assert warning.startswith('Read the sheet "February"') and '"January (paid)"' in warning
    single = parse_file("one.xlsx", _workbook([("Rows", february)], active=0))
    assert single.sheet == "Rows" and not check_rows(single).warnings


def test_an_empty_sheet_read_names_the_sheets_that_were_not():
    rows = [list(COLUMNS), ["credit", "", "", "", "", "", "EKC04AZHXP", 100, "Q3"]]
    content = _workbook([("Sheet1", []), ("Rows", rows)], active=0)
    with pytest.raises(BulkFileError) as error:
        parse_file("two.xlsx", content)
    assert str(error.value).startswith('The sheet "Sheet1" is empty.')
    assert 'its other sheets ("Rows") were not read' in str(error.value)


def _rewritten(workbook: bytes, part: str, changes: dict[bytes, bytes]) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(workbook))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == part:
                for old, new in changes.items():
                    assert old in data
                    data = data.replace(old, new)
            target.writestr(item, data)
    return out.getvalue()


def test_a_number_a_formula_made_reads_as_excel_shows_it():
    """=100*1.1 is saved by Excel as 110.00000000000001 (17 digits) and shown as 110."""
    content = xlsx_bytes(
        [
            list(COLUMNS),
            ["credit", "", "", "", "", "", "EKC04AZHXP", 111, "Q3"],
            ["credit", "", "", "", "", "", "EKC04AZHXQ", 222, "Q3"],
        ]
    )
    saved = {"111": "110.00000000000001", "222": "0.30000000000000004"}  # as Excel writes them
    content = _rewritten(
        content,
        "xl/worksheets/sheet1.xml",
        {f"<v>{k}</v>".encode(): f"<v>{v}</v>".encode() for k, v in saved.items()},
    )
    preview = check_rows(parse_file("formulas.xlsx", content))
    assert [r.allocation.amount for r in preview.valid] == [Decimal("110"), Decimal("0.3")]


def test_a_csv_named_xlsx_is_read_as_the_csv_it_is():
    parsed = parse_file("renamed.xlsx", csv_bytes(GOOD_CREATE))
    assert parsed.encoding == "utf-8" and parsed.rows[0].values["first_name"] == "Ravi"
    with pytest.raises(BulkFileError, match="not a complete workbook file"):
        parse_file("broken.xlsx", b"\x00\x01\x02binary" * 10)
