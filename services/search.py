"""One search box for "what happened to X?": a reference opens its transaction, a card id, email
or mobile opens its employee, anything else lists the employees it matches.

The query is classified first (``classify``), then answered from the ledger; for an exact card
id, email or mobile EnKash's user search is asked too (``services.employees.find_employees``), so
a card made outside Points Desk is still found. Nothing here sends anything to EnKash's
allocate endpoint: a search only reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

import sqlalchemy as sa

from services.employees import (
    CARD_SHAPE,
    _summary_of,
    exact_key,
    find_employees,
    holders_by_card,
)
from services.enkash import EnkashClient, EnkashError
from services.store import EmployeeSummary, Ledger, LedgerRow, ledger_row, transactions

# A Points Desk reference (``allocations.new_reference``) or a batch row's (``<batch>-000012``).
_REFERENCE = re.compile(r"PD\d{12}[0-9A-F]{8}|[A-Z0-9]{4,40}-\d{6}")
MAX_QUERY = 200


class QueryKind(StrEnum):
    EMPTY = "empty"
    REFERENCE = "reference"
    CARD_ID = "card_id"
    EMAIL = "email"
    MOBILE = "mobile"
    TEXT = "text"


class Answer(StrEnum):
    NOTHING = "nothing"  # nothing matches (or the query is empty)
    TRANSACTION = "transaction"  # exactly one transaction: open it
    EMPLOYEE = "employee"  # exactly one employee by an exact key: open them
    MATCHES = "matches"  # a short list to choose from


@dataclass(frozen=True)
class SearchResult:
    """What a search found. ``transaction`` is set for ``TRANSACTION``; ``employees`` holds the
    one employee (``EMPLOYEE``) or the list (``MATCHES``). ``note`` says what could not be
    asked (EnKash's user search did not answer) or why nothing was searched."""

    query: str
    kind: QueryKind
    answer: Answer
    transaction: LedgerRow | None = None
    employees: tuple[EmployeeSummary, ...] = ()
    note: str | None = None

    @property
    def employee(self) -> EmployeeSummary | None:
        return self.employees[0] if self.answer is Answer.EMPLOYEE else None


def classify(query: str) -> QueryKind:
    """What the query is exactly, by its shape alone (no lookup)."""
    text = " ".join((query or "").split())
    if not text:
        return QueryKind.EMPTY
    if _REFERENCE.fullmatch(text.upper()):
        return QueryKind.REFERENCE
    key = exact_key(text)
    if key is not None:
        return QueryKind(next(iter(key)))
    return QueryKind.TEXT


def _transaction(ledger: Ledger, text: str) -> LedgerRow | None:
    """The row whose reference, or EnKash transaction id, is exactly ``text`` (any case)."""
    for candidate in dict.fromkeys((text, text.upper())):
        row = ledger.get(candidate)
        if row is not None:
            return row
    if " " in text or not any(ch.isdigit() for ch in text):
        return None  # a name: no EnKash transaction id looks like one
    with ledger.engine.connect() as conn:
        reference = conn.execute(
            sa.select(transactions.c.reference)
            .where(transactions.c.transaction_id == text)
            .order_by(transactions.c.id.desc())
            .limit(1)
        ).scalar()
    return ledger.get(reference) if reference is not None else None


def search(
    ledger: Ledger, client: EnkashClient | None, query: str, *, limit: int = 8
) -> SearchResult:
    """Answer a search box (see the module's docstring)."""
    text = " ".join((query or "").split())
    kind = classify(text)
    if kind is QueryKind.EMPTY:
        return SearchResult(text, kind, Answer.NOTHING)
    if len(text) > MAX_QUERY:
        return SearchResult(
            text[:MAX_QUERY], kind, Answer.NOTHING, note=f"At most {MAX_QUERY} characters."
        )
    # A reference (or an EnKash transaction id, which has no fixed shape) opens its transaction.
    if kind in (QueryKind.REFERENCE, QueryKind.TEXT, QueryKind.CARD_ID):
        row = _transaction(ledger, text)
        if row is not None:
            return SearchResult(text, kind, Answer.TRANSACTION, transaction=row)
        if kind is QueryKind.REFERENCE:
            return SearchResult(text, kind, Answer.NOTHING)
    if kind is QueryKind.TEXT and CARD_SHAPE.fullmatch(text):
        # A card id with no digit ("EKCKCGJCFU") looks like a name: the ledger decides.
        known = ledger.employee_by_card(text)
        if known is not None:
            return SearchResult(text, QueryKind.CARD_ID, Answer.EMPLOYEE, employees=(known,))
    exact = kind in (QueryKind.CARD_ID, QueryKind.EMAIL, QueryKind.MOBILE)
    found, note = find_employees(ledger, client if exact else None, text, limit=limit)
    if exact and len(found) == 1 and _is_key_of(found[0], kind, text):
        return SearchResult(text, kind, Answer.EMPLOYEE, employees=tuple(found), note=note)
    if not found and kind is QueryKind.TEXT and client is not None and CARD_SHAPE.fullmatch(text):
        # Nothing here by that name: it may be a card id with no digit, made outside Points
        # Desk. EnKash is asked only now, so typing a name costs no call to EnKash.
        held = _card_at_enkash(client, text)
        if held is not None:
            return SearchResult(text, QueryKind.CARD_ID, Answer.EMPLOYEE, employees=(held,))
    if not found:
        return SearchResult(text, kind, Answer.NOTHING, note=note)
    return SearchResult(text, kind, Answer.MATCHES, employees=tuple(found), note=note)


def _card_at_enkash(client: EnkashClient, text: str) -> EmployeeSummary | None:
    """The card EnKash knows by exactly this id, if any (a failed lookup finds nothing)."""
    try:
        holders = holders_by_card(client, text.upper())
    except EnkashError:
        return None
    return _summary_of(holders[0]) if len(holders) == 1 else None


def _is_key_of(summary: EmployeeSummary, kind: QueryKind, text: str) -> bool:
    """Whether the query is exactly this employee's card id, email or mobile (not a substring
    match that ``find_employees`` fell back to)."""
    key = exact_key(text) or {}
    if kind is QueryKind.CARD_ID:
        return summary.card_id.upper() == key.get("card_id")
    if kind is QueryKind.EMAIL:
        return (summary.email or "").strip().lower() == key.get("email", "").lower()
    digits = re.sub(r"\D", "", summary.mobile or "")[-10:]
    return bool(digits) and digits == key.get("mobile")


# --- one employee: their card, what EnKash says it holds, and every movement -------------------


@dataclass(frozen=True)
class EmployeeRecord:
    """An employee's card as the ledger knows it and, when EnKash answered, as EnKash does."""

    card_id: str
    summary: EmployeeSummary | None  # the ledger's (None: the card is known only at EnKash)
    enkash_balance: Decimal | None = None  # when EnKash's user search said
    at_enkash: bool = False  # EnKash's search found the card
    note: str | None = None  # why EnKash's side is missing

    @property
    def found(self) -> bool:
        return self.summary is not None or self.at_enkash


def employee(ledger: Ledger, client: EnkashClient | None, card_id: str) -> EmployeeRecord:
    """The card's holder and balances: the ledger's summary, and EnKash's when it answers."""
    card = (card_id or "").strip().upper()
    summary = ledger.employee_by_card(card) if card else None
    if not card or client is None:
        return EmployeeRecord(card, summary)
    try:
        holders = holders_by_card(client, card)
    except EnkashError:
        return EmployeeRecord(
            card, summary, note="EnKash did not answer; the balance is what Points Desk knows."
        )
    if not holders:
        return EmployeeRecord(card, summary)
    holder = holders[0]
    return EmployeeRecord(
        card,
        summary if summary is not None else _summary_of(holder),
        enkash_balance=holder.balance,
        at_enkash=True,
    )


@dataclass(frozen=True)
class MovementsPage:
    rows: list[LedgerRow]
    total: int
    number: int  # 1-based
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def movements(ledger: Ledger, card_id: str, number: int = 1, size: int = 50) -> MovementsPage:
    """Every transaction of one card, whatever its outcome, newest first, one page of them."""
    t = transactions
    card = (card_id or "").strip().upper()
    with ledger.engine.connect() as conn:
        total = int(
            conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.card_id == card)
            ).scalar_one()
        )
        pages = max(1, -(-total // size))
        number = min(max(1, int(number)), pages)
        rows = [
            ledger_row(m)
            for m in conn.execute(
                sa.select(t)
                .where(t.c.card_id == card)
                .order_by(t.c.created_at.desc(), t.c.id.desc())
                .limit(size)
                .offset((number - 1) * size)
            ).mappings()
        ]
    return MovementsPage(rows, total, number, size)
