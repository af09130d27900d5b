"""Corrections: reverse a movement, in part or whole, through a second person's approval.

``request_reversal`` records the opposite movement for the same card (a debit for a credit or a
new account's first credit, a credit for a debit) as ``QUEUED``, linked to its original by
``reverses``, together with an approval request of kind ``reversal``: nothing is sent until a
second person approves it on the Approvals page (``approvals.approve`` then sends it once, with
its own reference). The amount is capped, under the original's row lock and its card's lock, at
what is left un-reversed and, for a credit, at what the card holds now (``Ledger.record_reversal``),
so partial reversals add up and never exceed the original, nor reversals of one card's credits
what the card holds, however many people ask at once.

A reversal belongs to its original's programme. Reversing a credit gives the programme back what
it reverses once EnKash confirms it. Reversing a debit credits the card from the programme again:
it is a credit of that programme, so it is refused while the programme is closed, ended or not
started, and is capped at what its budget has left, which it reserves from the moment it is asked
for (a rejected or failed one gives it back). A closed programme takes no new credits, whatever
they are for: the manager credits the card from an open programme instead.

``request_batch_reversal`` does the same for every succeeded row of a batch as one reversal
batch: each row is capped the same way (partial when the card was spent or, for a debit, when
its programme has less left, shared by the batch's rows in row order), rows with nothing left
to reverse stay in its report with why, and the batch waits for a second person's approval
(``bulk.approval_reasons`` always names a reversal batch) before a worker sends it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services import allocations
from services.allocations import new_reference
from services.config import Settings
from services.errors import InvalidInput, NotFound
from services.models import Allocation, Kind, parse_free_text, parse_points
from services.store import (
    BatchRecord,
    DuplicateReference,
    Ledger,
    LedgerRow,
    ReversalRefused,
    ReversalRoom,
)

__all__ = [
    "BatchReversal",
    "BatchReversalPreview",
    "ReversalRefused",
    "ReversalRoom",
    "opposite",
    "preview_batch_reversal",
    "request_batch_reversal",
    "request_reversal",
    "room",
]


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
    amount is above what can be reversed now, or the reversal of a debit would credit a closed
    programme or one whose budget cannot cover it (nothing written; ``room`` says how much can).
    Repeating the same ``reversal_reference`` (a double click, even two at once) returns the row
    already recorded.
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


# --- a whole batch -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchReversalLine:
    """One succeeded row of a batch and what reversing it would take back now."""

    row_number: int | None
    reference: str
    first_name: str
    card_id: str
    kind: Kind  # the original's kind
    amount: Decimal  # the original's amount
    already: Decimal  # reversed already, or asked for
    reversible: Decimal  # what a reversal would take back now
    why: str  # empty when it is reversed in full; else why not (card spent, already reversed)

    @property
    def full(self) -> bool:
        return self.reversible == self.amount

    @property
    def shortfall(self) -> Decimal:
        return self.amount - self.reversible


@dataclass(frozen=True)
class BatchReversalPreview:
    batch_id: str
    lines: list[BatchReversalLine]

    @property
    def reversible(self) -> list[BatchReversalLine]:
        return [line for line in self.lines if line.reversible > 0]

    @property
    def short(self) -> list[BatchReversalLine]:
        """Rows that cannot be reversed fully (partly or not at all), with why."""
        return [line for line in self.lines if not line.full]

    @property
    def total(self) -> Decimal:
        return sum((line.reversible for line in self.lines), Decimal("0"))


@dataclass(frozen=True)
class BatchReversal:
    batch: BatchRecord  # the reversal batch (waits for a second person)
    preview: BatchReversalPreview  # what it was decided on, under the originals' locks
    awaiting_approval: bool


def _line(room: ReversalRoom) -> BatchReversalLine:
    original = room.original
    return BatchReversalLine(
        row_number=original.row_number,
        reference=original.reference,
        first_name=original.first_name or "",
        card_id=original.card_id or "",
        kind=original.kind,
        amount=original.amount,
        already=room.already,
        reversible=max(room.cap, Decimal("0")),
        why=room.why,
    )


def preview_batch_reversal(ledger: Ledger, batch_id: str) -> BatchReversalPreview:
    """What reversing every succeeded row of ``batch_id`` would take back now, row by row, and
    which rows cannot be reversed fully and why (read only; nothing is written)."""
    if ledger.get_batch(batch_id) is None:
        raise NotFound(f"There is no batch {batch_id}.")
    return BatchReversalPreview(batch_id, [_line(r) for r in ledger.batch_reversal_rooms(batch_id)])


def request_batch_reversal(
    ledger: Ledger,
    settings: Settings,
    batch_id: str,
    *,
    maker: str,
    reason: Any,
    session_id: str | None = None,
) -> BatchReversal:
    """One reversal batch for every succeeded row of ``batch_id``: each row takes back what may
    be reversed now (partial to the cap when the card holds less), rows with nothing left are
    kept in its report with why. It waits for a second person's approval (a reversal always
    does), then runs like any batch. ``ReversalInvalid`` for a missing reason;
    ``ReversalRefused`` when nothing can be reversed (nothing written)."""
    from services import bulk  # bulk imports allocations; keep this module light to import

    try:
        why = parse_free_text(reason, "Reason", 200)
    except ValueError as error:
        raise ReversalInvalid(str(error)) from None
    if not why:
        raise ReversalInvalid("Say why it is reversed: the approver and the history show it.")
    original = ledger.get_batch(batch_id)
    if original is None:
        raise NotFound(f"There is no batch {batch_id}.")
    new_id = bulk.new_batch_id()
    record, rooms = ledger.create_reversal_batch(
        batch_id=new_id,
        file_digest=hashlib.sha256(f"reversal:{batch_id}:{new_id}".encode()).hexdigest(),
        original_batch=batch_id,
        operator=maker,
        reason=why,
        reference_for=lambda number: allocations.batch_reference(new_id, number),
        concurrency=original.concurrency,
        session_id=session_id,
    )
    held = bulk.start_or_ask_approval(ledger, settings, new_id, actor=maker)
    return BatchReversal(record, BatchReversalPreview(batch_id, [_line(r) for r in rooms]), held)
