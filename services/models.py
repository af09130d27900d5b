"""Typed, validated domain objects.

Every value a program manager types (one form or one CSV row) becomes one of these models before
anything is stored or sent; a ``pydantic.ValidationError`` from here names the field and says what
is wrong in plain words. ``field_errors`` turns it into ``{field: message}`` for forms and rows.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.numbers import figure

DEFAULT_MAX_POINTS = Decimal("1000000")
CENT = Decimal("0.01")


class Title(StrEnum):
    MR = "Mr"
    MRS = "Mrs"
    MS = "Ms"


class Gender(StrEnum):
    M = "M"
    F = "F"


class Kind(StrEnum):
    """What a ledger row does: open an account with its first credit, top up, or take back."""

    CREATE = "create"
    CREDIT = "credit"
    DEBIT = "debit"

    @property
    def transaction_type(self) -> str:
        return "DR" if self is Kind.DEBIT else "CR"


class Status(StrEnum):
    QUEUED = "QUEUED"
    SENDING = "SENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


class ReasonCode(StrEnum):
    """Codes Points Desk itself writes to a row's ``enkash_code`` (EnKash's own codes are kept as
    EnKash sent them)."""

    NOT_SENT = "NOT_SENT"  # EnKash could not be reached: nothing was sent
    LOGIN_REFUSED = "LOGIN_REFUSED"  # EnKash refused the sign-in: nothing was sent
    REFERENCE_MISMATCH = "REFERENCE_MISMATCH"  # the reply named another reference: investigate
    CANCELLED = "CANCELLED"  # a batch row cancelled before it was sent
    APPROVAL_REJECTED = "APPROVAL_REJECTED"  # a debit the approver refused: never sent


class SettleOutcome(StrEnum):
    """What one lookup of an ``UNKNOWN`` reference at EnKash proved (``allocations.settle``)."""

    SUCCEEDED = "succeeded"  # EnKash has it as a success: the row is settled
    FAILED = "failed"  # EnKash has it as failed: settled, no points moved
    ABSENT = "absent"  # proved absent: a resend with the same reference may follow
    NOT_YET = "not_yet"  # absent, but too soon after the last attempt to prove anything
    UNREADABLE = "unreadable"  # listed with a status Points Desk cannot read: ask EnKash
    CHANGED = "changed"  # the row changed during the lookup: nothing proved
    ALREADY = "already"  # the row was not UNKNOWN: nothing was asked
    ERROR = "error"  # the lookup itself failed (``reconcile.CheckResult`` only)

    @property
    def settled(self) -> bool:
        return self in (SettleOutcome.SUCCEEDED, SettleOutcome.FAILED)


class BatchState(StrEnum):
    """Where a bulk run is: waiting to start, sending, paused by a person, or over."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FINISHED = "finished"


class ApprovalStatus(StrEnum):
    """A maker-checker request: waiting for a second person, or decided."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class AuditKind(StrEnum):
    """What an audit event records. Code reads the kind; the event's detail is for people."""

    INTENT = "INTENT"  # the row was written (sent now, or queued in a batch)
    CLAIM = "CLAIM"  # the row was claimed for sending (a first send or a resend)
    OUTCOME = "OUTCOME"  # what EnKash answered, or what a lookup settled
    LOOKUP_ABSENT = "LOOKUP_ABSENT"  # a lookup proved the reference absent at EnKash
    LOOKUP_UNREADABLE = "LOOKUP_UNREADABLE"  # a lookup found it, in a status we cannot read
    APPROVAL_REQUESTED = "APPROVAL_REQUESTED"  # held for a second person's approval
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"  # a queued row that was never sent
    RECOVERED = "RECOVERED"  # left SENDING by a process that died; to be settled by lookup
    NOTE = "NOTE"  # anything else that changes nothing


@dataclass(frozen=True)
class UpcomingRun:
    """One future occurrence of a schedule, as the runway and the alerts see it: when it is due,
    what it moves in total, from which programme (``None``: General) and what it is called."""

    schedule_id: str
    label: str
    due_at: datetime  # aware, UTC
    total: Decimal  # points credited net of debits in this occurrence
    programme_code: str | None = None


@dataclass(frozen=True)
class FailedRun:
    """A schedule occurrence that ran and did not fully succeed (failed rows), for the alerts."""

    schedule_id: str
    label: str
    due_at: datetime  # aware, UTC
    failed_rows: int
    batch_id: str | None = None


# --- single-value parsers, shared by the models, forms and the CSV importer ---------------------

_AMOUNT_TEXT = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_NAME_SEPARATORS = frozenset(" .'-")
_CARD_ID = re.compile(r"[A-Z0-9]{4,32}")
# Zero-width joiners shape Indic scripts and emoji; every other format character (bidi controls,
# zero-width space, word joiner, byte-order mark, soft hyphen, ...) is invisible and refused, and
# so is every Default_Ignorable_Code_Point of Unicode (DerivedCoreProperties.txt), which shows
# nothing either: Hangul fillers, the combining grapheme joiner, variation selectors, tags, ...
_JOINERS = frozenset("\u200c\u200d\ufe0e\ufe0f")  # and the text/emoji presentation selectors
_DEFAULT_IGNORABLE = re.compile(
    r"[\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180B-\u180F\u200B-\u200F\u202A-\u202E"
    r"\u2060-\u206F\u3164\uFE00-\uFE0F\uFEFF\uFFA0\uFFF0-\uFFF8\U0001BCA0-\U0001BCA3"
    r"\U0001D173-\U0001D17A\U000E0000-\U000E0FFF]"
)
_LINE_WHITESPACE = frozenset("\t\n\r")


def _refuse_other_digits(text: str, subject: str) -> None:
    """Refuse a digit of another script (Bengali ৪, fullwidth １, superscript ¹, ...): it may look
    like one of 0–9, but EnKash, the ledger and the duplicate checks read it as another character.
    ``subject`` begins the message: ``"Mobile has"``, ``"Points have"``."""
    if text.isascii():
        return
    for char in text:
        if char.isdigit() and char not in "0123456789":
            raise ValueError(
                f'{subject} "{char}" ({unicodedata.name(char, f"U+{ord(char):04X}")}), which is '
                "not one of the digits 0–9: type the number again"
            )


# Commas only as thousands (1,500,000) or Indian (15,00,000) grouping, before any decimal point.
_GROUPED = re.compile(
    r"^(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]{1,2}(?:,[0-9]{2})*,[0-9]{3})(?:\.[0-9]*)?$"
)


def _ungroup(text: str) -> str:
    """``1,50,000`` -> ``150000``; a comma anywhere else may be a decimal comma: refused."""
    if _GROUPED.match(text):
        return text.replace(",", "")
    if re.fullmatch(r"[0-9]+,[0-9]+", text):
        decimal, whole = text.replace(",", "."), text.replace(",", "")
        raise ValueError(f"{text} is ambiguous: write {decimal} or {whole}")
    raise ValueError(
        "Write the points with a dot for decimals and commas only between groups of digits, "
        "like 1,500.50 or 1,50,000"
    )


def parse_points(value: Any, maximum: Decimal = DEFAULT_MAX_POINTS) -> Decimal:
    """Parse an amount of points: a positive number with at most 2 decimals, at most ``maximum``.

    Accepts ``Decimal``, ``int`` and plain decimal text (``"1500"``, ``"1,500.50"``,
    ``"1,50,000"``); refuses floats (binary fractions are not money), exponents, NaN, infinity,
    signs, more than 2 decimals, and a comma that is not grouping digits (``"1,5"`` may mean 1.5
    or 15).
    """
    if isinstance(value, bool):
        raise ValueError("Enter the points as a number, like 1500 or 1500.50")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("Enter the points as a number, like 1500 or 1500.50")
        amount = value
    elif isinstance(value, str):
        text = value.strip().replace("_", "")
        if not text:
            raise ValueError("Enter the number of points")
        _refuse_other_digits(text, "Points have")
        if text.startswith("-"):
            raise ValueError("Points must be more than zero")
        if "," in text:
            text = _ungroup(text)
        if not _AMOUNT_TEXT.match(text):
            raise ValueError("Enter the points as a number, like 1500 or 1500.50")
        try:
            amount = Decimal(text)
        except InvalidOperation as exc:  # pragma: no cover - the regex already guards this
            raise ValueError("Enter the points as a number, like 1500 or 1500.50") from exc
    else:
        raise ValueError("Enter the points as a number, like 1500 or 1500.50")
    if amount <= 0:
        raise ValueError("Points must be more than zero")
    if amount.as_tuple().exponent < -2 and amount != amount.quantize(CENT):
        raise ValueError("Points can have at most 2 decimal places")
    if amount > maximum:
        raise ValueError(f"At most {figure(maximum)} points in one transaction")
    return amount.quantize(CENT)


_MOBILE_MESSAGE = "Enter a 10-digit Indian mobile number, like 96000 98867"
_IN = phonenumbers.PhoneMetadata.metadata_for_region("IN")
# The shapes a file or form usually holds: 10 digits, after +91 / 91 / 0, spaces or hyphens.
_PLAIN_MOBILE = re.compile(r"(?:\+?91|0)?([6-9][0-9]{9})")
_SEPARATORS = str.maketrans("", "", " -")


def _pattern(desc: Any) -> re.Pattern[str] | None:
    text = getattr(desc, "national_number_pattern", None) if desc is not None else None
    return re.compile(text) if text else None


_IN_GENERAL = _pattern(_IN.general_desc)
_IN_MOBILE = _pattern(_IN.mobile)
# Number types phonenumbers tells before mobile: a number matching one of them is not a mobile.
_IN_NOT_MOBILE = [
    pattern
    for pattern in (
        _pattern(getattr(_IN, name, None))
        for name in (
            "premium_rate",
            "toll_free",
            "shared_cost",
            "voip",
            "personal_number",
            "pager",
            "uan",
            "voicemail",
        )
    )
    if pattern is not None
]


def _plain_mobile(text: str) -> str | None:
    """The national number of a plainly written Indian mobile, from phonenumbers' own metadata.

    A bulk file checks tens of thousands of numbers, and a full ``phonenumbers`` parse costs
    about 30 µs each; this accepts only numbers the full check accepts too (a test compares them
    over every 5-digit prefix) and returns ``None`` for anything else, which the full check decides.
    """
    match = _PLAIN_MOBILE.fullmatch(text.translate(_SEPARATORS))
    if match is None or _IN_GENERAL is None or _IN_MOBILE is None:
        return None
    national = match.group(1)
    if not (_IN_GENERAL.fullmatch(national) and _IN_MOBILE.fullmatch(national)):
        return None
    if any(pattern.fullmatch(national) for pattern in _IN_NOT_MOBILE):
        return None
    return national


def parse_mobile(value: Any) -> str:
    """An Indian mobile number as the 10-digit national number EnKash expects.

    It is written with the digits 0–9 only: another script's digit is refused by name (a full parse
    would quietly read it as 0–9), and so are letters (it would read them as a keypad's digits).
    """
    text = str(value or "").strip()
    if not text:
        raise ValueError("Enter a mobile number")
    _refuse_other_digits(text, "Mobile has")
    plain = _plain_mobile(text)
    if plain is not None:
        return plain
    return _parse_mobile_fully(text)


def _parse_mobile_fully(text: str) -> str:
    if any(char.isalpha() for char in text):
        raise ValueError(_MOBILE_MESSAGE)
    try:
        number = phonenumbers.parse(text, "IN")
    except phonenumbers.NumberParseException as exc:
        raise ValueError(_MOBILE_MESSAGE) from exc
    mobile_types = (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )
    if number.country_code != 91:
        raise ValueError("Only Indian (+91) mobile numbers can hold an incentive card")
    if (
        not phonenumbers.is_valid_number(number)
        or phonenumbers.number_type(number) not in mobile_types
    ):
        raise ValueError(_MOBILE_MESSAGE)
    national = str(number.national_number)
    if len(national) != 10:
        raise ValueError(_MOBILE_MESSAGE)
    return national


# The local part of a plain ASCII address (letters, digits and . _ % + -, no leading, trailing or
# doubled dot): a subset of what email-validator accepts, so only its domain needs the full check.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_%+\-]+(?:\.[A-Za-z0-9_%+\-]+)*")


@functools.lru_cache(maxsize=4096)
def _domain_ok(domain: str) -> str:
    """The normalised domain, checked once by email-validator (files repeat a few domains)."""
    return validate_email(f"a@{domain}", check_deliverability=False).domain


# Scripts written together in one word (Unicode TR39's "highly restrictive" level): Chinese,
# Japanese and Korean mix ideographs with kana, bopomofo or hangul, and with Latin.
_WRITTEN_TOGETHER = frozenset({"LATIN", "CJK", "HIRAGANA", "KATAKANA", "BOPOMOFO", "HANGUL"})
# Letters that belong to a script; modifier letters (Lm: the length mark ー, the iteration mark 々)
# are shared by several.
_SCRIPT_LETTERS = frozenset({"Lu", "Ll", "Lt", "Lo"})


def _script_mix(part: str) -> str:
    """``""`` if the letters of ``part`` (a local part or one domain label) are of one script;
    else which scripts it mixes, naming the first letter of the rarer one. A letter's script is
    the first word of its Unicode name (LATIN, CYRILLIC, GREEK, DEVANAGARI, ...)."""
    letters: dict[str, list[str]] = {}
    for char in part:
        if unicodedata.category(char) in _SCRIPT_LETTERS:
            script = unicodedata.name(char, "").partition(" ")[0]
            letters.setdefault(script, []).append(char)
    if len(letters) < 2 or letters.keys() <= _WRITTEN_TOGETHER:
        return ""
    main = max(letters, key=lambda script: len(letters[script]))
    odd = min(
        (s for s in letters if s != main and not {main, s} <= _WRITTEN_TOGETHER),
        key=lambda script: len(letters[script]),
    )
    char = letters[odd][0]
    return f'{main.title()} and {odd.title()} letters ("{char}" is {unicodedata.name(char)})'


def parse_email(value: Any) -> str:
    """A syntactically valid email address, normalised to lower case.

    Invisible characters are refused by name, and so is a local part or domain label that mixes
    letters of different scripts (``exаmple`` with a Cyrillic ``а``): it may be a look-alike of
    another address. A label wholly in one script (``भारत``, ``пример``) is accepted.
    """
    text = str(value or "").strip()
    if not text:
        raise ValueError("Enter an email address")
    hidden = _hidden_characters(text, joiners=False)
    if hidden:
        raise ValueError(
            f"Email contains control or invisible characters ({hidden}); type it again without them"
        )
    local, at, domain = text.rpartition("@")
    try:
        if at and len(local) <= 64 and len(text) <= 254 and _PLAIN_LOCAL.fullmatch(local):
            address = f"{local}@{_domain_ok(domain)}"
        else:
            address = validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"Not a valid email address: {exc}") from exc
    if not address.isascii():
        local, _, domain = address.rpartition("@")
        for part in (local, *domain.split(".")):
            mix = _script_mix(part)
            if mix:
                raise ValueError(
                    f"Email mixes {mix}: it may be a look-alike of another address; type it again"
                )
    return address.lower()


def parse_first_name(value: Any) -> str:
    """A first name in any script: letters, each letter's combining marks, and ``space . ' -``.

    Vowel signs and viramas of Indian scripts (अनिल, தமிழ், ਗੁਰਮੀਤ) are combining marks, as are
    decomposed accents (José); a mark must follow a letter or another mark. Digits, emoji,
    symbols, control characters and invisible ones (bidi controls, zero-width characters, the
    Hangul filler, the combining grapheme joiner, ...) are refused. The name is stored in its
    composed (NFC) form.
    """
    raw = unicodedata.normalize("NFC", str(value or ""))
    hidden = _hidden_characters(raw, joiners=False)
    if hidden:
        raise ValueError(
            f"First name contains control or invisible characters ({hidden}); type it again "
            "without them"
        )
    text = " ".join(raw.split())
    if not text:
        raise ValueError("Enter the first name")
    if len(text) > 50:
        raise ValueError("First name can be at most 50 characters")
    if not _is_name(text):
        raise ValueError("First name can hold letters, spaces, dots, hyphens and apostrophes only")
    return text


def _is_name(text: str) -> bool:
    previous = ""  # "L" letter, "M" combining mark, "S" separator
    for char in text:
        category = unicodedata.category(char)
        if category.startswith("L"):
            previous = "L"
        elif category.startswith("M") and previous in ("L", "M"):
            previous = "M"
        elif char in _NAME_SEPARATORS and previous:
            previous = "S"
        else:
            return False
    return True


def _hidden_characters(text: str, *, joiners: bool = True) -> str:
    """The control, surrogate, format and default-ignorable characters in ``text``, as
    ``U+0000, ...``.

    Tabs and line breaks (``\\t \\n \\r``) are whitespace, not reported. ``joiners`` allows
    ZWNJ/ZWJ (U+200C/D), which shape Indian scripts and emoji in free text, and the variation
    selectors U+FE0E/F that a phone keyboard types after an emoji ("❤️").
    """
    if text.isascii() and text.isprintable():  # the common case, and nothing to find
        return ""
    found: list[str] = []
    for char in text:
        if char in _LINE_WHITESPACE or (joiners and char in _JOINERS):
            continue
        if unicodedata.category(char) in ("Cc", "Cs", "Cf") or _DEFAULT_IGNORABLE.match(char):
            code = f"U+{ord(char):04X}"
            if code not in found:
                found.append(code)
    return ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")


def parse_free_text(value: Any, label: str, max_length: int) -> str:
    """Free text a person types that reaches the ledger (a reason, an approval comment).

    Runs of whitespace (tabs and line breaks too) become one space. Other control characters
    (U+0000 to U+001F, U+007F to U+009F), surrogates and invisible characters (bidi controls,
    zero-width space, byte-order mark, Hangul filler, variation selectors) are refused with a
    message naming them: they break spreadsheet exports and PostgreSQL (NUL), and can disguise
    what a report says.
    """
    raw = str(value or "")
    hidden = _hidden_characters(raw)
    if hidden:
        raise ValueError(
            f"{label} contains control or invisible characters ({hidden}); type it again "
            "without them"
        )
    text = " ".join(raw.split())
    if len(text) > max_length:
        raise ValueError(f"{label} can be at most {max_length} characters")
    return text


def parse_card_id(value: Any) -> str | None:
    """An EnKash card id (``EKC04AZHXP``), upper-cased; ``None`` when empty."""
    text = str(value or "").strip()
    if not text:
        return None
    # ASCII first: upper-casing "ſ" or "ı" would make the S or I of another card's id.
    text = text.upper() if text.isascii() else text
    if not _CARD_ID.fullmatch(text):
        raise ValueError("A card id is letters and digits, like EKC04AZHXP")
    return text


def parse_choice(enum: type[StrEnum], value: Any, label: str) -> StrEnum:
    text = str(value or "").strip()
    for member in enum:
        if text.lower() in (member.value.lower(), member.name.lower()):
            return member
    allowed = ", ".join(m.value for m in enum)
    raise ValueError(f"{label} must be one of {allowed}")


# --- models -------------------------------------------------------------------------------------


class Employee(BaseModel):
    """A partner employee, as EnKash needs them to open an incentive card."""

    model_config = ConfigDict(frozen=True)

    email: str
    mobile: str
    title: Title
    first_name: str
    gender: Gender

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: Any) -> str:
        return parse_email(value)

    @field_validator("mobile", mode="before")
    @classmethod
    def _mobile(cls, value: Any) -> str:
        return parse_mobile(value)

    @field_validator("title", mode="before")
    @classmethod
    def _title(cls, value: Any) -> Title:
        return parse_choice(Title, value, "Title")  # type: ignore[return-value]

    @field_validator("gender", mode="before")
    @classmethod
    def _gender(cls, value: Any) -> Gender:
        return parse_choice(Gender, value, "Gender")  # type: ignore[return-value]

    @field_validator("first_name", mode="before")
    @classmethod
    def _first_name(cls, value: Any) -> str:
        return parse_first_name(value)


class Allocation(BaseModel):
    """One movement of points, ready to record and send.

    ``create`` carries the full employee; ``credit``/``debit`` carry the card id and, where known,
    the employee (sent along so EnKash can match the card either way). ``max_points`` may be given
    in the validation context: ``Allocation.model_validate(data, context={"max_points": ...})``.
    """

    model_config = ConfigDict(frozen=True)

    reference: str
    kind: Kind
    amount: Decimal
    employee: Employee | None = None
    card_id: str | None = None
    reason: str = ""
    #: The code of the programme whose budget it counts against (``None``: General).
    programme: str | None = None

    @field_validator("programme", mode="before")
    @classmethod
    def _programme(cls, value: Any) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        code = str(value).strip().upper()
        if not re.fullmatch(r"[A-Z0-9][A-Z0-9_\-]{0,15}", code):
            raise ValueError("A programme code is 1 to 16 letters, digits, hyphens or underscores")
        return code

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9\-]{6,64}", value or ""):
            raise ValueError("A reference is 6 to 64 letters, digits or hyphens")
        return value

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any, info: ValidationInfo) -> Decimal:
        maximum = (info.context or {}).get("max_points", DEFAULT_MAX_POINTS)
        return parse_points(value, Decimal(maximum))

    @field_validator("card_id", mode="before")
    @classmethod
    def _card_id(cls, value: Any) -> str | None:
        return parse_card_id(value)

    @field_validator("reason", mode="before")
    @classmethod
    def _reason(cls, value: Any) -> str:
        return parse_free_text(value, "Reason", 200)

    @model_validator(mode="after")
    def _who(self) -> Allocation:
        if self.kind is Kind.CREATE and self.employee is None:
            raise ValueError("A new account needs the employee's details")
        if self.kind is not Kind.CREATE and not self.card_id and self.employee is None:
            raise ValueError("Choose the employee whose card to use")
        return self

    @property
    def transaction_type(self) -> str:
        return self.kind.transaction_type


class AllocationResult(BaseModel):
    """What EnKash confirmed for one allocation (a success whose reference matched)."""

    model_config = ConfigDict(frozen=True)

    reference: str
    card_id: str
    transaction_id: str
    balance_after: Decimal | None
    card_status: str = ""
    kyc_status: str = ""
    raw: dict[str, Any] = {}
    #: What in EnKash's reply could not be stored as given, in words for the audit trail
    #: (e.g. "EnKash reported balance '92415.445', not stored as a number").
    notes: tuple[str, ...] = ()


class TransactionRecord(BaseModel):
    """One transaction as EnKash's transaction lookup reports it."""

    model_config = ConfigDict(frozen=True)

    reference: str
    transaction_id: str
    card_id: str
    transaction_type: str
    amount: Decimal
    balance_after: Decimal | None = None
    status: str = ""
    happened_at: datetime | None = None
    notes: tuple[str, ...] = ()  # what could not be kept as EnKash gave it (see AllocationResult)


def field_errors(error: ValidationError) -> dict[str, str]:
    """``{"employee.mobile": "Enter a 10-digit ...", ...}``: the first message per field."""
    messages: dict[str, str] = {}
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "__all__"
        message = item["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        messages.setdefault(field, message)
    return messages


class AccountDetails(BaseModel):
    """The company's reward account (the pool that credits are drawn from)."""

    model_config = ConfigDict(frozen=True)

    available_balance: Decimal
    available_card_balance: Decimal = Decimal("0")
    total_cards: int = 0
    active_cards: int = 0
    total_allocation: Decimal = Decimal("0")
    total_redemption: Decimal = Decimal("0")
    current_month_allocation: Decimal = Decimal("0")
    current_month_redemption: Decimal = Decimal("0")
    company_name: str = ""


class CardHolder(BaseModel):
    """An employee card as EnKash's user search reports it."""

    model_config = ConfigDict(frozen=True)

    card_id: str
    email: str = ""
    mobile: str = ""
    title: str = ""
    first_name: str = ""
    gender: str = ""
    user_id: str = ""
    balance: Decimal | None = None
