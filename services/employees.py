"""Finding an employee's card: the ledger first, then EnKash's user search for exact keys."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from services.enkash import EnkashClient, EnkashError
from services.models import CardHolder, Employee, parse_email, parse_mobile
from services.store import EmployeeSummary, Ledger

log = logging.getLogger("points_desk.employees")

#: The shape of an EnKash card id (``EKC04AZHXP``); one with no digit also reads as a name.
CARD_SHAPE = re.compile(r"[A-Za-z]{2,5}[A-Za-z0-9]{4,28}")


def exact_key(query: str) -> dict[str, str] | None:
    """The EnKash search filter a query is exactly (email, mobile or card id), if any."""
    text = query.strip()
    if "@" in text:
        try:
            return {"email": parse_email(text)}
        except ValueError:
            return None
    if sum(ch.isdigit() for ch in text) >= 10:
        try:
            return {"mobile": parse_mobile(text)}
        except ValueError:
            return None
    if CARD_SHAPE.fullmatch(text) and any(ch.isdigit() for ch in text):
        return {"card_id": text.upper()}
    return None


def _summary_of(holder: CardHolder) -> EmployeeSummary:
    return EmployeeSummary(
        card_id=holder.card_id,
        email=holder.email or None,
        mobile=holder.mobile or None,
        title=holder.title or None,
        first_name=holder.first_name or None,
        gender=holder.gender or None,
        balance=holder.balance,
        last_activity=None,
    )


def _merge(found: dict[str, EmployeeSummary], holders: list[CardHolder]) -> None:
    """Add EnKash's cards to ``found``; EnKash's balance fills in what the ledger lacks."""
    for holder in holders:
        known = found.get(holder.card_id)
        if known is None:
            found[holder.card_id] = _summary_of(holder)
        elif known.balance is None and holder.balance is not None:
            found[holder.card_id] = replace(known, balance=holder.balance)


def _ledger_exact(ledger: Ledger, key: dict[str, str]) -> list[EmployeeSummary]:
    if "card_id" in key:
        return ledger.employees_by_cards([key["card_id"]])
    by_contact = ledger.cards_by_contact(
        emails=[key["email"]] if "email" in key else (),
        mobiles=[key["mobile"]] if "mobile" in key else (),
    )
    return ledger.employees_by_cards(card for cards in by_contact.values() for card in cards)


def _at_enkash(
    client: EnkashClient, key: dict[str, str], known: dict[str, EmployeeSummary]
) -> list[CardHolder]:
    """What EnKash holds for an exact key (see ``find_employees``): by card id when the key is
    one, or for each card of the ledger's that lacks a balance; the whole listing otherwise."""
    if "card_id" in key or not known:
        return client.search_users(**key)
    return [
        holder
        for card_id, summary in known.items()
        if summary.balance is None
        for holder in client.search_users(card_id=card_id)
    ]


def find_employees(
    ledger: Ledger, client: EnkashClient | None, query: str, limit: int = 20
) -> tuple[list[EmployeeSummary], str | None]:
    """Matches for a search box, and a note when EnKash could not be asked.

    When the query is exactly an email, mobile or card id, the cards it is exactly the key of
    are the answer, alone: a card id must not also list everyone whose mobile happens to contain
    its digits. Otherwise (or when nothing has that exact key) the ledger's substring search
    answers (name, email, mobile or card id).

    Which cards have the key: a card id is asked at EnKash (one card's record). An email or
    mobile the ledger knows is answered by the ledger, and EnKash is asked only for a balance the
    ledger lacks, card by card. EnKash's search has no email or mobile filter, so asking it by
    email means fetching every card of the account: megabytes for a programme of 20,000
    people, on every search. That listing is made only when the ledger knows no card with the
    key, so a card made outside Points Desk can still be found.
    """
    query = query.strip()
    if not query:
        return [], None
    key = exact_key(query)
    note = None
    found: dict[str, EmployeeSummary] = {}
    if key is not None:
        found = {summary.card_id: summary for summary in _ledger_exact(ledger, key)}
        if client is not None:
            note = _merge_from_enkash(found, lambda: _at_enkash(client, key, found))
        if found:
            return list(found.values())[:limit], note
    for summary in ledger.find_employees(query, limit=limit):
        found.setdefault(summary.card_id, summary)
    if not found and key is None and client is not None and CARD_SHAPE.fullmatch(query):
        # A card id with no digit ("EKCKCGJCFU") reads as a name. Nothing here has that name,
        # so it may be a card made outside Points Desk: EnKash is asked for it only now, so
        # typing a name the ledger knows costs no call.
        note = _merge_from_enkash(found, lambda: holders_by_card(client, query.upper()))
    return list(found.values())[:limit], note


def _merge_from_enkash(
    found: dict[str, EmployeeSummary], ask: Callable[[], list[CardHolder]]
) -> str | None:
    """``_merge`` what ``ask`` gets from EnKash into ``found``; the note to show if it failed."""
    try:
        _merge(found, ask())
    except EnkashError as error:
        log.warning("EnKash user search failed: %s", error)
        return "EnKash's user search did not answer; showing what Points Desk knows."
    return None


def holders_by_card(client: EnkashClient, card: str) -> list[CardHolder]:
    """EnKash's record of the card with exactly this (upper-case) id, if it has one."""
    return [h for h in client.search_users(card_id=card) if h.card_id.upper() == card]


# --- an account about to be created: does the employee already have a card? --------------------


@dataclass(frozen=True)
class HolderCheck:
    """The cards an employee already holds, by their email or mobile, before a ``create``.

    ``holders`` come from the ledger and from EnKash's user search (EnKash matches a create by
    email, then mobile, and credits the card it finds, whoever holds it). ``unchecked`` says why
    EnKash could not be asked; then the absence of holders proves nothing.
    """

    holders: tuple[EmployeeSummary, ...] = ()
    unchecked: str | None = None

    @property
    def clear(self) -> bool:
        """Nothing stands in the way of creating the account."""
        return not self.holders and self.unchecked is None


SEARCH_UNANSWERED = (
    "EnKash's user search did not answer, so Points Desk cannot tell whether this email or "
    "mobile already has a card. Nothing was sent: a create for an existing card would credit "
    "that card's holder. Try again in a moment."
)


def existing_holders(
    ledger: Ledger, client: EnkashClient | None, employee: Employee
) -> HolderCheck:
    """The cards that already have this employee's email or mobile (see ``HolderCheck``)."""
    return existing_holders_many(ledger, client, [employee])[0]


def existing_holders_many(
    ledger: Ledger, client: EnkashClient | None, employees: list[Employee]
) -> list[HolderCheck]:
    """``existing_holders`` for many employees with one ledger query and one EnKash search."""
    if not employees:
        return []
    by_contact = ledger.cards_by_contact(
        emails=[e.email for e in employees], mobiles=[e.mobile for e in employees]
    )
    known = {
        summary.card_id: summary
        for summary in ledger.employees_by_cards(
            card for cards in by_contact.values() for card in cards
        )
    }
    unchecked = None
    at_enkash: list[CardHolder] = []
    if client is None:
        unchecked = SEARCH_UNANSWERED
    else:
        try:
            # One listing of the account's cards: the search filters nothing but the card id.
            at_enkash = client.search_users()
        except EnkashError as error:
            log.warning("EnKash user search failed: %s", error)
            unchecked = SEARCH_UNANSWERED
    checks = []
    for employee in employees:
        email, mobile = employee.email.lower(), _national(employee.mobile)
        holders = {
            card: known[card]
            for name, value in (("email", email), ("mobile", mobile))
            for card in sorted(by_contact.get((name, value), ()))
            if card in known
        }
        matching = [
            holder
            for holder in at_enkash
            if (holder.email and holder.email.strip().lower() == email)
            or (holder.mobile and _national(holder.mobile) == mobile)
        ]
        # EnKash is the authority on who holds a card: its details replace the ledger's.
        for holder in matching:
            summary = _summary_of(holder)
            if holder.card_id in holders and summary.balance is None:
                summary = replace(summary, balance=holders[holder.card_id].balance)
            holders[holder.card_id] = summary
        checks.append(HolderCheck(tuple(holders.values()), unchecked))
    return checks


def _national(mobile: str) -> str:
    digits = re.sub(r"\D", "", mobile or "")
    return digits[-10:]
