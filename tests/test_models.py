"""Validation a program manager meets on every form and CSV row."""

import re
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
    parse_card_id,
    parse_email,
    parse_first_name,
    parse_free_text,
    parse_mobile,
    parse_points,
)

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt), as inclusive ranges.
DEFAULT_IGNORABLE = [
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
]
IGNORABLE = "".join(chr(code) for low, high in DEFAULT_IGNORABLE for code in range(low, high + 1))

# Decimal digits of every script but 0-9 (Bengali ৪, Devanagari ४, fullwidth １, ...).
OTHER_DIGITS = st.characters(categories=["Nd"], exclude_characters="0123456789")


def _letters_of(script: str) -> list[str]:
    """Every upper- or lower-case letter of the Basic Multilingual Plane whose Unicode name starts
    with ``script``, in its composed form."""
    return [
        char
        for char in map(chr, range(0x10000))
        if unicodedata.category(char) in ("Lu", "Ll")
        and unicodedata.name(char, "").startswith(f"{script} ")
        and unicodedata.normalize("NFC", char) == char
    ]


def _refusal(parse, text: str) -> str:
    """The message ``parse`` refuses ``text`` with; ``""`` if it accepts it."""
    try:
        parse(text)
    except ValueError as exc:
        return str(exc)
    return ""


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


@pytest.mark.parametrize(
    ("text", "char", "name"),
    [
        ("৪00", "৪", "BENGALI DIGIT FOUR"),
        ("１００", "１", "FULLWIDTH DIGIT ONE"),
        ("1,৪00", "৪", "BENGALI DIGIT FOUR"),
        ("1,500.٥", "٥", "ARABIC-INDIC DIGIT FIVE"),
        ("1²", "²", "SUPERSCRIPT TWO"),
    ],
)
def test_a_digit_of_another_script_in_points_is_refused_by_name(text, char, name):
    with pytest.raises(ValueError) as caught:
        parse_points(text)
    assert str(caught.value) == (
        f'Points have "{char}" ({name}), which is not one of the digits 0–9: type the number again'
    )


@given(st.integers(min_value=1, max_value=999_999), st.data(), OTHER_DIGITS)
def test_any_digit_but_0_to_9_anywhere_in_points_is_refused_by_name(number, data, digit):
    text = f"{number:,}"
    at = data.draw(st.sampled_from([i for i, char in enumerate(text) if char.isdigit()]))
    with pytest.raises(ValueError, match=re.escape(f'"{digit}" ({unicodedata.name(digit)})')):
        parse_points(text[:at] + digit + text[at + 1 :])


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


def test_a_mobile_with_a_bengali_digit_is_refused_naming_it():
    with pytest.raises(ValueError) as caught:
        parse_mobile("96000988৪7")
    assert str(caught.value) == (
        'Mobile has "৪" (BENGALI DIGIT FOUR), which is not one of the digits 0–9: type the number '
        "again"
    )


@given(
    st.sampled_from(["", "+91 ", "0"]),
    st.from_regex(r"[6-9][0-9]{9}", fullmatch=True),
    st.integers(min_value=0, max_value=9),
    OTHER_DIGITS,
)
def test_any_digit_but_0_to_9_anywhere_in_a_mobile_is_refused_by_name(prefix, digits, at, digit):
    from services.models import _plain_mobile

    text = prefix + digits[:at] + digit + digits[at + 1 :]
    assert _plain_mobile(text) is None
    with pytest.raises(
        ValueError, match=re.escape(f'Mobile has "{digit}" ({unicodedata.name(digit)})')
    ):
        parse_mobile(text)


@pytest.mark.parametrize("text", ["+91 96000 ABCDE", "9600O98867", "96000 98867 ext 5"])
def test_letters_in_a_mobile_are_refused_not_read_as_keypad_digits(text):
    with pytest.raises(ValueError, match="10-digit Indian mobile"):
        parse_mobile(text)


# --- email, names, choices ---------------------------------------------------------------------


def test_email_is_trimmed_and_lower_cased():
    assert parse_email("  Ravi.Kumar@Example.COM ") == "ravi.kumar@example.com"


@pytest.mark.parametrize(
    "text", ["", "ravi", "ravi@", "@example.com", "ravi@@example.com", "ravi kumar@example.com"]
)
def test_bad_emails_are_refused(text):
    with pytest.raises(ValueError):
        parse_email(text)


def test_a_look_alike_email_with_a_cyrillic_letter_is_refused_naming_it():
    with pytest.raises(ValueError) as caught:
        parse_email("аsha@example.com")  # the first letter is Cyrillic
    assert str(caught.value) == (
        'Email mixes Latin and Cyrillic letters ("а" is CYRILLIC SMALL LETTER A): it may be a '
        "look-alike of another address; type it again"
    )


@pytest.mark.parametrize(
    ("text", "mix"),
    [
        ("admin@exаmple.com", "Latin and Cyrillic"),
        ("admin@xn--exmple-4nf.com", "Latin and Cyrillic"),  # the same domain, written as ASCII
        ("ravi@еxample.сom", "Latin and Cyrillic"),
        ("pаypal@example.com", "Latin and Cyrillic"),
        ("rаvi@example.com", "Latin and Cyrillic"),
        ("Ravi@εxample.com", "Latin and Greek"),
        ("пpивет@example.com", "Cyrillic and Latin"),  # the second letter is Latin
        ("ravi@ex-ample.ցom", "Latin and Armenian"),
        ("ｒavi@example.com", "Latin and Fullwidth"),
    ],
)
def test_a_local_part_or_domain_label_mixing_scripts_is_refused(text, mix):
    assert _refusal(parse_email, text).startswith(f"Email mixes {mix} letters")


@pytest.mark.parametrize(
    "text",
    [
        "a@भारत.com",  # wholly Devanagari
        "ravi@пример.рф",  # wholly Cyrillic
        "अनिल@भारत.भारत",
        "παράδειγμα@δοκιμή.gr",
        "a@お名前.com",  # Japanese mixes kana and ideographs in one word
        "a@jr東日本.jp",  # and Latin with them
        "a@한국어.kr",
        "josé.müller@bücher.de",
        "ravi@ｅxample.com",  # IDNA reads a fullwidth letter in a domain as plain Latin
    ],
)
def test_an_address_whose_parts_are_each_in_one_script_is_accepted(text):
    assert parse_email(text) == _full_email(text)


_LATIN = _letters_of("LATIN")
_LOOK_ALIKE_SCRIPTS = {script: _letters_of(script) for script in ("CYRILLIC", "GREEK", "ARMENIAN")}


@given(
    st.text(st.sampled_from(_LATIN), min_size=1, max_size=12),
    st.lists(
        st.text(st.sampled_from(_LATIN + list("0123456789")), min_size=1, max_size=12),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(["com", "in", "co.in", "org"]),
)
def test_any_valid_email_in_latin_letters_is_accepted_as_email_validator_reads_it(
    local, labels, tld
):
    text = f"{local}@{'.'.join(labels)}.{tld}"
    expected = _full_email(text)
    if expected is not None:
        assert parse_email(text) == expected


@given(
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz"), min_size=2, max_size=12),
    st.sampled_from(sorted(_LOOK_ALIKE_SCRIPTS)),
    st.data(),
    st.booleans(),
)
def test_one_letter_of_another_script_in_a_latin_word_is_refused(word, script, data, in_domain):
    letter = data.draw(st.sampled_from(_LOOK_ALIKE_SCRIPTS[script]))
    at = data.draw(st.integers(min_value=0, max_value=len(word)))
    mixed = word[:at] + letter + word[at:]
    text = f"ravi@{mixed}.com" if in_domain else f"{mixed}@example.com"
    message = _refusal(parse_email, text)
    if _full_email(text) is None:  # not an address at all (a letter IDNA disallows): refused
        assert message
    elif in_domain:  # IDNA may fold the letter (to lower case, or a ligature to two letters)
        latin, other = "Latin", script.title()
        assert re.match(f"Email mixes ({latin} and {other}|{other} and {latin}) letters", message)
    else:
        assert message.startswith(
            f'Email mixes Latin and {script.title()} letters ("{letter}" is '
            f"{unicodedata.name(letter)})"
        )


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("\u3164@example.com", "U+3164"),
        ("ravi\u034f@example.com", "U+034F"),
        ("ravi@exa\u3164mple.com", "U+3164"),  # IDNA would drop it: refused as typed
        ("ra\ufe0fvi@example.com", "U+FE0F"),
        ("ravi\u00ad@example.com", "U+00AD"),
    ],
)
def test_an_invisible_character_in_an_email_is_refused_naming_it(text, code):
    assert _refusal(parse_email, text) == (
        f"Email contains control or invisible characters ({code}); type it again without them"
    )


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


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("\u3164", "U+3164"),  # HANGUL FILLER, a letter that shows nothing: the name looks blank
        ("Ravi\u034f", "U+034F"),  # COMBINING GRAPHEME JOINER, a mark that shows nothing
        ("Ra\u115fvi", "U+115F"),
        ("\uffa0", "U+FFA0"),
        ("Ravi\ufe0f", "U+FE0F"),
        ("Ravi\U000e0041", "U+E0041"),
    ],
)
def test_a_name_with_a_character_that_shows_nothing_is_refused_naming_it(text, code):
    assert _refusal(parse_first_name, text) == (
        f"First name contains control or invisible characters ({code}); type it again without them"
    )


def test_every_default_ignorable_character_is_refused_by_code_in_names_reasons_and_emails():
    def reason(text):
        return parse_free_text(text, "Reason", 200)

    for char in IGNORABLE:
        named = f"invisible characters (U+{ord(char):04X})"
        assert named in _refusal(parse_first_name, f"Ra{char}vi"), named
        assert named in _refusal(parse_email, f"ra{char}vi@example.com"), named
        assert named in _refusal(parse_email, f"ravi@exa{char}mple.com"), named
        if char not in "\u200c\u200d\ufe0e\ufe0f":  # they shape scripts and emoji in free text
            assert named in _refusal(reason, f"Q3 {char}bonus"), named


def test_an_emoji_typed_on_a_phone_is_kept_in_a_reason():
    assert (
        parse_free_text("Diwali \u2764\ufe0f bonus", "Reason", 200) == "Diwali \u2764\ufe0f bonus"
    )


@pytest.mark.parametrize("typed", ["ekc04azhx\u017f", "EKC04AZH\u0131P", "ＥＫＣ04AZHXP"])
def test_a_card_id_with_a_letter_that_upper_cases_into_ascii_is_refused(typed):
    with pytest.raises(ValueError, match="A card id is letters and digits"):
        parse_card_id(typed)


_NAME_LETTERS = st.characters(categories=["Lu", "Ll", "Lo"], exclude_characters=IGNORABLE)
_NAME_MARKS = st.characters(categories=["Mn", "Mc"], exclude_characters=IGNORABLE)


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


@given(
    st.text(
        st.characters(
            codec="utf-8", exclude_categories=["Cc", "Cf", "Cs"], exclude_characters=IGNORABLE
        ),
        max_size=200,
    )
)
def test_any_reason_without_control_format_or_ignorable_characters_is_accepted(text):
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
    message = _refusal(parse_email, text)
    got = None if message else parse_email(text)
    # Refused beyond email-validator: a character that shows nothing, or letters of mixed scripts.
    if message.startswith("Email contains control or invisible characters"):
        assert any(
            char in IGNORABLE or unicodedata.category(char) in ("Cc", "Cf", "Cs")
            for char in text
            if char not in "\t\n\r"
        )
    elif message.startswith("Email mixes"):
        assert expected is not None and not expected.isascii()
    else:
        assert got == expected
