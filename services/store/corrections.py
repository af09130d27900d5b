"""Reversals in the ledger: the link between a movement and the movements that undo it, and the
cap that keeps their sum at or under the original, decided under one row lock.

``record_reversal`` locks the original's row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
``BEGIN IMMEDIATE`` already holds the one write lock), adds up what is already reversed or on
its way (every reversal not ``FAILED``), checks the new amount against what is left (and, for a
credit, against the card's known balance less the debits still in flight on it), and writes the
reversal's intent and its approval request in the same transaction. Two people reversing the
same credit at once are serialised by the lock: the second sees the first's row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.errors import Conflict
from services.models import Allocation, ApprovalStatus, AuditKind, Kind, Status
from services.store.engine import Database, from_cents, to_cents
from services.store.records import (
    BatchRecord,
    LedgerRow,
    UnknownReference,
    batch_record,
    ledger_row,
)
from services.store.schema import approvals, batch_rejected_rows, batches, transactions
from services.store.transactions import _audit, _event, _intent_values, _tally_new

#: Statuses of a reversal that count against its original: everything but a definite FAILED.
_COUNTING = (Status.QUEUED, Status.SENDING, Status.SUCCEEDED, Status.UNKNOWN)
_IN_FLIGHT = (Status.QUEUED, Status.SENDING, Status.UNKNOWN)


@dataclass(frozen=True)
class ReversalRoom:
    """How much of a movement may still be reversed, and why not more."""

    original: LedgerRow
    already: Decimal  # reversed, or asked for and not refused
    left: Decimal  # original - already
    balance: Decimal | None  # a credit's card: known balance less debits in flight (or None)
    cap: Decimal  # the most a new reversal may take back
    why: str  # empty when cap == left; else why it is smaller


class ReversalRefused(Conflict):
    """A reversal that cannot be recorded (too large, not reversible); nothing was written."""

    def __init__(self, message: str, room: ReversalRoom | None = None):
        super().__init__(message)
        self.room = room


def _opposite(kind: Kind) -> Kind:
    return Kind.CREDIT if kind is Kind.DEBIT else Kind.DEBIT


class CorrectionStore(Database):
    """Reversal rows and the "reverses" / "reversed by" links."""

    def reversed_by(self, reference: str) -> list[LedgerRow]:
        """The reversals of a movement (any status), oldest first."""
        with self.reading() as conn:
            found = conn.execute(
                sa.select(transactions)
                .where(transactions.c.reverses == reference)
                .order_by(transactions.c.created_at, transactions.c.id)
            )
            return [ledger_row(m) for m in found.mappings()]

    def reversal_room(self, reference: str) -> ReversalRoom:
        """What may still be reversed of ``reference`` (``UnknownReference`` if absent)."""
        with self.reading() as conn:
            return self._room(conn, reference)

    def record_reversal(
        self,
        reference: str,
        reversal: Allocation,
        *,
        maker: str,
        request: dict | None = None,
        batch_id: str | None = None,
        row_number: int | None = None,
        approval: bool = True,
    ) -> LedgerRow:
        """Write a reversal's intent (``QUEUED``, linked by ``reverses``) and, when ``approval``,
        its pending approval request, in one transaction under the original's row lock.

        ``ReversalRefused`` (nothing written) when the amount is above what may be reversed.
        """
        now = datetime.now(UTC)
        with self.writing() as conn:
            room = self._room(conn, reference, lock=True)
            if room.why and room.cap <= 0:
                raise ReversalRefused(room.why, room)
            if reversal.amount > room.cap:
                raise ReversalRefused(
                    f"At most {room.cap} points of {reference} can be reversed now"
                    + (f": {room.why}" if room.why else ""),
                    room,
                )
            values = _intent_values(
                reversal,
                operator=maker,
                status=Status.QUEUED,
                batch_id=batch_id,
                row_number=row_number,
                session_id=None,
                approved_by=None,
                now=now,
            )
            values["reverses"] = reference
            conn.execute(transactions.insert().values(values))
            _tally_new(conn, [values])
            events = [
                _event(
                    reversal.reference,
                    now,
                    maker,
                    None,
                    Status.QUEUED,
                    f"reversal of {reference} recorded by {maker}: {reversal.reason}",
                    AuditKind.INTENT,
                ),
                _event(
                    reference,
                    now,
                    maker,
                    room.original.status,
                    room.original.status,
                    f"reversal {reversal.reference} of {reversal.amount} points asked by {maker}",
                    AuditKind.NOTE,
                ),
            ]
            if approval:
                conn.execute(
                    approvals.insert().values(
                        subject_kind="reversal",
                        subject=reversal.reference,
                        amount_cents=to_cents(reversal.amount),
                        maker=maker,
                        requested_at=now,
                        status=ApprovalStatus.PENDING.value,
                        comment="",
                        request=json.dumps(request or {"reverses": reference}, sort_keys=True),
                    )
                )
                events.append(
                    _event(
                        reversal.reference,
                        now,
                        maker,
                        Status.QUEUED,
                        Status.QUEUED,
                        "held for approval: a reversal always needs a second person; nothing sent",
                        AuditKind.APPROVAL_REQUESTED,
                    )
                )
            _audit(conn, events)
            found = conn.execute(
                sa.select(transactions).where(transactions.c.reference == reversal.reference)
            )
            return ledger_row(found.mappings().one())

    def batch_reversal_rooms(self, batch_id: str) -> list[ReversalRoom]:
        """What may be reversed now of each succeeded row of a batch, in row order."""
        with self.reading() as conn:
            return [self._room(conn, ref) for ref in self._succeeded(conn, batch_id)]

    def is_reversal_batch(self, batch_id: str) -> bool:
        """Whether the batch's rows reverse other movements (a reversal batch)."""
        with self.reading() as conn:
            found = conn.execute(
                sa.select(transactions.c.id)
                .where(transactions.c.batch_id == batch_id, transactions.c.reverses.is_not(None))
                .limit(1)
            ).first()
            return found is not None

    def create_reversal_batch(
        self,
        *,
        batch_id: str,
        file_digest: str,
        original_batch: str,
        operator: str,
        reason: str,
        reference_for: Callable[[int], str],
        concurrency: int,
        session_id: str | None = None,
    ) -> tuple[BatchRecord, list[ReversalRoom]]:
        """One reversal batch for every succeeded row of ``original_batch``, in ONE transaction.

        Under each original's row lock, a row is reversed by what may be reversed now (its cap:
        partial when the card holds less, or part is already reversed); a row with nothing left
        to reverse is kept as a rejected row of the new batch with the reason, for its report.
        Each reversal row carries the original's row number and ``reverses`` its reference.
        Returns the batch (``QUEUED``; it starts once a second person approved it) and the rooms
        it was decided on. ``ReversalRefused`` (nothing written) when no row can be reversed.
        """
        now = datetime.now(UTC)
        with self.writing() as conn:
            rooms: list[ReversalRoom] = []
            rows, events, refused = [], [], []
            for reference in self._succeeded(conn, original_batch):
                room = self._room(conn, reference, lock=True)
                rooms.append(room)
                original = room.original
                number = original.row_number or len(rooms)
                if room.cap <= 0:
                    refused.append(
                        {
                            "batch_id": batch_id,
                            "row_number": number,
                            "row_values": json.dumps(
                                {
                                    "kind": _opposite(original.kind).value,
                                    "first_name": original.first_name or "",
                                    "card_id": original.card_id or "",
                                    "amount": str(original.amount),
                                    "reason": reason,
                                    "reverses": reference,
                                },
                                sort_keys=True,
                            ),
                            "problem": f"{reference} cannot be reversed: {room.why}",
                        }
                    )
                    continue
                reversal = Allocation(
                    reference=reference_for(number),
                    kind=_opposite(original.kind),
                    amount=room.cap,
                    card_id=original.card_id,
                    reason=reason,
                )
                values = _intent_values(
                    reversal,
                    operator=operator,
                    status=Status.QUEUED,
                    batch_id=batch_id,
                    row_number=number,
                    session_id=session_id,
                    approved_by=None,
                    now=now,
                )
                values["reverses"] = reference
                values["first_name"] = original.first_name
                rows.append(values)
                # The lock of the next original must see this row as on its way.
                conn.execute(transactions.insert().values(values))
                _tally_new(conn, [values])
                partial = f"; partial: {room.why}" if room.cap < room.left or room.why else ""
                events += [
                    _event(
                        reversal.reference,
                        now,
                        operator,
                        None,
                        Status.QUEUED,
                        f"reversal of {reference} in batch {batch_id}, recorded by {operator}: "
                        f"{reason}{partial}",
                        AuditKind.INTENT,
                    ),
                    _event(
                        reference,
                        now,
                        operator,
                        original.status,
                        original.status,
                        f"reversal {reversal.reference} of {room.cap} points asked by {operator} "
                        f"in batch {batch_id}",
                        AuditKind.NOTE,
                    ),
                ]
            if not rows:
                why = "; ".join(sorted({r.why for r in rooms if r.why})) or "it has no rows"
                raise ReversalRefused(
                    f"Nothing in batch {original_batch} can be reversed now: {why}."
                )
            debits = [v["amount_cents"] for v in rows if v["kind"] == Kind.DEBIT.value]
            credits = [v["amount_cents"] for v in rows if v["kind"] != Kind.DEBIT.value]
            conn.execute(
                batches.insert().values(
                    batch_id=batch_id,
                    file_name=f"Reversal of batch {original_batch}"[:255],
                    file_digest=file_digest,
                    operator=operator,
                    session_id=session_id,
                    state="queued",
                    concurrency=concurrency,
                    rate_limit=None,
                    row_count=len(rows),
                    credit_rows=len(credits),
                    credit_cents=sum(credits),
                    debit_rows=len(debits),
                    debit_cents=sum(debits),
                    created_at=now,
                    updated_at=now,
                    note=f"reverses batch {original_batch}, asked by {operator}: {reason}",
                )
            )
            if refused:
                conn.execute(batch_rejected_rows.insert(), refused)
            _audit(conn, events)
            found = conn.execute(sa.select(batches).where(batches.c.batch_id == batch_id))
            return batch_record(found.mappings().one()), rooms

    @staticmethod
    def _succeeded(conn: Connection, batch_id: str) -> list[str]:
        query = (
            sa.select(transactions.c.reference)
            .where(
                transactions.c.batch_id == batch_id,
                transactions.c.status == Status.SUCCEEDED.value,
            )
            .order_by(transactions.c.row_number, transactions.c.id)
        )
        return list(conn.execute(query).scalars())

    def _room(self, conn: Connection, reference: str, *, lock: bool = False) -> ReversalRoom:
        query = sa.select(transactions).where(transactions.c.reference == reference)
        if lock:
            query = query.with_for_update()  # PostgreSQL; SQLite already holds the write lock
        found = conn.execute(query).mappings().one_or_none()
        if found is None:
            raise UnknownReference(f"no transaction {reference}")
        original = ledger_row(found)
        already = from_cents(
            conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(transactions.c.amount_cents), 0)).where(
                    transactions.c.reverses == reference,
                    transactions.c.status.in_([s.value for s in _COUNTING]),
                )
            ).scalar_one()
        )
        assert already is not None
        left = max(original.amount - already, Decimal("0"))
        why = ""
        if original.reverses is not None:
            why, left = "a reversal cannot itself be reversed", Decimal("0")
        elif original.status is not Status.SUCCEEDED:
            why, left = "only a movement EnKash confirmed can be reversed", Decimal("0")
        elif not original.card_id:
            why, left = "the card of this movement is not known", Decimal("0")
        elif left <= 0:
            why = "it is already reversed in full"
        balance = None
        cap = left
        if not why and original.transaction_type == "CR":
            balance = self._spendable(conn, original.card_id)  # type: ignore[arg-type]
            if balance is not None and balance < cap:
                cap = max(balance, Decimal("0"))
                why = f"the card holds {balance} points now (the rest was spent or is on its way)"
        return ReversalRoom(original, already, left, balance, cap, why)

    @staticmethod
    def _spendable(conn: Connection, card_id: str) -> Decimal | None:
        """The card's known balance less the debits still in flight on it (None if unknown)."""
        latest = conn.execute(
            sa.select(transactions.c.balance_after_cents)
            .where(
                transactions.c.card_id == card_id,
                transactions.c.status == Status.SUCCEEDED.value,
            )
            .order_by(transactions.c.updated_at.desc(), transactions.c.id.desc())
            .limit(1)
        ).first()
        if latest is None or latest[0] is None:
            return None
        pending = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(transactions.c.amount_cents), 0)).where(
                transactions.c.card_id == card_id,
                transactions.c.kind == Kind.DEBIT.value,
                transactions.c.status.in_([s.value for s in _IN_FLIGHT]),
            )
        ).scalar_one()
        return from_cents(int(latest[0]) - int(pending))
