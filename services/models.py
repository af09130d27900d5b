"""Typed, validated domain objects.

Every value a program manager types (one form or one CSV row) becomes one of these models before
anything is stored or sent; a ``pydantic.ValidationError`` from here names the field and says what
is wrong in plain words. ``field_errors`` turns it into ``{field: message}`` for forms and rows.
"""

from __future__ import annotations

import re
import unicodedata
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


# --- single-value parsers, shared by the models, forms and the CSV importer ---------------------

_AMOUNT_TEXT = re.compile(r"^\d+(\.\d+)?$")
_NAME_CHARS = re.compile(r"^[^\W\d_]+(?:[ .'\-][^\W\d_]*)*$")


# Commas only as thousands (1,500,000) or Indian (15,00,000) grouping, before any decimal point.
_GROUPED = re.compile(r"^(?:\d{1,3}(?:,\d{3})+|\d{1,2}(?:,\d{2})*,\d{3})(?:\.\d*)?$")


def _ungroup(text: str) -> str:
    """``1,50,000`` -> ``150000``; a comma anywhere else may be a decimal comma: refused."""
    if _GROUPED.match(text):
        return text.replace(",", "")
    if re.fullmatch(r"\d+,\d+", text):
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
        raise ValueError(f"At most {maximum:,} points in one transaction")
    return amount.quantize(CENT)


def parse_mobile(value: Any) -> str:
    """An Indian mobile number as the 10-digit national number EnKash expects."""
    text = str(value or "").strip()
    if not text:
        raise ValueError("Enter a mobile number")
    try:
        number = phonenumbers.parse(text, "IN")
    except phonenumbers.NumberParseException as exc:
        raise ValueError("Enter a 10-digit Indian mobile number, like 96000 98867") from exc
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
        raise ValueError("Enter a 10-digit Indian mobile number, like 96000 98867")
    national = str(number.national_number)
    if len(national) != 10:
        raise ValueError("Enter a 10-digit Indian mobile number, like 96000 98867")
    return national


def parse_email(value: Any) -> str:
    """A syntactically valid email address, normalised to lower case."""
    text = str(value or "").strip()
    if not text:
        raise ValueError("Enter an email address")
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"Not a valid email address: {exc}") from exc
    return checked.normalized.lower()


def parse_first_name(value: Any) -> str:
    text = " ".join(unicodedata.normalize("NFC", str(value or "")).split())
    if not text:
        raise ValueError("Enter the first name")
    if len(text) > 50:
        raise ValueError("First name can be at most 50 characters")
    if not _NAME_CHARS.match(text):
        raise ValueError("First name can hold letters, spaces, dots, hyphens and apostrophes only")
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
        text = str(value or "").strip().upper()
        if not text:
            return None
        if not re.fullmatch(r"[A-Z0-9]{4,32}", text):
            raise ValueError("A card id is letters and digits, like EKC04AZHXP")
        return text

    @field_validator("reason", mode="before")
    @classmethod
    def _reason(cls, value: Any) -> str:
        text = " ".join(str(value or "").split())
        if len(text) > 200:
            raise ValueError("Reason can be at most 200 characters")
        return text

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
