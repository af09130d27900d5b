"""Employees as the ledger knows them: cards with a succeeded row, their latest details and known
balance, searched by contact; and the headline totals over succeeded rows."""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from services.models import Kind, Status
from services.store.engine import Database, from_cents
from services.store.records import EmployeeSummary
from services.store.schema import transactions

#: A query that is a phone number as people type it ("+91 96000-98867"): only then are its digits
#: matched against mobiles, so the digits inside a card id never pick another person's mobile.
_PHONE_TEXT = re.compile(r"[\d\s+().-]+")


def _like(text: str) -> str:
    """A case-insensitive substring pattern with LIKE's wildcards taken literally."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class EmployeeStore(Database):
    """Read-only queries over succeeded ``transactions`` rows, one card at a time or all."""

    def known_balance(self, card_id: str) -> Decimal | None:
        """The balance after the card's latest ``SUCCEEDED`` row (by update time, then id).

        ``None`` if the card has no succeeded row, or if that row's balance is not known (a
        lookup settled it without one): an older balance would be stale, so it is not offered.
        """
        with self.reading() as conn:
            found = conn.execute(
                sa.select(transactions.c.balance_after_cents)
                .where(
                    transactions.c.card_id == card_id,
                    transactions.c.status == Status.SUCCEEDED.value,
                )
                .order_by(transactions.c.updated_at.desc(), transactions.c.id.desc())
                .limit(1)
            ).first()
            return from_cents(found[0]) if found is not None else None

    def find_employees(self, query: str, limit: int = 20) -> list[EmployeeSummary]:
        """Cards whose email, mobile, card id or first name contains ``query`` (any case).

        One entry per card that exists (has a ``SUCCEEDED`` row), most recently active first,
        with the latest employee details and known balance.
        """
        text = " ".join(query.split())
        if not text:
            return []
        pattern = _like(text)
        t = transactions
        matches = [
            sa.func.lower(t.c.email).like(pattern, escape="\\"),
            sa.func.lower(t.c.mobile).like(pattern, escape="\\"),
            sa.func.lower(t.c.card_id).like(pattern, escape="\\"),
            sa.func.lower(t.c.first_name).like(pattern, escape="\\"),
        ]
        digits = re.sub(r"\D", "", text)
        if len(digits) >= 3 and digits != text and _PHONE_TEXT.fullmatch(text):
            # "96000 98867" or "+91 96000-98867" still finds the stored 10-digit number.
            national = digits[-10:] if len(digits) > 10 else digits
            matches.append(t.c.mobile.like(f"%{national}%"))
        card_ids = (
            sa.select(t.c.card_id)
            .where(t.c.status == Status.SUCCEEDED.value, t.c.card_id.is_not(None), sa.or_(*matches))
            .distinct()
        )
        return self._summaries(card_ids, limit)

    def cards_by_contact(
        self, *, emails: Iterable[str] = (), mobiles: Iterable[str] = ()
    ) -> dict[tuple[str, str], set[str]]:
        """Cards that exist (a ``SUCCEEDED`` row) per exact contact: ``("email", e)`` (any case)
        or ``("mobile", m)`` (10 digits) -> card ids. Any row of a card counts, not only its
        latest, so a card once recorded with this email or mobile is never missed."""
        t = transactions
        wanted = {
            "email": sorted({e.strip().lower() for e in emails if e and e.strip()}),
            "mobile": sorted({m.strip() for m in mobiles if m and m.strip()}),
        }
        columns = {"email": sa.func.lower(t.c.email), "mobile": t.c.mobile}
        found: dict[tuple[str, str], set[str]] = {}
        with self.reading() as conn:
            for name, values in wanted.items():
                for start in range(0, len(values), 500):
                    chunk = values[start : start + 500]
                    rows = conn.execute(
                        sa.select(columns[name].label("key"), t.c.card_id)
                        .where(
                            t.c.status == Status.SUCCEEDED.value,
                            t.c.card_id.is_not(None),
                            columns[name].in_(chunk),
                        )
                        .distinct()
                    )
                    for key, card in rows:
                        found.setdefault((name, key), set()).add(card)
        return found

    def employees_by_cards(self, card_ids: Iterable[str]) -> list[EmployeeSummary]:
        """The summaries of the given cards that exist, most recently active first."""
        keys = sorted({card.strip().upper() for card in card_ids if card and card.strip()})
        return self._summaries(keys, max(1, len(keys))) if keys else []

    def employee_by_card(self, card_id: str) -> EmployeeSummary | None:
        """The card's latest employee details and known balance, if the card exists."""
        key = card_id.strip().upper()
        found = self._summaries([key], 1)
        return found[0] if found else None

    def card_totals(self) -> dict[str, Decimal]:
        """Per card: succeeded credits (create + credit) minus succeeded debits (drift checks)."""
        t = transactions
        signed = sa.case((t.c.kind == Kind.DEBIT.value, -t.c.amount_cents), else_=t.c.amount_cents)
        with self.reading() as conn:
            found = conn.execute(
                sa.select(t.c.card_id, sa.func.sum(signed))
                .where(t.c.status == Status.SUCCEEDED.value, t.c.card_id.is_not(None))
                .group_by(t.c.card_id)
            )
            return {card: from_cents(int(total)) for card, total in found}  # type: ignore[misc]

    def totals(self) -> dict[str, Any]:
        """Headline figures, computed in SQL: ``credited``, ``debited``, ``net`` (Decimal,
        succeeded rows only), ``employees`` (distinct cards) and ``transactions`` (all rows)."""
        t = transactions
        succeeded = t.c.status == Status.SUCCEEDED.value
        debit = t.c.kind == Kind.DEBIT.value
        credited = sa.func.coalesce(
            sa.func.sum(sa.case((sa.and_(succeeded, ~debit), t.c.amount_cents), else_=0)), 0
        )
        debited = sa.func.coalesce(
            sa.func.sum(sa.case((sa.and_(succeeded, debit), t.c.amount_cents), else_=0)), 0
        )
        employees = sa.func.count(sa.distinct(sa.case((succeeded, t.c.card_id), else_=None)))
        with self.reading() as conn:
            row = conn.execute(sa.select(credited, debited, employees, sa.func.count())).one()
        credited_cents, debited_cents = int(row[0]), int(row[1])
        return {
            "credited": from_cents(credited_cents),
            "debited": from_cents(debited_cents),
            "net": from_cents(credited_cents - debited_cents),
            "employees": int(row[2]),
            "transactions": int(row[3]),
        }

    def _summaries(self, card_ids: Any, limit: int) -> list[EmployeeSummary]:
        """Summaries of the given cards (a subquery or a list), most recently active first."""
        t = transactions
        succeeded = t.c.status == Status.SUCCEEDED.value
        with self.reading() as conn:
            active = conn.execute(
                sa.select(t.c.card_id, sa.func.max(t.c.updated_at).label("last"))
                .where(succeeded, t.c.card_id.in_(card_ids))
                .group_by(t.c.card_id)
                .order_by(sa.desc("last"), t.c.card_id)
                .limit(limit)
            ).all()
            if not active:
                return []
            chosen = [card for card, _ in active]
            history = conn.execute(
                sa.select(t)
                .where(succeeded, t.c.card_id.in_(chosen))
                .order_by(t.c.updated_at, t.c.id)
            ).mappings()
            latest_row: dict[str, Any] = {}
            latest_person: dict[str, Any] = {}
            for m in history:  # ascending, so the last one seen per card is the latest
                latest_row[m["card_id"]] = m
                if m["email"] or m["mobile"] or m["first_name"]:
                    latest_person[m["card_id"]] = m
        summaries = []
        for card, last in active:
            person = latest_person.get(card, {})
            summaries.append(
                EmployeeSummary(
                    card_id=card,
                    email=person.get("email"),
                    mobile=person.get("mobile"),
                    title=person.get("title"),
                    first_name=person.get("first_name"),
                    gender=person.get("gender"),
                    balance=from_cents(latest_row[card]["balance_after_cents"]),
                    last_activity=last,
                )
            )
        return summaries
