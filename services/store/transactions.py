"""Transactions: intents, claims, status transitions, their audit trail, recovery of calls left
in flight, and the lookups of rows and their audit events (employees: ``employees.py``).

Statuses only move forward (see ``ALLOWED_TRANSITIONS``); a move is a compare-and-set in the
database, so two workers (threads, processes or replicas sharing one PostgreSQL) can never both
claim the same row. Every change appends an audit event (with its ``AuditKind``) in the same
transaction as the change, through the one write helper.

**The lock order.** On PostgreSQL every write transaction of the ledger takes its row locks in
this one order, so no two of them can each hold what the other waits for (a deadlock); SQLite's
``BEGIN IMMEDIATE`` holds the whole database and needs none:

1. a schedule's row, then a batch's row (``schedules.py``, ``batches.py``);
2. ``transactions`` rows: each row the transaction moves (its compare-and-set UPDATE), locks
   (``FOR UPDATE``: the original of a reversal or a correction) or inserts; several in reference
   order where they are locked together. A new row's unique reference waits only for another
   transaction inserting or moving the same reference, so an intent is INSERTed before its
   reservation: a repeat of a reference whose outcome is being written waits for that outcome
   holding nothing, then replays it;
3. a card (reversals only: a transaction-scoped advisory lock per card id, in card order,
   ``corrections.py``), so reversals from one card are decided one at a time;
4. ``programmes`` rows, in id order: a reservation (the budget check) and the counters a status
   move changes (a group commit moves them after all its rows, in programme order);
5. ``operator_months`` counters, in key order (``programmes.py``);
6. the summaries, last, in key order (``summaries.flush`` just before the commit).

A write that PostgreSQL rolls back on its own anyway (a deadlock with a path outside this order,
a serialization failure) is written again from the start, a few times: an intent or a confirmed
outcome is never lost to it, nor kept only in part. Each such retry is logged as a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from services.models import Allocation, AllocationResult, AuditKind, Status
from services.redact import redact
from services.store import summaries
from services.store.engine import Database, to_cents
from services.store.exchanges import insert_exchanges
from services.store.programmes import (
    IN_FLIGHT,
    apply_move,
    count_operator_months,
    programme_id_for,
    rebuild_operator_months,
    release_operator_months,
    reserve,
    reserve_rows,
)
from services.store.records import (
    AuditEvent,
    DuplicateReference,
    LedgerRow,
    StatusConflict,
    UnknownReference,
    audit_event,
    ledger_row,
)
from services.store.schema import (
    GENERAL_CODE,
    audit_events,
    batches,
    programmes,
    transactions,
    workers,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: A worker whose heartbeat is older than this is taken for dead (its SENDING rows get settled).
WORKER_STALE_AFTER = timedelta(seconds=30)

#: Every move a row may make. Anything else (a SUCCEEDED row going back, a FAILED row resent) is a
#: ``StatusConflict``: corrections are new transactions, never rewrites.
ALLOWED_TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.QUEUED, Status.SENDING),
        (Status.QUEUED, Status.FAILED),  # cancelled or rejected before anything was sent
        (Status.SENDING, Status.SUCCEEDED),
        (Status.SENDING, Status.FAILED),
        (Status.SENDING, Status.UNKNOWN),
        (Status.UNKNOWN, Status.SUCCEEDED),  # settled by lookup
        (Status.UNKNOWN, Status.FAILED),
        (Status.UNKNOWN, Status.SENDING),  # resend, same reference, after a lookup proved absence
    }
)


_AUDIT_INSERT = audit_events.insert()  # built once, run with the events as parameters

#: PostgreSQL errors after which the server has already rolled the whole transaction back, so
#: writing it again from the start cannot write anything twice (SQLSTATE -> what it was).
_ROLLED_BACK = {"40P01": "a deadlock", "40001": "a serialization failure"}

#: How many times such a write is written again before its error is raised.
WRITE_RETRIES = 4


def rolled_back_by_server(error: BaseException) -> str | None:
    """What made PostgreSQL roll a transaction back on its own (a deadlock, a serialization
    failure), or ``None`` for any other error (which may have left anything in any state)."""
    if not isinstance(error, OperationalError):
        return None
    return _ROLLED_BACK.get(getattr(error.orig, "sqlstate", None) or "")


def write_again_if_rolled_back(what: str, write: Callable[[], _T]) -> _T:
    """``write()`` (one whole write transaction), written again from the start when PostgreSQL
    rolled it back on its own (``rolled_back_by_server``), up to ``WRITE_RETRIES`` times; every
    other error is raised at once. ``what`` names it in the warning each retry logs: a retry is
    safe, but it means some path took its locks out of the module's order."""
    for attempt in range(WRITE_RETRIES + 1):
        try:
            return write()
        except OperationalError as error:
            why = rolled_back_by_server(error)
            if why is None or attempt == WRITE_RETRIES:
                raise
            log.warning("%s was rolled back by %s; writing it again", what, why)
    raise AssertionError("unreachable")  # the loop returns or raises


def _audit(conn: Connection, events: list[dict[str, Any]]) -> None:
    """Append audit events: the only write to ``audit_events``, besides a sandbox reset."""
    if events:
        conn.execute(_AUDIT_INSERT, events)


def _event(
    reference: str,
    at: datetime,
    actor: str,
    before: Status | None,
    after: Status,
    detail: str,
    kind: AuditKind,
) -> dict[str, Any]:
    return {
        "event": AuditKind(kind).value,
        "reference": reference,
        "at": at,
        "actor": actor,
        "from_status": before.value if before else None,
        "to_status": after.value,
        "detail": redact(detail),  # may quote EnKash, which may echo a secret back
    }


def _append_note(
    conn: Connection, reference: str, actor: str, status: Status, detail: str, kind: AuditKind
) -> AuditEvent:
    """Append an event that leaves ``status`` as it is; return it as stored."""
    _audit(conn, [_event(reference, datetime.now(UTC), actor, status, status, detail, kind)])
    latest = conn.execute(
        sa.select(audit_events)
        .where(audit_events.c.reference == reference)
        .order_by(audit_events.c.id.desc())
        .limit(1)
    )
    return audit_event(latest.mappings().one())


def _tally_new(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
    """Count newly inserted ``transactions`` rows in the daily totals (same transaction)."""
    for row in rows:
        summaries.count(
            conn,
            row["created_at"],
            row["kind"],
            row["status"],
            row["operator"],
            row["amount_cents"],
            programme_id=row["programme_id"],
        )


def _batch_rows(
    allocations: Sequence[tuple[Allocation, int]],
    *,
    operator: str,
    status: Status,
    batch_id: str,
    session_id: str | None,
    approved_by: str | None,
    now: datetime,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``transactions`` rows of a batch and their first audit events ("queued by ...")."""
    rows = [
        _intent_values(
            allocation,
            operator=operator,
            status=status,
            batch_id=batch_id,
            row_number=number,
            session_id=session_id,
            approved_by=approved_by,
            now=now,
        )
        for allocation, number in allocations
    ]
    events = [
        _event(
            values["reference"],
            now,
            operator,
            None,
            status,
            f"queued by {operator} (batch {batch_id} row {values['row_number']})",
            AuditKind.INTENT,
        )
        for values in rows
    ]
    return rows, events


def _intent_values(
    allocation: Allocation,
    *,
    operator: str,
    status: Status,
    batch_id: str | None,
    row_number: int | None,
    session_id: str | None,
    approved_by: str | None,
    now: datetime,
) -> dict[str, Any]:
    employee = allocation.employee
    return {
        "reference": allocation.reference,
        "kind": allocation.kind.value,
        "transaction_type": allocation.kind.transaction_type,
        "status": status.value,
        "amount_cents": to_cents(allocation.amount),
        "email": employee.email if employee else None,
        "mobile": employee.mobile if employee else None,
        "title": employee.title.value if employee else None,
        "first_name": employee.first_name if employee else None,
        "gender": employee.gender.value if employee else None,
        "card_id": allocation.card_id,
        "transaction_id": None,
        "balance_after_cents": None,
        "enkash_code": None,
        "enkash_message": None,
        "operator": operator,
        "reason": allocation.reason or "",
        "batch_id": batch_id,
        "row_number": row_number,
        "session_id": session_id,
        # The intent of a direct send is its first attempt; a queued row has not been tried yet.
        "attempts": 1 if status is Status.SENDING else 0,
        "approved_by": approved_by,
        "created_at": now,
        "updated_at": now,
        "programme_id": None,  # resolved from ``allocation.programme`` inside the write
    }


def _assign_programmes(
    conn: Connection, rows: list[dict[str, Any]], codes: Sequence[str | None]
) -> dict[int, int]:
    """Set each row's ``programme_id`` (``UnknownProgramme`` if a code names none); returns the
    credit total per programme, for ``reserve_many`` once the rows are inserted."""
    ids: dict[str | None, int] = {}
    totals: dict[int, int] = {}
    for values, code in zip(rows, codes, strict=True):
        if code not in ids:
            ids[code] = programme_id_for(conn, code)
        values["programme_id"] = ids[code]
        if values["transaction_type"] == "CR":
            totals[ids[code]] = totals.get(ids[code], 0) + values["amount_cents"]
    return totals


_ORDERS = {
    "created_at": (transactions.c.created_at.asc(), transactions.c.id.asc()),
    "-created_at": (transactions.c.created_at.desc(), transactions.c.id.desc()),
    "updated_at": (transactions.c.updated_at.asc(), transactions.c.id.asc()),
    "-updated_at": (transactions.c.updated_at.desc(), transactions.c.id.desc()),
    "row_number": (transactions.c.batch_id.asc(), transactions.c.row_number.asc()),
}


@dataclass
class Move:
    """One status move for ``transition`` / ``transition_many``."""

    reference: str
    to_status: Status
    actor: str
    from_statuses: tuple[Status, ...]
    detail: str = ""
    result: AllocationResult | None = None
    enkash_code: str | None = None
    enkash_message: str | None = None
    kind: AuditKind | None = None  # the audit event's kind; by default from the move itself
    before: Status | None = None  # set once it moved: the status it left
    #: Calls to EnKash made for this move (``exchange_values`` fields): kept in the same
    #: transaction, if and only if the move is made.
    exchanges: tuple[Mapping[str, Any], ...] = ()
    row: LedgerRow | None = None  # set once it moved: the row as the move left it

    @property
    def audit_kind(self) -> AuditKind:
        """The kind its audit event records (only meaningful once it moved)."""
        if self.kind is not None:
            return self.kind
        assert self.before is not None
        return _move_kind(self.before, self.to_status)

    def values(self) -> dict[str, Any]:
        """The columns it sets besides the status; raises if the move itself is not allowed."""
        _check_allowed(self.from_statuses, self.to_status)
        result = self.result
        if result is not None and result.reference != self.reference:
            # A reply for another reference must never mark this one settled.
            raise ValueError(f"result is for {result.reference}, not {self.reference}")
        extra: dict[str, Any] = {}
        if result is not None:
            extra["card_id"] = result.card_id
            extra["transaction_id"] = result.transaction_id
            if result.balance_after is not None:
                extra["balance_after_cents"] = to_cents(result.balance_after)
        # EnKash's own words may echo a request back, secrets and all: never stored as they came.
        if self.enkash_code is not None:
            extra["enkash_code"] = redact(self.enkash_code)
        if self.enkash_message is not None:
            extra["enkash_message"] = redact(self.enkash_message)
        return extra


class TransactionStore(Database):
    """Rows of ``transactions`` and ``audit_events``: every write commits with its audit event."""

    def record_intent(
        self,
        allocation: Allocation,
        *,
        operator: str,
        status: Status = Status.SENDING,
        batch_id: str | None = None,
        row_number: int | None = None,
        session_id: str | None = None,
        approved_by: str | None = None,
        within_operator_limit: bool = False,
    ) -> LedgerRow:
        """Commit one intent (and its first audit event) before anything is sent.

        ``DuplicateReference`` if the reference is already in the ledger; nothing is written.
        ``within_operator_limit``: a credit that would take ``operator`` past the programme's
        monthly operator limit is refused (``OperatorLimitReached``, nothing written), checked
        and counted in one statement in this transaction.
        """
        if status not in (Status.SENDING, Status.QUEUED):
            raise ValueError("an intent starts as SENDING (sent now) or QUEUED (a batch row)")
        now = datetime.now(UTC)
        values = _intent_values(
            allocation,
            operator=operator,
            status=status,
            batch_id=batch_id,
            row_number=row_number,
            session_id=session_id,
            approved_by=approved_by,
            now=now,
        )
        if status is Status.SENDING:
            values["claimed_by"] = self.worker_id
        detail = f"intent recorded by {operator}" + (
            f" (batch {batch_id} row {row_number})" if batch_id else ""
        )
        event = _event(allocation.reference, now, operator, None, status, detail, AuditKind.INTENT)

        def write() -> LedgerRow:
            with self.writing() as conn:
                # The row first, then its programme's lock (the module's lock order): a repeat
                # of this reference waits here for the first one's transaction (its intent, or
                # its outcome being written), holding nothing, and is then a replay.
                pid = self._insert_intent(conn, values, allocation.programme)
                if values["transaction_type"] == "CR":
                    # The check and the reservation are one statement; a refusal
                    # (BudgetExceeded, ProgrammeClosed) rolls the intent back.
                    limit = reserve(conn, pid, values["amount_cents"])
                    count_operator_months(
                        conn,
                        [values],
                        {pid: limit},
                        within_operator_limit=within_operator_limit,
                    )
                _tally_new(conn, [values])
                _audit(conn, [event])
                return self._fetch(conn, allocation.reference)

        try:
            return write_again_if_rolled_back(f"the intent of {allocation.reference}", write)
        except IntegrityError:
            # The unique constraint is the arbiter (two tabs inserting at once cannot both win).
            if self.get(allocation.reference) is not None:
                raise DuplicateReference(allocation.reference) from None
            if batch_id is not None:
                raise DuplicateReference(
                    allocation.reference, f"batch {batch_id} row {row_number} is already recorded"
                ) from None
            raise

    @staticmethod
    def _insert_intent(conn: Connection, values: dict[str, Any], code: str | None) -> int:
        """INSERT one intent row with the id of the programme with ``code`` (``None``: General)
        looked up in the same statement; sets ``values["programme_id"]`` and returns it.
        ``UnknownProgramme`` if no programme has the code (General is made again if a sandbox
        reset removed it)."""
        wanted = (code or GENERAL_CODE).strip().upper()
        lookup = sa.select(programmes.c.id).where(programmes.c.code == wanted).scalar_subquery()
        pid = conn.execute(
            transactions.insert()
            .values({**values, "programme_id": lookup})
            .returning(transactions.c.programme_id)
        ).scalar_one()
        if pid is None:
            pid = programme_id_for(conn, wanted)
            conn.execute(
                transactions.update()
                .where(transactions.c.reference == values["reference"])
                .values(programme_id=pid)
            )
        values["programme_id"] = int(pid)
        return int(pid)

    def record_intents(
        self,
        allocations: list[tuple[Allocation, int]],
        *,
        operator: str,
        batch_id: str,
        status: Status = Status.QUEUED,
        session_id: str | None = None,
        approved_by: str | None = None,
    ) -> int:
        """Queue a whole batch in one transaction: every row or none; returns the row count.

        ``allocations`` is ``[(allocation, row_number), ...]``. ``DuplicateReference`` (listing the
        references) if any reference is repeated or already in the ledger; nothing is written.
        """
        if status not in (Status.SENDING, Status.QUEUED):
            raise ValueError("an intent starts as SENDING or QUEUED")
        if not allocations:
            return 0
        references = [allocation.reference for allocation, _ in allocations]
        repeated = _repeats(references)
        if repeated:
            raise DuplicateReference(repeated)
        numbers = _repeats(str(number) for _, number in allocations)
        if numbers:
            raise DuplicateReference(
                [], f"batch {batch_id} repeats row numbers: {', '.join(numbers[:5])}"
            )
        rows, events = _batch_rows(
            allocations,
            operator=operator,
            status=status,
            batch_id=batch_id,
            session_id=session_id,
            approved_by=approved_by,
            now=datetime.now(UTC),
        )
        try:
            with self.writing() as conn:
                credits = _assign_programmes(conn, rows, [a.programme for a, _ in allocations])
                # executemany: one statement, many parameter sets; 50k rows take seconds.
                conn.execute(transactions.insert(), rows)
                reserve_rows(conn, rows, credits)
                _tally_new(conn, rows)
                _audit(conn, events)
        except IntegrityError:
            existing = self._existing(references)
            if existing:
                raise DuplicateReference(existing) from None
            raise DuplicateReference(
                [], f"batch {batch_id} already has some of these row numbers"
            ) from None
        return len(rows)

    def claim(
        self,
        reference: str,
        *,
        actor: str,
        from_statuses: tuple[Status, ...] = (Status.QUEUED,),
        to_status: Status = Status.SENDING,
    ) -> bool:
        """Atomically move a row from one of ``from_statuses`` to ``to_status``.

        ``True`` iff this caller moved it; of any number of racing callers exactly one wins.
        ``StatusConflict`` if a move asked for is not an allowed transition.
        """
        _check_allowed(from_statuses, to_status)
        kind = AuditKind.CLAIM if to_status is Status.SENDING else AuditKind.OUTCOME
        with self.writing() as conn:
            before = self._cas(conn, reference, from_statuses, to_status)
            if before is None:
                return False
            detail = "claimed for sending" if to_status is Status.SENDING else "claimed"
            _audit(
                conn,
                [_event(reference, datetime.now(UTC), actor, before, to_status, detail, kind)],
            )
            return True

    def transition(
        self,
        reference: str,
        to_status: Status,
        *,
        actor: str,
        from_statuses: tuple[Status, ...],
        detail: str = "",
        result: AllocationResult | None = None,
        enkash_code: str | None = None,
        enkash_message: str | None = None,
        kind: AuditKind | None = None,
        exchanges: Sequence[Mapping[str, Any]] = (),
    ) -> LedgerRow:
        """Compare-and-set a row's status and record what EnKash said; returns the new row.

        ``result`` sets the card id, EnKash transaction id and balance after. ``StatusConflict`` if
        a move asked for is not allowed or the row is not in ``from_statuses`` (it is then left
        untouched); ``UnknownReference`` (also a ``StatusConflict``) if there is no such row.
        ``kind`` is the audit event's kind; by default ``CANCELLED`` for a queued row that fails
        unsent, ``CLAIM`` for a move to ``SENDING`` and ``OUTCOME`` otherwise. ``exchanges``:
        the calls to EnKash that led to this move, kept with it (not kept when it raises).
        """
        move = Move(
            reference,
            to_status,
            actor=actor,
            from_statuses=from_statuses,
            detail=detail,
            result=result,
            enkash_code=enkash_code,
            enkash_message=enkash_message,
            kind=kind,
            exchanges=tuple(exchanges),
        )
        extra = move.values()

        def write() -> LedgerRow:
            with self.writing() as conn:
                conflict = self._move(conn, move, extra, datetime.now(UTC))
                if conflict is not None:
                    raise conflict
                insert_exchanges(conn, move.exchanges)
                assert move.row is not None  # it moved
                return move.row

        # A confirmed outcome is written whole: a deadlock or serialization failure rolled all
        # of it back, so it is written again, not cut down by the caller's fallbacks.
        return write_again_if_rolled_back(f"the move of {reference} to {to_status.value}", write)

    def transition_many(self, moves: list[Move]) -> list[LedgerRow | StatusConflict]:
        """Several ``transition`` calls committed in one transaction (a group commit).

        Returns, in order, each move's new row, or the ``StatusConflict`` it met (that move
        changed nothing and its ``exchanges`` are not kept; the others still commit). A move that
        is not allowed or carries a result for another reference raises before anything is
        written. Any other error (the database refused a value, lost its connection) rolls the
        whole group back and raises: nothing of it is written, and each move can be retried on
        its own with ``transition``. (A group PostgreSQL rolled back on its own, a deadlock or a
        serialization failure, is first written again whole: ``write_again_if_rolled_back``.)
        """
        if not moves:
            return []
        values = [move.values() for move in moves]
        # The rows in reference order, then every programme counter they move in programme
        # order (the module's lock order): two groups at once cannot deadlock on them.
        order = sorted(range(len(moves)), key=lambda i: moves[i].reference)
        return write_again_if_rolled_back(
            f"a group of {len(moves)} moves", lambda: self._move_many(moves, values, order)
        )

    def _move_many(
        self, moves: list[Move], values: list[dict[str, Any]], order: list[int]
    ) -> list[LedgerRow | StatusConflict]:
        now = datetime.now(UTC)
        outcomes: list[LedgerRow | StatusConflict | None] = [None] * len(moves)
        with self.writing() as conn:
            counted: list[tuple[Any, Status, Status]] = []
            for i in order:
                outcomes[i] = self._move(
                    conn, moves[i], values[i], now, audit=False, counted=counted
                )
            _apply_counted(conn, counted)
            _audit(
                conn,
                [
                    _event(m.reference, now, m.actor, m.before, m.to_status, m.detail, m.audit_kind)
                    for m, o in zip(moves, outcomes, strict=True)
                    if o is None
                ],
            )
            insert_exchanges(
                conn,
                [
                    kept
                    for m, o in zip(moves, outcomes, strict=True)
                    if o is None
                    for kept in m.exchanges
                ],
            )
        # Each moved row as its UPDATE returned it: no second read.
        return [
            o if o is not None else m.row  # type: ignore[misc]  # a moved move has its row
            for m, o in zip(moves, outcomes, strict=True)
        ]

    def _move(
        self,
        conn: Connection,
        move: Move,
        extra: dict[str, Any],
        now: datetime,
        *,
        audit: bool = True,
        counted: list[tuple[Any, Status, Status]] | None = None,
    ) -> StatusConflict | None:
        """One move inside a write transaction: ``None`` when it moved (``move.before`` says
        from which status), else the conflict (nothing written). ``counted``: see ``_cas_row``."""
        moved = self._cas_row(
            conn, move.reference, move.from_statuses, move.to_status, extra, now, counted
        )
        move.before, move.row = moved if moved is not None else (None, None)
        if move.before is None:
            current = self._status(conn, move.reference)
            if current is None:
                return UnknownReference(f"no ledger row with reference {move.reference}")
            return StatusConflict(
                f"{move.reference} is {current.value}, not "
                f"{' or '.join(s.value for s in move.from_statuses)}; it was not moved to "
                f"{move.to_status.value}"
            )
        if audit:
            _audit(
                conn,
                [
                    _event(
                        move.reference,
                        now,
                        move.actor,
                        move.before,
                        move.to_status,
                        move.detail,
                        move.audit_kind,
                    )
                ],
            )
        return None

    def set_approved_by(
        self,
        approver: str,
        *,
        reference: str | None = None,
        batch_id: str | None = None,
        detail: str = "",
    ) -> int:
        """Record the second person who approved a row (or every row of a batch).

        Only rows with no approver yet change; each gets an audit event (actor: the approver) in
        the same transaction. Returns how many rows changed. Status is untouched.
        """
        if (reference is None) == (batch_id is None):
            raise ValueError("give a reference or a batch_id")
        t = transactions
        where = t.c.reference == reference if reference is not None else t.c.batch_id == batch_id
        now = datetime.now(UTC)
        with self.writing() as conn:
            found = conn.execute(
                sa.select(t.c.reference, t.c.status).where(where, t.c.approved_by.is_(None))
            ).all()
            if not found:
                return 0
            conn.execute(
                t.update()
                .where(where, t.c.approved_by.is_(None))
                .values(approved_by=approver, updated_at=now)
            )
            text = detail or f"approved by {approver}"
            _audit(
                conn,
                [
                    _event(ref, now, approver, Status(st), Status(st), text, AuditKind.APPROVED)
                    for ref, st in found
                ],
            )
            return len(found)

    def note(
        self, reference: str, *, actor: str, detail: str, kind: AuditKind = AuditKind.NOTE
    ) -> AuditEvent:
        """Append an audit event that changes nothing (e.g. a lookup's verdict, as ``kind``)."""
        with self.writing() as conn:
            current = self._status(conn, reference)
            if current is None:
                raise UnknownReference(f"no ledger row with reference {reference}")
            return _append_note(conn, reference, actor, current, detail, kind)

    def redate(self, when_of: Mapping[str, datetime]) -> None:
        """Move rows (and their audit events, by the same amount) to the given creation times.

        SANDBOX ONLY: demo data is sent now and then spread over past months.
        """
        t = transactions
        references = list(when_of)
        now = datetime.now(UTC)
        with self.writing() as conn:
            moved: list[dict[str, Any]] = []
            shifts: dict[str, timedelta] = {}
            cards: set[str] = set()
            for start in range(0, len(references), 500):
                chunk = references[start : start + 500]
                for found in conn.execute(
                    sa.select(
                        t.c.reference,
                        t.c.created_at,
                        t.c.updated_at,
                        t.c.kind,
                        t.c.status,
                        t.c.operator,
                        t.c.amount_cents,
                        t.c.card_id,
                        t.c.programme_id,
                    ).where(t.c.reference.in_(chunk))
                ):
                    cards.add(found.card_id)
                    reference, created, updated = found[:3]
                    shift = when_of[reference] - created
                    # The row leaves its old IST day in the daily totals for its new one.
                    for moment, sign in ((created, -1), (created + shift, 1)):
                        summaries.count(
                            conn,
                            moment,
                            found.kind,
                            found.status,
                            found.operator,
                            found.amount_cents,
                            sign,
                            found.card_id,
                            found.programme_id,
                        )
                    shifts[reference] = shift
                    # An update time is never still to come: a row moved to a later day than
                    # it was sent on is last updated now, at the latest.
                    last = min(updated + shift, max(now, created + shift))
                    moved.append({"ref": reference, "created": created + shift, "updated": last})
            if moved:
                conn.execute(
                    t.update()
                    .where(t.c.reference == sa.bindparam("ref"))
                    .values(created_at=sa.bindparam("created"), updated_at=sa.bindparam("updated")),
                    moved,
                )
                # New update times may change which row is a card's latest, new creation times
                # which month an operator's credit counts in.
                summaries.refresh_cards(conn, cards)
                rebuild_operator_months(conn)
            events: list[dict[str, Any]] = []
            for start in range(0, len(references), 500):
                chunk = references[start : start + 500]
                for event_id, reference, at in conn.execute(
                    sa.select(audit_events.c.id, audit_events.c.reference, audit_events.c.at).where(
                        audit_events.c.reference.in_(chunk)
                    )
                ):
                    events.append({"event_id": event_id, "at": at + shifts[reference]})
            if events:
                conn.execute(
                    audit_events.update()
                    .where(audit_events.c.id == sa.bindparam("event_id"))
                    .values(at=sa.bindparam("at")),
                    events,
                )

    def recover_interrupted(
        self,
        *,
        actor: str = "system",
        older_than: timedelta | None = None,
        stale_after: timedelta = WORKER_STALE_AFTER,
    ) -> int:
        """Mark ``SENDING`` rows ``UNKNOWN`` whose sender died mid-call. Returns the count.

        A row counts as interrupted when no live worker owns it: its ``claimed_by`` is empty
        (sent by a process that never registered) or names a worker whose heartbeat is older than
        ``stale_after`` (or that is gone from ``workers``). A live worker's in-flight rows are
        never touched. ``older_than`` also skips rows that changed more recently than that.
        Run at start-up and periodically by every worker.
        """
        now = datetime.now(UTC)
        t = transactions
        live = sa.select(workers.c.id).where(workers.c.heartbeat_at >= now - stale_after)
        query = sa.select(t.c.reference, t.c.claimed_by).where(
            t.c.status == Status.SENDING.value,
            sa.or_(t.c.claimed_by.is_(None), t.c.claimed_by.not_in(live)),
        )
        if older_than is not None:
            query = query.where(t.c.updated_at < now - older_than)
        with self.reading() as conn:  # most passes find nothing: no write lock for those
            found = conn.execute(query).all()
        if not found:
            return 0
        with self.writing() as conn:
            moved = []
            for reference, owner in sorted(found):  # rows in reference order: the lock order
                # Still a CAS, on the status and on the owner seen: a row that finished, or that
                # a live worker claimed again meanwhile, keeps what it has.
                changed = conn.execute(
                    t.update()
                    .where(
                        t.c.reference == reference,
                        t.c.status == Status.SENDING.value,
                        t.c.claimed_by.is_(None) if owner is None else t.c.claimed_by == owner,
                    )
                    .values(status=Status.UNKNOWN.value, updated_at=now)
                    .returning(*summaries.counted_columns())
                ).first()
                if changed is not None:
                    summaries.move(conn, changed, Status.SENDING.value, Status.UNKNOWN.value)
                    moved.append(reference)
            _audit(
                conn,
                [
                    _event(
                        reference,
                        now,
                        actor,
                        Status.SENDING,
                        Status.UNKNOWN,
                        "interrupted: the process stopped while the call to EnKash was in "
                        "flight, so the outcome must be settled by lookup",
                        AuditKind.RECOVERED,
                    )
                    for reference in moved
                ],
            )
            return len(moved)

    # --- reads ----------------------------------------------------------------------------------

    def get(self, reference: str) -> LedgerRow | None:
        """The row with this reference, or ``None``."""
        with self.reading() as conn:
            found = conn.execute(
                sa.select(transactions).where(transactions.c.reference == reference)
            )
            mapping = found.mappings().one_or_none()
            return ledger_row(mapping) if mapping is not None else None

    def audit_trail(self, reference: str) -> list[AuditEvent]:
        """Every audit event of a reference, oldest first."""
        with self.reading() as conn:
            found = conn.execute(
                sa.select(audit_events)
                .where(audit_events.c.reference == reference)
                .order_by(audit_events.c.at, audit_events.c.id)
            )
            return [audit_event(m) for m in found.mappings()]

    def rows(
        self,
        *,
        statuses: Iterable[Status] | None = None,
        batch_id: str | None = None,
        limit: int | None = None,
        order: str = "created_at",
    ) -> list[LedgerRow]:
        """Rows, filtered by status and batch; ``order`` is ``created_at`` (oldest first),
        ``-created_at`` (newest first), ``updated_at``, ``-updated_at`` or ``row_number``."""
        if order not in _ORDERS:
            raise ValueError(f"order must be one of {', '.join(_ORDERS)}")
        query = sa.select(transactions).order_by(*_ORDERS[order])
        if statuses is not None:
            query = query.where(transactions.c.status.in_([Status(s).value for s in statuses]))
        if batch_id is not None:
            query = query.where(transactions.c.batch_id == batch_id)
        if limit is not None:
            query = query.limit(limit)
        with self.reading() as conn:
            return [ledger_row(m) for m in conn.execute(query).mappings()]

    def count(self, statuses: Iterable[Status]) -> int:
        """How many rows are in any of ``statuses`` (an index lookup)."""
        with self.reading() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        transactions.c.status.in_([s.value for s in statuses])
                    )
                ).scalar_one()
            )

    def batch_counts(self, batch_id: str) -> dict[Status, int]:
        """How many rows of a batch are in each status (every status present, zero if none)."""
        counts = dict.fromkeys(Status, 0)
        with self.reading() as conn:
            found = conn.execute(
                sa.select(transactions.c.status, sa.func.count())
                .where(transactions.c.batch_id == batch_id)
                .group_by(transactions.c.status)
            )
            for status, count in found:
                counts[Status(status)] = int(count)
        return counts

    def next_queued(self, batch_id: str, limit: int) -> list[str]:
        """References of a batch's ``QUEUED`` rows, in row order (a worker then claims each)."""
        with self.reading() as conn:
            found = conn.execute(
                sa.select(transactions.c.reference)
                .where(
                    transactions.c.batch_id == batch_id,
                    transactions.c.status == Status.QUEUED.value,
                )
                .order_by(transactions.c.row_number, transactions.c.id)
                .limit(limit)
            )
            return list(found.scalars())

    def release_unsent(
        self,
        reference: str,
        *,
        actor: str,
        detail: str,
        cancelled_code: str,
        cancelled_message: str,
    ) -> Status | None:
        """Hand a row this process claimed, and never sent, back: to the queue (``SENDING`` ->
        ``QUEUED``), or, if its batch was cancelled meanwhile, to ``FAILED`` with
        ``cancelled_code`` as a cancel leaves every unsent row. The claim's attempt is taken
        back. Returns the status it moved to, or ``None`` if it is not ``SENDING`` any more.

        Only the claimer can know no call was made, so this is not an allowed ``transition``:
        the batch worker claims each thread's next row while the last one is in flight and, if
        the batch stops before that row is sent, releases it here. The row must still be
        ``SENDING`` and claimed by this process (``worker_id``). The batch row is locked first,
        so a cancel either sees the row back in the queue or is seen here.
        """
        t = transactions.c
        now = datetime.now(UTC)
        with self.writing() as conn:
            batch_id = conn.execute(
                sa.select(t.batch_id).where(t.reference == reference)
            ).scalar_one_or_none()
            state = (
                conn.execute(
                    sa.select(batches.c.state)
                    .where(batches.c.batch_id == batch_id)
                    .with_for_update()
                ).scalar_one_or_none()
                if batch_id is not None
                else None
            )
            values: dict[str, Any] = {
                "attempts": sa.case((t.attempts > 0, t.attempts - 1), else_=0),
                "claimed_by": None,
                "updated_at": now,
            }
            if state == "cancelled":
                to_status, kind = Status.FAILED, AuditKind.CANCELLED
                values.update(enkash_code=cancelled_code, enkash_message=redact(cancelled_message))
                detail = f"{detail}; its batch was cancelled"
            else:
                to_status, kind = Status.QUEUED, AuditKind.NOTE
            changed = conn.execute(
                transactions.update()
                .where(
                    t.reference == reference,
                    t.status == Status.SENDING.value,
                    t.claimed_by == self.worker_id,
                )
                .values(status=to_status.value, **values)
                .returning(transactions)
            ).one_or_none()
            if changed is None:
                return None
            _counted(conn, changed, Status.SENDING, to_status)
            _audit(conn, [_event(reference, now, actor, Status.SENDING, to_status, detail, kind)])
            return to_status

    def claim_next_queued(self, batch_id: str, *, actor: str) -> LedgerRow | None:
        """Claim (``QUEUED`` -> ``SENDING``) the batch's next queued row in row order; the row as
        claimed (the sender needs no second read), or ``None`` when none is left.

        On PostgreSQL the row is picked with ``FOR UPDATE SKIP LOCKED``, so workers claiming at
        the same moment each get a different row instead of racing for the same one. On SQLite the
        write transaction already holds the database. Either way the move itself is the same CAS
        as ``claim``.
        """
        t = transactions
        query = (
            sa.select(t.c.reference)
            .where(t.c.batch_id == batch_id, t.c.status == Status.QUEUED.value)
            .order_by(t.c.row_number, t.c.id)
            .limit(1)
        )
        with self.writing() as conn:
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            for reference in conn.execute(query).scalars():
                moved = self._cas_row(conn, reference, (Status.QUEUED,), Status.SENDING)
                if moved is None:
                    return None
                before, row = moved
                now = datetime.now(UTC)
                _audit(
                    conn,
                    [
                        _event(
                            reference,
                            now,
                            actor,
                            before,
                            Status.SENDING,
                            "claimed for sending",
                            AuditKind.CLAIM,
                        )
                    ],
                )
                return row
            return None

    # --- reconciliation (services/allocations.py settle/resend, services/reconcile.py) ----------

    def latest_events(self, references: Iterable[str]) -> dict[str, AuditEvent]:
        """The latest audit event (highest id) of each reference that has one."""
        wanted = list(dict.fromkeys(references))
        latest: dict[str, AuditEvent] = {}
        with self.reading() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                newest = (
                    sa.select(sa.func.max(audit_events.c.id))
                    .where(audit_events.c.reference.in_(chunk))
                    .group_by(audit_events.c.reference)
                )
                found = conn.execute(sa.select(audit_events).where(audit_events.c.id.in_(newest)))
                for m in found.mappings():
                    latest[m["reference"]] = audit_event(m)
        return latest

    def note_if_latest(
        self,
        reference: str,
        *,
        actor: str,
        detail: str,
        expected_event_id: int | None,
        kind: AuditKind = AuditKind.NOTE,
    ) -> AuditEvent | None:
        """Append a note only if the reference's latest audit event is still ``expected_event_id``.

        The note and the check are one transaction (the row is locked first on PostgreSQL), so a
        lookup's verdict is recorded only when nothing happened to the row while EnKash was being
        asked. Returns the new event, or ``None`` (nothing written) if something did.
        """
        with self.writing() as conn:
            current = self._locked_status(conn, reference)
            if current is None:
                raise UnknownReference(f"no ledger row with reference {reference}")
            if self._latest_event_id(conn, reference) != expected_event_id:
                return None
            return _append_note(conn, reference, actor, current, detail, kind)

    def claim_if_latest(
        self, reference: str, *, actor: str, expected_event_id: int, detail: str
    ) -> bool:
        """``UNKNOWN`` -> ``SENDING`` only if the latest audit event is ``expected_event_id``.

        A resend claims its row this way: the event is the lookup that proved the reference absent,
        so the claim fails if anything (another lookup, resend or settlement) happened since.
        """
        with self.writing() as conn:
            if self._locked_status(conn, reference) is not Status.UNKNOWN:
                return False
            if self._latest_event_id(conn, reference) != expected_event_id:
                return False
            now = datetime.now(UTC)
            if self._cas(conn, reference, (Status.UNKNOWN,), Status.SENDING, now=now) is None:
                return False
            _audit(
                conn,
                [
                    _event(
                        reference,
                        now,
                        actor,
                        Status.UNKNOWN,
                        Status.SENDING,
                        detail,
                        AuditKind.CLAIM,
                    )
                ],
            )
            return True

    def rows_with_code(
        self,
        enkash_code: str,
        *,
        statuses: Iterable[Status] | None = None,
        limit: int | None = None,
    ) -> list[LedgerRow]:
        """Rows carrying this ``enkash_code`` (e.g. ``REFERENCE_MISMATCH``), newest change first."""
        query = (
            sa.select(transactions)
            .where(transactions.c.enkash_code == enkash_code)
            .order_by(*_ORDERS["-updated_at"])
        )
        if statuses is not None:
            query = query.where(transactions.c.status.in_([Status(s).value for s in statuses]))
        if limit is not None:
            query = query.limit(limit)
        with self.reading() as conn:
            return [ledger_row(m) for m in conn.execute(query).mappings()]

    @staticmethod
    def _locked_status(conn: Connection, reference: str) -> Status | None:
        """The row's status, locking the row until commit on PostgreSQL (SQLite's write
        transaction already holds the whole database)."""
        query = sa.select(transactions.c.status).where(transactions.c.reference == reference)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found = conn.execute(query).scalar_one_or_none()
        return Status(found) if found is not None else None

    @staticmethod
    def _latest_event_id(conn: Connection, reference: str) -> int | None:
        return conn.execute(
            sa.select(sa.func.max(audit_events.c.id)).where(audit_events.c.reference == reference)
        ).scalar_one_or_none()

    # --- internals ------------------------------------------------------------------------------

    def _cas(
        self,
        conn: Connection,
        reference: str,
        from_statuses: tuple[Status, ...],
        to_status: Status,
        extra: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Status | None:
        """The compare-and-set itself; returns the status it moved from, or ``None`` if it did not.

        One UPDATE per from-status, so the audit event can name the exact status it left (the row
        lock of the first matching UPDATE makes the answer exact on PostgreSQL too).
        """
        moved = self._cas_row(conn, reference, from_statuses, to_status, extra, now)
        return moved[0] if moved is not None else None

    def _cas_row(
        self,
        conn: Connection,
        reference: str,
        from_statuses: tuple[Status, ...],
        to_status: Status,
        extra: dict[str, Any] | None = None,
        now: datetime | None = None,
        counted: list[tuple[Any, Status, Status]] | None = None,
    ) -> tuple[Status, LedgerRow] | None:
        """``_cas``, also returning the row as the UPDATE left it (``RETURNING``). With
        ``counted`` the programme counters it moves are left for ``_apply_counted`` (the caller
        moves several rows first), else moved at once."""
        values: dict[str, Any] = {"status": to_status.value, "updated_at": now or datetime.now(UTC)}
        values.update(extra or {})
        sending = to_status is Status.SENDING
        if sending:
            values["claimed_by"] = self.worker_id
        statement = _cas_statement(tuple(values), sending)
        params = {f"set_{name}": value for name, value in values.items()}
        params["match_reference"] = reference
        for before in dict.fromkeys(from_statuses):
            params["match_status"] = before.value
            changed = conn.execute(statement, params).one_or_none()
            if changed is not None:
                if counted is None:
                    _counted(conn, changed, before, to_status)
                else:
                    summaries.move(conn, changed, before.value, to_status.value)  # a tally only
                    counted.append((changed, before, to_status))
                return before, ledger_row(changed._mapping)
        return None

    @staticmethod
    def _status(conn: Connection, reference: str) -> Status | None:
        found = conn.execute(
            sa.select(transactions.c.status).where(transactions.c.reference == reference)
        ).scalar_one_or_none()
        return Status(found) if found is not None else None

    @staticmethod
    def _fetch(conn: Connection, reference: str) -> LedgerRow:
        found = conn.execute(sa.select(transactions).where(transactions.c.reference == reference))
        return ledger_row(found.mappings().one())

    def _existing(self, references: list[str]) -> list[str]:
        found: list[str] = []
        with self.reading() as conn:
            for start in range(0, len(references), 500):
                chunk = references[start : start + 500]
                found.extend(
                    conn.execute(
                        sa.select(transactions.c.reference).where(
                            transactions.c.reference.in_(chunk)
                        )
                    ).scalars()
                )
        return found


def _counted(conn: Connection, changed: Any, before: Status, after: Status) -> None:
    """Move the programme's counters, the operator's month and the summaries for one row's
    status move (``changed``: the row as its UPDATE returned it), in the move's transaction."""
    _apply_counted(conn, [(changed, before, after)])
    summaries.move(conn, changed, before.value, after.value)


def _apply_counted(conn: Connection, counted: list[tuple[Any, Status, Status]]) -> None:
    """The programme counters and operator months of several rows' moves (``_cas_row`` with
    ``counted``), in programme order, then operator-month order: the module's lock order."""
    ordered = sorted(counted, key=lambda found: found[0].programme_id or 0)
    for changed, before, after in ordered:
        apply_move(
            conn,
            changed.programme_id,
            changed.transaction_type,
            changed.amount_cents,
            before,
            after,
        )
    release_operator_months(
        conn,
        [
            changed
            for changed, before, after in ordered
            if before in IN_FLIGHT and after is Status.FAILED
        ],
    )


_CAS_STATEMENTS: dict[tuple[tuple[str, ...], bool], Any] = {}


def _cas_statement(columns: tuple[str, ...], sending: bool) -> Any:
    """The compare-and-set UPDATE setting ``columns`` (bound as ``set_<column>``) on the row
    ``match_reference`` while its status is ``match_status``; a claim (``sending``) also counts
    the attempt. Built once per shape, so a move binds values instead of building SQL."""
    key = (columns, sending)
    found = _CAS_STATEMENTS.get(key)
    if found is None:
        t = transactions.c
        values: dict[str, Any] = {
            name: sa.bindparam(f"set_{name}", type_=t[name].type) for name in columns
        }
        if sending:
            values["attempts"] = t.attempts + 1
        found = _CAS_STATEMENTS[key] = (
            transactions.update()
            .where(
                t.reference == sa.bindparam("match_reference"),
                t.status == sa.bindparam("match_status"),
            )
            .values(values)
            .returning(transactions)  # the whole row: the counters, summaries and the caller
        )
    return found


def _move_kind(before: Status, after: Status) -> AuditKind:
    """The kind of a status move when the caller names none."""
    if after is Status.SENDING:
        return AuditKind.CLAIM
    if before is Status.QUEUED and after is Status.FAILED:
        return AuditKind.CANCELLED
    return AuditKind.OUTCOME


def _check_allowed(from_statuses: tuple[Status, ...], to_status: Status) -> None:
    if not from_statuses:
        raise StatusConflict("no from-status given")
    forbidden = [
        s for s in from_statuses if (Status(s), Status(to_status)) not in ALLOWED_TRANSITIONS
    ]
    if forbidden:
        raise StatusConflict(
            "statuses only move forward; not allowed: "
            + ", ".join(f"{s.value} -> {to_status.value}" for s in forbidden)
        )


def _repeats(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for value in values:
        if value in seen:
            repeated[value] = None
        seen.add(value)
    return list(repeated)
