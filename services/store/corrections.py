"""Reversals in the ledger: the link between a movement and the movements that undo it, and the
caps that keep them within the original, the card and the programme, decided under locks.

``record_reversal`` takes its locks in the ledger's one order (``transactions.py``): the
original's row (``SELECT ... FOR UPDATE``), then the original's card (a transaction-scoped
advisory lock per card on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already holds the one write
lock), then, for a reversal that credits the card, its programme's row (the reservation). Under
them it adds up what is already reversed or on its way (every reversal not ``FAILED``), checks the
new amount against what is left and, for a credit, against the card's known balance less the
debits still in flight on it, and writes the reversal's intent and its approval request in the
same transaction. Two people reversing the same credit at once are serialised by the original's
lock, two reversing different credits of one card by the card's: the second sees the first's row.

A reversal belongs to its original's programme, like any movement in it:

* reversing a credit (or a new account's first credit) debits the card, and the programme gets
  back what it reverses once EnKash confirms it (its ``returned`` counter, as for any debit);
* reversing a debit credits the card again from the programme, so it is a credit of that
  programme: its intent reserves the points in the same statement that checks the budget, and it
  is refused (nothing written) when the programme is closed, ended or not started, or its
  remaining budget cannot cover it. The room says how much still fits and why not more. A
  rejected or failed reversal gives its reservation back, as any credit does.

The reservation is made when the reversal is asked for, not when it is approved, as a credit
held for approval reserves its points when it is held (what approving either does once their
programme has closed meanwhile is ``services/approvals.py``'s rule: it reads the row's programme).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from services.errors import Conflict
from services.models import Allocation, ApprovalStatus, AuditKind, Kind, Status
from services.numbers import figure
from services.store.engine import Database, from_cents, to_cents
from services.store.programmes import (
    BudgetExceeded,
    ProgrammeClosed,
    programme_record,
    reserve_rows,
    today_ist,
)
from services.store.records import (
    BatchRecord,
    DuplicateReference,
    LedgerRow,
    UnknownReference,
    batch_record,
    ledger_row,
)
from services.store.schema import approvals, batch_rejected_rows, batches, programmes, transactions
from services.store.transactions import (
    _audit,
    _event,
    _intent_values,
    _tally_new,
    write_again_if_rolled_back,
)

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
    programme_id: int | None = None  # the original's programme: the reversal's too


class ReversalRefused(Conflict):
    """A reversal that cannot be recorded (too large, not reversible); nothing was written."""

    def __init__(self, message: str, room: ReversalRoom | None = None):
        super().__init__(message)
        self.room = room


def _opposite(kind: Kind) -> Kind:
    return Kind.CREDIT if kind is Kind.DEBIT else Kind.DEBIT


def _card_key(schema: str | None, card_id: str) -> int:
    """The advisory lock key of a card (64 bits of a hash of the ledger's schema and the card
    id): only reversals take it, so a collision costs a wait, never a wrong answer."""
    digest = hashlib.blake2b(
        f"points-desk card {schema or ''} {card_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _credits_again(values: dict[str, Any]) -> bool:
    """Whether a reversal row credits its card from its programme (it reverses a debit)."""
    return values["transaction_type"] == "CR" and values["programme_id"] is not None


def _take(taken: dict[int, int], room: ReversalRoom) -> None:
    """Count what a reversal of ``room`` credits its programme (it reverses a debit) in
    ``taken``: the next rows of the same batch share what the programme has left."""
    if room.original.transaction_type == "DR" and room.programme_id is not None and room.cap > 0:
        taken[room.programme_id] = taken.get(room.programme_id, 0) + to_cents(room.cap)


def _reserve(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Reserve the programme budget of the reversal rows that credit their card, all or none
    (each programme once, in id order: the lock order), and count them in their makers' months
    where the programme has a monthly operator limit (a reversal always has a second person's
    approval, so the limit does not hold it up; it still counts)."""
    totals: dict[int, int] = {}
    for values in rows:
        if _credits_again(values):
            pid = values["programme_id"]
            totals[pid] = totals.get(pid, 0) + values["amount_cents"]
    try:
        reserve_rows(conn, rows, totals)
    except (BudgetExceeded, ProgrammeClosed) as refused:
        raise ReversalRefused(
            f"{refused} Reversing a debit credits the card again from its programme."
        ) from None


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
        """Write a reversal's intent (``QUEUED``, linked by ``reverses``, in its original's
        programme) and, when ``approval``, its pending approval request, in one transaction under
        the original's row lock and its card's lock. A reversal that credits the card (of a
        debit) reserves its programme's budget in the same transaction.

        ``ReversalRefused`` (nothing written) when the amount is above what may be reversed: more
        than is left of the original, than the card holds (a credit's reversal), than the
        programme has left, or the programme takes no credits (a debit's reversal).
        ``DuplicateReference`` (nothing written) when the reversal's reference is in the ledger.
        """
        now = datetime.now(UTC)

        def write() -> LedgerRow:
            with self.writing() as conn:
                return self._record_reversal(
                    conn, reference, reversal, maker, request, batch_id, row_number, approval, now
                )

        try:
            return write_again_if_rolled_back(f"the reversal {reversal.reference}", write)
        except IntegrityError:
            # Its reference is in the ledger already (a double click that raced the first).
            if self._exists(reversal.reference):
                raise DuplicateReference(reversal.reference) from None
            raise

    def _record_reversal(
        self,
        conn: Connection,
        reference: str,
        reversal: Allocation,
        maker: str,
        request: dict | None,
        batch_id: str | None,
        row_number: int | None,
        approval: bool,
        now: datetime,
    ) -> LedgerRow:
        room = self._room(conn, reference, lock=True)
        taken = sa.select(transactions.c.id).where(transactions.c.reference == reversal.reference)
        if conn.execute(taken).first() is not None:
            # A double click whose first request got the locks first: a replay, not a refusal
            # (the room it left may be nothing).
            raise DuplicateReference(reversal.reference)
        if room.why and room.cap <= 0:
            raise ReversalRefused(room.why, room)
        if reversal.amount > room.cap:
            raise ReversalRefused(
                f"At most {room.cap} points of {reference} can be reversed now"
                + (f": {room.why}" if room.why else ""),
                room,
            )
        values = _reversal_values(
            reversal, reference, room, operator=maker, batch_id=batch_id, number=row_number, now=now
        )
        conn.execute(transactions.insert().values(values))
        _reserve(conn, [values])
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
        """What may be reversed now of each succeeded row of a batch, in row order (the rows
        that credit a programme again share what it has left, in row order)."""
        with self.reading() as conn:
            taken: dict[int, int] = {}
            rooms = []
            for reference in self._succeeded(conn, batch_id, lock=False):
                rooms.append(room := self._room(conn, reference, taken=taken))
                _take(taken, room)
            return rooms

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

        Under the originals' row locks (in reference order) and their cards' locks (in card
        order), a row is reversed by what may be reversed now (its cap: partial when the card
        holds less, part is already reversed, or, for a debit reversed by a credit, its
        programme has less left, shared by the batch's rows in row order); a row with nothing
        left to reverse (or whose programme takes no credits) is kept as a rejected row of the
        new batch with the reason, for its report. Each reversal row carries the original's row
        number, programme and ``reverses`` its reference; the rows that credit a card reserve
        their programme's budget, all or none. Returns the batch (``QUEUED``; it starts once a
        second person approved it) and the rooms it was decided on. ``ReversalRefused`` (nothing
        written) when no row can be reversed.
        """
        now = datetime.now(UTC)

        def write() -> tuple[BatchRecord, list[ReversalRoom]]:
            with self.writing() as conn:
                return self._create_reversal_batch(
                    conn,
                    batch_id=batch_id,
                    file_digest=file_digest,
                    original_batch=original_batch,
                    operator=operator,
                    reason=reason,
                    reference_for=reference_for,
                    concurrency=concurrency,
                    session_id=session_id,
                    now=now,
                )

        return write_again_if_rolled_back(f"the reversal batch {batch_id}", write)

    def _create_reversal_batch(
        self,
        conn: Connection,
        *,
        batch_id: str,
        file_digest: str,
        original_batch: str,
        operator: str,
        reason: str,
        reference_for: Callable[[int], str],
        concurrency: int,
        session_id: str | None,
        now: datetime,
    ) -> tuple[BatchRecord, list[ReversalRoom]]:
        originals = self._succeeded(conn, original_batch, lock=True)
        rooms: list[ReversalRoom] = []
        rows, events, refused = [], [], []
        taken: dict[int, int] = {}  # cents this batch credits again, per programme
        for reference in originals:
            room = self._room(conn, reference, lock=True, taken=taken)
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
            values = _reversal_values(
                reversal,
                reference,
                room,
                operator=operator,
                batch_id=batch_id,
                number=number,
                now=now,
                session_id=session_id,
            )
            values["first_name"] = original.first_name
            rows.append(values)
            _take(taken, room)
            # The room of the next original (of the same card) must see this row as on its way.
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
            raise ReversalRefused(f"Nothing in batch {original_batch} can be reversed now: {why}.")
        # Every row is in: now the programmes, each once, in id order (the lock order).
        _reserve(conn, rows)
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

    def _succeeded(self, conn: Connection, batch_id: str, *, lock: bool) -> list[str]:
        """The references of a batch's succeeded rows, in row order. With ``lock`` they are
        locked first, in reference order, then their cards, in card order (the lock order), so
        a reversal of one of them (or of another movement of those cards) waits for this one."""
        t = transactions.c
        query = sa.select(t.reference, t.row_number, t.id, t.card_id).where(
            t.batch_id == batch_id, t.status == Status.SUCCEEDED.value
        )
        if lock:
            query = query.order_by(t.reference).with_for_update()
        found = conn.execute(query).all()
        if lock:
            self._lock_cards(conn, (row.card_id for row in found))
        found.sort(key=lambda row: (row.row_number is None, row.row_number or 0, row.id))
        return [row.reference for row in found]

    def _lock_cards(self, conn: Connection, card_ids: Iterable[str | None]) -> None:
        """Lock cards until the transaction ends, in card order (PostgreSQL: an advisory lock
        per card; SQLite's write transaction already holds the whole database). Only reversals
        take them: what one reversal may take from a card depends on the others."""
        if conn.dialect.name != "postgresql":
            return
        for card_id in sorted({card for card in card_ids if card}):
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_card_key(self.schema, card_id))))

    def _exists(self, reference: str) -> bool:
        with self.reading() as conn:
            found = conn.execute(
                sa.select(transactions.c.id).where(transactions.c.reference == reference)
            ).first()
            return found is not None

    def _room(
        self,
        conn: Connection,
        reference: str,
        *,
        lock: bool = False,
        taken: dict[int, int] | None = None,
    ) -> ReversalRoom:
        """What may be reversed of ``reference`` now. With ``lock`` the original's row and then
        its card are locked first (the lock order). ``taken``: cents other reversals of this
        transaction credit per programme, not yet reserved (a batch's earlier rows)."""
        query = sa.select(transactions).where(transactions.c.reference == reference)
        if lock:
            query = query.with_for_update()  # PostgreSQL; SQLite already holds the write lock
        found = conn.execute(query).mappings().one_or_none()
        if found is None:
            raise UnknownReference(f"no transaction {reference}")
        original = ledger_row(found)
        programme_id = found["programme_id"]
        if lock:
            self._lock_cards(conn, [original.card_id])
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
        elif not why and programme_id is not None:
            spoken_for = (taken or {}).get(programme_id, 0)
            cap, why = self._programme_cap(conn, programme_id, cap, spoken_for)
        return ReversalRoom(original, already, left, balance, cap, why, programme_id)

    @staticmethod
    def _programme_cap(
        conn: Connection, programme_id: int, cap: Decimal, spoken_for: int
    ) -> tuple[Decimal, str]:
        """The most a reversal of a debit may credit from its programme (which takes no credits
        once closed, ended or before it starts, and no more than its remaining budget less
        ``spoken_for`` cents), and why, when that is less than ``cap``."""
        found = (
            conn.execute(sa.select(programmes).where(programmes.c.id == programme_id))
            .mappings()
            .one_or_none()
        )
        if found is None:
            return cap, ""
        programme = programme_record(found)
        again = f"reversing this debit credits the card from {programme.name} again"
        closed = programme.why_closed(today_ist())
        if closed is not None:
            return Decimal("0"), f"{again}, and {closed}"
        if programme.remaining is None:
            return cap, ""
        remaining = programme.remaining - from_cents(spoken_for)  # type: ignore[operator]
        if remaining >= cap:
            return cap, ""
        remaining = max(remaining, Decimal("0"))
        return remaining, f"{again}, and it has {figure(remaining)} points of its budget left"

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


def _reversal_values(
    reversal: Allocation,
    reverses: str,
    room: ReversalRoom,
    *,
    operator: str,
    batch_id: str | None,
    number: int | None,
    now: datetime,
    session_id: str | None = None,
) -> dict[str, Any]:
    """The row of a reversal waiting for approval: it names what it reverses and counts in that
    original's programme."""
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
    values["reverses"] = reverses
    values["programme_id"] = room.programme_id
    return values
