"""Finding an employee's card: the ledger first, then EnKash's user search for exact keys."""

from __future__ import annotations

import logging
import re

from services.enkash import EnkashClient, EnkashError
from services.ledger import EmployeeSummary, Ledger
from services.models import parse_email, parse_mobile

log = logging.getLogger("points_desk.employees")

_CARD_ID = re.compile(r"[A-Za-z]{2,5}[A-Za-z0-9]{4,28}")


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
    if _CARD_ID.fullmatch(text) and any(ch.isdigit() for ch in text):
        return {"card_id": text.upper()}
    return None


def find_employees(
    ledger: Ledger, client: EnkashClient | None, query: str, limit: int = 20
) -> tuple[list[EmployeeSummary], str | None]:
    """Matches for a search box, and a note when EnKash could not be asked.

    The ledger answers every query (substring of name, email, mobile or card id). When the query
    is exactly an email, mobile or card id, EnKash's user search is asked as well, so a card made
    outside Points Desk can still be found; EnKash's balance then fills in what the ledger lacks.
    """
    query = query.strip()
    if not query:
        return [], None
    found = {summary.card_id: summary for summary in ledger.find_employees(query, limit=limit)}
    key = exact_key(query)
    note = None
    if client is not None and key is not None:
        try:
            for holder in client.search_users(**key):
                if holder.card_id in found:
                    known = found[holder.card_id]
                    if known.balance is None and holder.balance is not None:
                        found[holder.card_id] = EmployeeSummary(
                            **{**known.__dict__, "balance": holder.balance}
                        )
                    continue
                found[holder.card_id] = EmployeeSummary(
                    card_id=holder.card_id,
                    email=holder.email or None,
                    mobile=holder.mobile or None,
                    title=holder.title or None,
                    first_name=holder.first_name or None,
                    gender=holder.gender or None,
                    balance=holder.balance,
                    last_activity=None,
                )
        except EnkashError as error:
            log.warning("EnKash user search failed: %s", error)
            note = "EnKash's user search did not answer; showing what Points Desk knows."
    return list(found.values())[:limit], note
