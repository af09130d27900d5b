"""Bulk runs: the ``batches`` table (a run's settings, state and totals) and the queueing of a
batch's rows, all or nothing, as ordinary ``transactions`` rows carrying the batch id."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from services.models import Allocation, AuditKind, BatchState, Kind, Status
from services.redact import redact
from services.store import summaries
from services.store.bulk_rows import CorrectionRowsRefused, corrections_refused
from services.store.engine import from_cents, to_cents
from services.store.programmes import release_many, release_operator_months, reserve_rows
from services.store.records import (
    BatchRecord,
    DuplicateBatchFile,
    DuplicateReference,
    batch_record,
)
from services.store.schema import batch_rejected_rows, batches, transactions
from services.store.transactions import (
    TransactionStore,
    _assign_programmes,
    _audit,
    _batch_rows,
    _event,
    _repeats,
    _tally_new,
)


class BatchStore(TransactionStore):
    """Batches and the queries the batch runner makes about their rows."""

    def create_batch(
        self,
        *,
        batch_id: str,
        file_name: str,
        file_digest: str,
        operator: str,
        allocations: list[tuple[Allocation, int]],
        concurrency: int,
        rate_limit: float | None = None,
        session_id: str | None = None,
        state: BatchState = BatchState.QUEUED,
        note: str = "",
        row_notes: Mapping[int, str] | None = None,
        rejected: Iterable[tuple[int, Mapping[str, str], str]] = (),
        corrects: Mapping[int, str] | None = None,
        approved_by: str | None = None,
        within: Callable[[Connection], None] | None = None,
    ) -> BatchRecord:
        """Record a batch and queue all its rows (``QUEUED``) in ONE transaction: all or nothing.

        ``note`` is the batch's first note; ``row_notes`` (row number -> text) are added to those
        rows' first audit events. ``DuplicateBatchFile`` if a batch with this file digest exists;
        ``DuplicateReference`` if a reference is already in the ledger. Nothing is written in
        either case. ``rejected`` (row number, cells, problem) are the file's rows refused at
        preview, kept for the report. ``corrects`` (row number -> reference) links correction
        rows to the failed rows they pay instead; ``CorrectionRowsRefused`` (nothing written)
        when one may not, decided under the originals' row locks (``bulk_rows``).
        ``approved_by`` names the checker already on every row (a schedule's occurrence);
        ``within(conn)`` runs first in the same transaction (a schedule records its run there,
        so the run and its batch are written together or not at all).
        """
        state = _batch_state(state)
        references = [allocation.reference for allocation, _ in allocations]
        if _repeats(references) or _repeats(str(number) for _, number in allocations):
            raise DuplicateReference(_repeats(references), "a batch repeats a reference or row")
        now = datetime.now(UTC)
        debits = [a.amount for a, _ in allocations if a.kind is Kind.DEBIT]
        credits = [a.amount for a, _ in allocations if a.kind is not Kind.DEBIT]
        record = {
            "batch_id": batch_id,
            "file_name": file_name[:255],
            "file_digest": file_digest,
            "operator": operator,
            "session_id": session_id,
            "state": state.value,
            "concurrency": concurrency,
            "rate_limit": rate_limit,
            "row_count": len(allocations),
            "credit_rows": len(credits),
            "credit_cents": sum(to_cents(a) for a in credits),
            "debit_rows": len(debits),
            "debit_cents": sum(to_cents(a) for a in debits),
            "created_at": now,
            "updated_at": now,
            "note": note,
        }
        rows, events = _batch_rows(
            allocations,
            operator=operator,
            status=Status.QUEUED,
            batch_id=batch_id,
            session_id=session_id,
            approved_by=approved_by,
            now=now,
        )
        for values, first in zip(rows, events, strict=True):
            extra = (row_notes or {}).get(values["row_number"])
            if extra:
                first["detail"] += f"; {extra}"
            original = (corrects or {}).get(values["row_number"])
            if original:
                values["corrects"] = original
                first["detail"] += f"; corrects {original}"
        refused_rows = [
            {
                "batch_id": batch_id,
                "row_number": number,
                "row_values": json.dumps(dict(cells), sort_keys=True),
                "problem": problem,
            }
            for number, cells, problem in rejected
        ]
        try:
            with self.writing() as conn:
                if within is not None:
                    within(conn)
                refused = corrections_refused(conn, corrects or {}, lock=True)
                if refused:
                    raise CorrectionRowsRefused(refused)
                conn.execute(batches.insert().values(record))
                if refused_rows:
                    conn.execute(batch_rejected_rows.insert(), refused_rows)
                if rows:
                    credits = _assign_programmes(conn, rows, [a.programme for a, _ in allocations])
                    conn.execute(transactions.insert(), rows)
                    reserve_rows(conn, rows, credits)  # all the file's credits fit, or none queued
                    _tally_new(conn, rows)
                    _audit(conn, events)
        except IntegrityError:
            existing = self.batch_by_digest(file_digest)
            if existing is not None:
                raise DuplicateBatchFile(existing) from None
            raise DuplicateReference(self._existing(references) or [batch_id]) from None
        found = self.get_batch(batch_id)
        assert found is not None
        return found

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        """The batch with this id, or ``None``."""
        with self.reading() as conn:
            found = conn.execute(sa.select(batches).where(batches.c.batch_id == batch_id))
            mapping = found.mappings().one_or_none()
            return batch_record(mapping) if mapping is not None else None

    def batch_by_digest(self, file_digest: str) -> BatchRecord | None:
        """The batch queued from a file with this SHA-256, or ``None``."""
        with self.reading() as conn:
            found = conn.execute(sa.select(batches).where(batches.c.file_digest == file_digest))
            mapping = found.mappings().one_or_none()
            return batch_record(mapping) if mapping is not None else None

    def list_batches(
        self, limit: int = 20, states: Iterable[BatchState] | None = None
    ) -> list[BatchRecord]:
        """The most recent batches first (optionally only those in ``states``)."""
        query = sa.select(batches).order_by(batches.c.created_at.desc()).limit(limit)
        if states is not None:
            query = query.where(batches.c.state.in_([_batch_state(s).value for s in states]))
        with self.reading() as conn:
            return [batch_record(m) for m in conn.execute(query).mappings()]

    def update_batch(
        self,
        batch_id: str,
        *,
        from_states: Iterable[BatchState] | None = None,
        **values: Any,
    ) -> bool:
        """Set columns of a batch; with ``from_states`` only if its state is one of them (a CAS).

        Returns whether the batch changed. ``updated_at`` is set unless only the heartbeat moves.
        """
        unknown = set(values) - set(batches.c.keys())
        if unknown or "batch_id" in values:
            raise ValueError(f"not batch columns: {', '.join(sorted(unknown)) or 'batch_id'}")
        if isinstance(values.get("note"), str):
            values["note"] = redact(values["note"])
        if values.get("state") is not None:
            values["state"] = _batch_state(values["state"]).value
        if set(values) != {"heartbeat_at"}:
            values.setdefault("updated_at", datetime.now(UTC))
        query = batches.update().where(batches.c.batch_id == batch_id).values(values)
        if from_states is not None:
            query = query.where(batches.c.state.in_([_batch_state(s).value for s in from_states]))
        with self.writing() as conn:
            return conn.execute(query).rowcount == 1

    def cancel_queued(
        self,
        batch_id: str,
        *,
        actor: str,
        code: str,
        message: str,
        kind: AuditKind = AuditKind.CANCELLED,
    ) -> int:
        """Move every still-``QUEUED`` row of a batch to ``FAILED`` (never sent); one transaction.

        Rows a worker claimed meanwhile are not touched (the CAS is on ``QUEUED``). Returns the
        number of rows moved; each gets an audit event.
        """
        t = transactions
        now = datetime.now(UTC)
        message = redact(message)
        queued = sa.and_(t.c.batch_id == batch_id, t.c.status == Status.QUEUED.value)
        with self.writing() as conn:
            # RETURNING exactly the rows this UPDATE moved (a worker may claim one meanwhile on
            # PostgreSQL): their credits' reservations go back in this same transaction.
            found = conn.execute(
                t.update()
                .where(queued)
                .values(
                    status=Status.FAILED.value,
                    enkash_code=code,
                    enkash_message=message,
                    updated_at=now,
                )
                .returning(
                    t.c.reference,
                    t.c.transaction_type,
                    *summaries.counted_columns(),
                )
            ).all()
            if not found:
                return 0
            references = [row.reference for row in found]
            released: dict[int, int] = {}
            for row in found:
                if row.transaction_type == "CR" and row.programme_id is not None:
                    cents = released.get(row.programme_id, 0) + row.amount_cents
                    released[row.programme_id] = cents
                summaries.move(conn, row, Status.QUEUED.value, Status.FAILED.value)
            release_many(conn, released)
            release_operator_months(conn, found)
            _audit(
                conn,
                [
                    _event(reference, now, actor, Status.QUEUED, Status.FAILED, message, kind)
                    for reference in references
                ],
            )
            return len(references)

    def batch_settled_since(self, batch_id: str, since: datetime) -> int:
        """Rows of a batch that reached an outcome (succeeded, failed, unknown) since ``since``."""
        t = transactions
        done = (Status.SUCCEEDED.value, Status.FAILED.value, Status.UNKNOWN.value)
        with self.reading() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        t.c.batch_id == batch_id, t.c.status.in_(done), t.c.updated_at >= since
                    )
                ).scalar_one()
            )

    def largest_debit(self, batch_id: str) -> tuple[int, Decimal] | None:
        """A batch's largest debit row as (row number, amount); ``None`` if it debits nothing."""
        t = transactions
        with self.reading() as conn:
            found = conn.execute(
                sa.select(t.c.row_number, t.c.amount_cents)
                .where(t.c.batch_id == batch_id, t.c.kind == Kind.DEBIT.value)
                .order_by(t.c.amount_cents.desc(), t.c.row_number)
                .limit(1)
            ).one_or_none()
        if found is None:
            return None
        return found.row_number, from_cents(found.amount_cents)  # type: ignore[return-value]


def _batch_state(state: BatchState | str) -> BatchState:
    try:
        return BatchState(state)
    except ValueError:
        raise ValueError(
            f"state must be one of {', '.join(s.value for s in BatchState)}, not {state!r}"
        ) from None
