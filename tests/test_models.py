"""Validation a program manager meets on every form and CSV row."""

import unicodedata
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.models import (
    Allocation,
    Employee,
    Gender,
    Kind,
    Title,
    field_errors,
    parse_email,
    parse_first_name,
    parse_free_text,
    parse_mobile,
    parse_points,
)

GOOD_EMPLOYEE = {
    "email": "ravi@example.com",
    "mobile": "9600098867",
    "title": "Mr",
    "first_name": "Ravi",
    "gender": "M",
}


# --- amounts ---------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=100_000_000))
def test_any_whole_number_of_cents_up_to_the_maximum_round_trips(cents):
    amount = Decimal(cents) / 100
    assert parse_points(str(amount)) == amount
    assert parse_points(amount) == amount


@given(st.decimals(min_value=Decimal("0.001"), max_value=Decimal("999999"), places=3))
def test_a_third_decimal_place_is_refused_unless_it_is_zero(amount):
    if amount == amount.quantize(Decimal("0.01")):
        assert parse_points(str(amount)) == amount.quantize(Decimal("0.01"))
    else:
        with pytest.raises(ValueError, match="at most 2 decimal places"):
            parse_points(str(amount))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Enter the number of points"),
        ("0", "more than zero"),
        ("0.00", "more than zero"),
        ("-5", "more than zero"),
        ("1e3", "as a number"),
        ("NaN", "as a number"),
        ("Infinity", "as a number"),
        ("12abc", "as a number"),
        ("1.5.0", "as a number"),
        ("1000000.01", "At most 10,00,000 points"),
    ],
)
def test_bad_amount_text_gets_a_specific_message(text, message):
    with pytest.raises(ValueError, match=message):
        parse_points(text)


@pytest.mark.parametrize(
    "value", [1.5, float("nan"), float("inf"), True, None, Decimal("NaN"), Decimal("-Infinity")]
)
def test_floats_and_non_numbers_are_refused(value):
    with pytest.raises(ValueError):
        parse_points(value)


def test_indian_grouping_and_spaces_are_accepted():
    assert parse_points(" 1,50,000.5 ") == Decimal("150000.50")
    assert parse_points("150,000") == Decimal("150000.00")
    assert parse_points("10,00,000") == Decimal("1000000.00")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,5", "1,5 is ambiguous: write 1.5 or 15"),
        ("1,50", "1,50 is ambiguous: write 1.50 or 150"),
        ("15,00", "15,00 is ambiguous: write 15.00 or 1500"),
        ("1.500,50", "commas only between groups of digits"),
        ("1,00,00", "commas only between groups of digits"),
        ("1,5.5", "commas only between groups of digits"),
    ],
)
def test_a_comma_that_is_not_digit_grouping_is_refused_not_dropped(text, message):
    with pytest.raises(ValueError, match=message):
        parse_points(text)


def test_the_maximum_is_configurable():
    assert parse_points("5000", Decimal("5000")) == Decimal("5000.00")
    with pytest.raises(ValueError, match="At most 4,999"):
        parse_points("5000", Decimal("4999"))


# --- mobiles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["+91 96000 98867", "096000 98867", "9600098867", "+91-9600098867", "91 9600098867"]
)
def test_the_common_ways_of_writing_an_indian_mobile_become_ten_digits(text):
    assert parse_mobile(text) == "9600098867"


@pytest.mark.parametrize(
    "text",
    ["", "12345", "1234567890", "5600098867", "+1 650 253 0000", "96000988671", "abcdefghij"],
)
def test_what_is_not_an_indian_mobile_is_refused(text):
    with pytest.raises(ValueError):
        parse_mobile(text)


@given(st.integers(min_value=6_000_000_000, max_value=9_999_999_999))
def test_every_accepted_mobile_is_ten_digits_starting_6_to_9(number):
    try:
        parsed = parse_mobile(str(number))
    except ValueError:
        return  # some ranges are unallocated; refusing them is right
    assert len(parsed) == 10 and parsed.isdigit() and parsed[0] in "6789"
    assert parse_mobile(f"+91 {parsed}") == parsed


# --- email, names, choices ---------------------------------------------------------------------


def test_email_is_trimmed_and_lower_cased():
    assert parse_email("  Ravi.Kumar@Example.COM ") == "ravi.kumar@example.com"


@pytest.mark.parametrize(
    "text", ["", "ravi", "ravi@", "@example.com", "ravi@@example.com", "ravi kumar@example.com"]
)
def test_bad_emails_are_refused(text):
    with pytest.raises(ValueError):
        parse_email(text)


def test_names_are_trimmed_and_inner_spaces_collapsed():
    assert parse_first_name("  Anna   Maria ") == "Anna Maria"
    assert parse_first_name("D'Souza") == "D'Souza"
    assert parse_first_name("Lakshmī") == "Lakshmī"


@pytest.mark.parametrize("text", ["", "   ", "R2D2", "<script>", "=cmd|' /C calc'!A0", "x" * 51])
def test_bad_names_are_refused(text):
    with pytest.raises(ValueError):
        parse_first_name(text)


@given(st.text(alphabet=st.characters(categories=["Lu", "Ll"]), min_size=1, max_size=50))
def test_any_letters_only_name_is_accepted_in_its_composed_form(name):
    assert parse_first_name(name) == unicodedata.normalize("NFC", name)


@pytest.mark.parametrize(
    "name",
    [
        "अनिल",  # Devanagari: the vowel sign is a combining mark
        "क्षितिज",  # Devanagari conjunct: virama between letters
        "தமிழ்செல்வி",  # Tamil
        "সুমন",  # Bengali
        "వెంకట్",  # Telugu
        "ശ്രീജ",  # Malayalam
        "ਗੁਰਮੀਤ",  # Gurmukhi
        "ಕನ್ನಡ",  # Kannada
        "ભાવિન",  # Gujarati
        "José",
        "Rama Devi",
        "Mary-Jane O'Neil",
    ],
)
def test_names_in_indian_scripts_and_accented_latin_are_accepted(name):
    assert parse_first_name(name) == unicodedata.normalize("NFC", name)


def test_a_decomposed_accent_is_accepted_and_stored_composed():
    assert parse_first_name("Jose\u0301") == "José"
    # No precomposed form exists: letter + combining mark is kept as such.
    assert parse_first_name("Q\u0307asim") == "Q\u0307asim"


@pytest.mark.parametrize(
    "text",
    [
        "अनिल२",  # a Devanagari digit
        "Ravi😀",
        "\u0301Ravi",  # a combining mark with no letter before it
        "Ravi -\u0301",
        "-Ravi",
    ],
)
def test_digits_emoji_and_stray_marks_are_refused_in_names(text):
    with pytest.raises(ValueError, match="letters, spaces"):
        parse_first_name(text)


@pytest.mark.parametrize(
    "char",
    [
        "\x00",
        "\x1f",
        "\x7f",
        "\x85",
        "\u202a",
        "\u202e",
        "\u2066",
        "\u2069",
        "\u200e",
        "\u200f",
        "\u200b",
        "\u200c",
        "\u200d",
        "\ufeff",
        "\u2060",
    ],
)
def test_control_bidi_and_zero_width_characters_are_refused_in_names(char):
    with pytest.raises(ValueError, match=f"invisible characters \\(U\\+{ord(char):04X}\\)"):
        parse_first_name(f"अनि{char}ल")


_NAME_LETTERS = st.characters(categories=["Lu", "Ll", "Lo"])
_NAME_MARKS = st.characters(categories=["Mn", "Mc"])


@given(
    st.lists(st.tuples(_NAME_LETTERS, st.text(_NAME_MARKS, max_size=2)), min_size=1, max_size=12)
)
def test_any_letters_each_followed_by_its_marks_are_accepted(parts):
    name = "".join(letter + marks for letter, marks in parts)
    assert parse_first_name(name) == unicodedata.normalize("NFC", name)


@given(
    st.text(st.characters(categories=["Lu", "Ll", "Lo"]), min_size=1, max_size=10),
    st.characters(categories=["Nd", "Cc", "Cf", "So"], exclude_characters="\t\n\r"),
)
def test_a_digit_control_format_or_emoji_character_anywhere_is_refused(name, bad):
    with pytest.raises(ValueError):
        parse_first_name(name + bad + name)


def test_title_and_gender_accept_any_case_and_refuse_others():
    employee = Employee(**{**GOOD_EMPLOYEE, "title": "mrs", "gender": "f"})
    assert employee.title is Title.MRS and employee.gender is Gender.F
    with pytest.raises(ValidationError) as caught:
        Employee(**{**GOOD_EMPLOYEE, "title": "Dr", "gender": "X"})
    errors = field_errors(caught.value)
    assert errors["title"] == "Title must be one of Mr, Mrs, Ms"
    assert errors["gender"] == "Gender must be one of M, F"


# --- the allocation as a whole -----------------------------------------------------------------


def test_a_create_needs_the_employee_and_errors_name_each_field():
    with pytest.raises(ValidationError) as caught:
        Allocation(
            reference="PD-000001",
            kind="create",
            amount="10",
            employee={"email": "x", "mobile": "1", "title": "", "first_name": "", "gender": ""},
        )
    errors = field_errors(caught.value)
    assert set(errors) == {
        "employee.email",
        "employee.mobile",
        "employee.title",
        "employee.first_name",
        "employee.gender",
    }


def test_a_credit_needs_a_card_or_an_employee():
    with pytest.raises(ValidationError, match="Choose the employee"):
        Allocation(reference="PD-000001", kind="credit", amount="10")
    credit = Allocation(reference="PD-000001", kind="credit", amount="10", card_id=" ekc04azhxp ")
    assert credit.card_id == "EKC04AZHXP"
    assert credit.transaction_type == "CR"
    assert Kind.DEBIT.transaction_type == "DR"


def test_max_points_comes_from_the_validation_context():
    data = {"reference": "PD-000001", "kind": "credit", "amount": "600", "card_id": "EKC1234"}
    assert Allocation.model_validate(data).amount == Decimal("600.00")
    with pytest.raises(ValidationError, match="At most 500"):
        Allocation.model_validate(data, context={"max_points": Decimal("500")})


# --- free text that reaches the ledger ----------------------------------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x1b", "\x7f", "\x9f"])
def test_control_characters_in_a_reason_are_refused_with_the_character_named(char):
    with pytest.raises(ValidationError) as caught:
        Allocation(
            reference="PD-000001", kind="credit", amount="10", card_id="EKC1234", reason=f"Q3{char}"
        )
    message = field_errors(caught.value)["reason"]
    assert message == (
        f"Reason contains control or invisible characters (U+{ord(char):04X}); type it again "
        "without them"
    )


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u200b", "\ufeff", "\u00ad"])
def test_bidi_and_invisible_format_characters_in_a_reason_are_refused(char):
    with pytest.raises(ValueError, match="invisible characters"):
        parse_free_text(f"bonus {char}", "Reason", 200)


def test_tabs_and_line_breaks_in_a_reason_become_spaces_and_joiners_are_kept():
    assert parse_free_text("Q3\tbonus\r\nfor  Diwali", "Reason", 200) == "Q3 bonus for Diwali"
    assert parse_free_text("दिवाली बोनस \u200d", "Reason", 200) == "दिवाली बोनस \u200d"
    assert parse_free_text("  ", "Comment", 10) == ""
    with pytest.raises(ValueError, match="Comment can be at most 10 characters"):
        parse_free_text("x" * 11, "Comment", 10)


@given(st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cf", "Cs"]), max_size=200))
def test_any_reason_without_control_or_format_characters_is_accepted(text):
    assert parse_free_text(text, "Reason", 200) == " ".join(text.split())


# --- the fast paths for plain mobiles and emails agree with the full checks -----------------------


def _full_mobile(text: str) -> str | None:
    from services.models import _parse_mobile_fully

    try:
        return _parse_mobile_fully(text)
    except ValueError:
        return None


def test_the_plain_mobile_path_accepts_only_what_phonenumbers_accepts_for_every_prefix():
    from services.models import _plain_mobile

    accepted = 0
    for prefix in range(60000, 100000):
        for tail in ("00000", "54321"):
            national = f"{prefix}{tail}"
            fast = _plain_mobile(national)
            if fast is not None:
                accepted += 1
                assert fast == _full_mobile(national) == national, national
    assert accepted > 40000  # the fast path does carry the common case


@given(
    st.sampled_from(["", "+91", "+91 ", "91", "0", "+91-"]),
    st.from_regex(r"[6-9][0-9]{9}", fullmatch=True),
    st.sampled_from(["", " ", "-"]),
)
def test_a_plainly_written_mobile_reads_the_same_on_either_path(prefix, digits, separator):
    from services.models import _plain_mobile

    text = prefix + digits[:5] + separator + digits[5:]
    fast = _plain_mobile(text)
    if fast is not None:
        assert fast == _full_mobile(text)


def _full_email(text: str) -> str | None:
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(text, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


@given(
    st.one_of(
        st.emails(),
        st.from_regex(
            r"[A-Za-z0-9._%+\-]{1,70}@[A-Za-z0-9.\-]{1,30}\.(com|in|local|test|x1)", fullmatch=True
        ),
        st.text(max_size=40),
    )
)
def test_an_email_reads_the_same_as_email_validator_reads_it(text):
    expected = _full_email(text.strip())
    try:
        got = parse_email(text)
    except ValueError:
        got = None
    assert got == expected
