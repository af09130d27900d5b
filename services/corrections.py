"""Corrections: reverse a movement, in part or whole, through a second person's approval.

``request_reversal`` records the opposite movement for the same card (a debit for a credit or a
new account's first credit, a credit for a debit) as ``QUEUED``, linked to its original by
``reverses``, together with an approval request of kind ``reversal``: nothing is sent until a
second person approves it on the Approvals page (``approvals.approve`` then sends it once, with
its own reference). The amount is capped, under the original's row lock, at what is left
un-reversed and, for a credit, at what the card holds now (``Ledger.record_reversal``), so
partial reversals add up and never exceed the original, however many people ask at once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.allocations import new_reference
from services.errors import InvalidInput
from services.models import Allocation, Kind, parse_free_text, parse_points
from services.store import DuplicateReference, Ledger, LedgerRow, ReversalRefused, ReversalRoom

__all__ = ["ReversalRefused", "ReversalRoom", "opposite", "request_reversal", "room"]


class ReversalInvalid(InvalidInput):
    """The amount or reason of a reversal is not acceptable; the message says why."""


def opposite(kind: Kind) -> Kind:
    """The kind that undoes ``kind``: a debit undoes a credit (or a create), a credit a debit."""
    return Kind.CREDIT if kind is Kind.DEBIT else Kind.DEBIT


def room(ledger: Ledger, reference: str) -> ReversalRoom:
    """How much of ``reference`` may be reversed now, and why not more."""
    return ledger.reversal_room(reference)


def request_reversal(
    ledger: Ledger,
    reference: str,
    amount: Any,
    *,
    maker: str,
    reason: Any,
    reversal_reference: str | None = None,
) -> LedgerRow:
    """Ask for a reversal of ``amount`` points of ``reference``; it waits for a second person.

    ``ReversalInvalid`` for an unreadable amount or a missing reason; ``ReversalRefused`` when the
    amount is above what can be reversed now (nothing written). Repeating the same
    ``reversal_reference`` (a double click) returns the row already recorded.
    """
    try:
        why = parse_free_text(reason, "Reason", 200)
    except ValueError as error:
        raise ReversalInvalid(str(error)) from None
    if not why:
        raise ReversalInvalid("Say why it is reversed: the approver and the history show it.")
    try:
        points = parse_points(amount, Decimal("1e12"))
    except ValueError as error:
        raise ReversalInvalid(str(error)) from None
    reversal_reference = reversal_reference or new_reference("RV")
    existing = ledger.get(reversal_reference)
    if existing is not None and existing.reverses == reference:
        return existing  # a double click or a rerun: the first request stands
    original = ledger.get(reference)
    if original is None:
        raise ReversalRefused(f"There is no transaction {reference}.")
    if not original.card_id:
        raise ReversalRefused("The card of this movement is not known, so it cannot be reversed.")
    reversal = Allocation(
        reference=reversal_reference,
        kind=opposite(original.kind),
        amount=points,
        card_id=original.card_id,
        reason=why,
    )
    try:
        return ledger.record_reversal(
            reference,
            reversal,
            maker=maker,
            request={
                "reverses": reference,
                "card_id": original.card_id,
                "kind": reversal.kind.value,
                "reason": why,
                "first_name": original.first_name,
            },
        )
    except DuplicateReference:
        found = ledger.get(reversal_reference)
        assert found is not None
        return found
