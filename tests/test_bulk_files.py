"""Reading and checking bulk files: encodings, headers, limits, per-row errors, duplicates."""

from __future__ import annotations

import codecs
import csv
import io
from decimal import Decimal

import pytest
from openpyxl import Workbook, load_workbook

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
from services.spreadsheet import neutralise

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


def test_csv_template_has_every_column_and_reads_back_with_one_row_added():
    template = template_csv()
    assert template.startswith(codecs.BOM_UTF8)
    with pytest.raises(BulkFileError, match="no data rows"):
        parse_file("template.csv", template)
    parsed = parse_file("filled.csv", template + GOOD_CREATE.encode() + b"\r\n")
    assert list(parsed.columns) == list(COLUMNS)
    assert parsed.rows[0].values["email"] == "ravi@example.com"


def test_xlsx_template_has_the_header_and_a_guide_sheet_and_reads_back():
    workbook = load_workbook(io.BytesIO(template_xlsx()))
    assert workbook.sheetnames == ["Rows", "How to fill"]
    assert [c.value for c in workbook["Rows"][1]] == list(COLUMNS)
    workbook["Rows"].append(GOOD_CREATE.split(","))
    buffer = io.BytesIO()
    workbook.save(buffer)
    parsed = parse_file("filled.xlsx", buffer.getvalue())
    assert len(parsed.rows) == 1 and parsed.rows[0].number == 2
    assert parsed.rows[0].values["first_name"] == "Ravi"


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
