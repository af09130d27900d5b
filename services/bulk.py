"""Bulk runs: queue a checked file as a batch, send it in the background, pause, cancel, resume.

The life of a batch (state in the ``batches`` table, rows in ``transactions``):

1. ``queue_batch`` records the batch and every valid row as ``QUEUED`` in one transaction, with
   references derived from (batch id, row number), so a resumed batch can never mint a second
   reference for a row. The same file (same SHA-256) is refused: it points at the first batch.
   A file whose rows repeat rows of a batch of the last 30 days (same card or employee, kind and
   amount; ``find_repeats``), however its bytes differ, is refused (``RepeatedRows``) unless the
   manager acknowledged exactly those repeats; the acknowledgement is in each row's audit trail.
2. ``start_batch`` is the single step from "confirmed" to "sending". A batch that moves more
   points than the batch approval threshold, or holds any debit above the debit threshold,
   starts only once a second person approved it (``services.approvals``); otherwise
   ``AwaitingApproval``. It only marks the batch ``running``: a worker (services/worker.py;
   embedded in the dashboard, or ``python -m services.worker`` processes) picks every running
   batch up and runs it with a ``BatchRunner`` job, also after a crash or restart, with nobody
   pressing Resume.
3. The job belongs to a worker process, not to a browser tab. Its threads (each with its own
   EnKash client) claim rows with the ledger's compare-and-set (on PostgreSQL the next queued row
   is picked with ``FOR UPDATE SKIP LOCKED``, so several workers share a batch without racing)
   and send them with ``allocations.call_claimed``, under a shared requests-per-second cap.
4. Before sending anything, and again after the queue is empty, rows of the batch that are
   ``UNKNOWN`` (a worker died mid-call; live workers mark those once its heartbeat is stale) are
   settled by looking the reference up; only a reference EnKash proves absent is sent again, with
   the same reference. Before that second pass the job waits for rows other workers still have
   in flight (or for their worker to be found dead).
5. Pause stops claiming (rows in flight finish); cancel also fails every still-queued row with
   ``CANCELLED`` ("cancelled before sending"); those rows stay visible in the report.

Progress is read from the ledger (``progress``), so any tab or process can show it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from services import allocations, approvals
from services.bulk_files import COLUMNS, Preview, RejectedRow, check_rows, parse_file, with_rows
from services.bulk_programmes import fit_programmes
from services.config import Settings
from services.employees import existing_holders_many
from services.enkash import EnkashClient, EnkashError, Exchange
from services.errors import ApprovalRequired, Conflict, InvalidInput, NotFound
from services.models import Allocation, Kind, ReasonCode, SettleOutcome, Status
from services.spreadsheet import to_csv, to_xlsx
from services.store import (
    BatchRecord,
    DuplicateBatchFile,
    Ledger,
    LedgerRow,
    Move,
    StatusConflict,
    batches,
    to_cents,
    transactions,
)

#: Lends an EnKash client for one ``with`` block (``Desk.client``: from the process's pool).
ClientFactory = Callable[[], AbstractContextManager[EnkashClient]]

log = logging.getLogger("points_desk.bulk")

DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 32
CANCELLED = ReasonCode.CANCELLED
CANCELLED_MESSAGE = "Cancelled before sending: nothing was sent and no points moved."
HEARTBEAT_SECONDS = 1.0
STALE_AFTER_SECONDS = 10.0  # a running batch whose heartbeat is older has no live worker
NOT_SENT_PAUSE_AFTER = 3  # consecutive "EnKash unreachable" rows before the batch pauses itself
LOGIN_REFUSED_PAUSE = "paused: EnKash refused the sign-in; fix the credentials, then resume"
SETTLE_ROUNDS = 3  # how often unknown rows looked up too early are tried again, a grace apart
ACTIVE_STATES = ("queued", "running", "paused")

__all__ = [
    "CANCELLED",
    "DEFAULT_CONCURRENCY",
    "MAX_CONCURRENCY",
    "AwaitingApproval",
    "BatchRunner",
    "DuplicateBatchFile",
    "Progress",
    "RepeatedRows",
    "Repeats",
    "cancel_batch",
    "find_repeats",
    "pause_batch",
    "preview_upload",
    "progress",
    "queue_batch",
    "report_csv",
    "report_xlsx",
    "start_batch",
]


def new_batch_id() -> str:
    """A batch id: sortable by time, unguessable; row references are ``<id>-000002``."""
    return f"BK{datetime.now(UTC).strftime('%y%m%d%H%M%S')}{secrets.token_hex(3).upper()}"


# --- before confirmation -------------------------------------------------------------------------


def preview_upload(
    ledger: Ledger,
    client: ClientFactory,
    settings: Settings,
    file_name: str,
    content: bytes,
    *,
    programme: str | None = None,
) -> Preview:
    """Read and check an upload against the ledger's card balances and EnKash's pool.

    ``client`` lends an EnKash client for a ``with`` block (``Desk.client``).

    Raises ``BulkFileError`` when the file as a whole cannot be used. The pool is ``None`` in the
    preview when EnKash cannot be asked right now. ``programme``: the code of the programme for
    rows without a ``programme`` cell (General when ``None``); credits past a programme's
    remaining budget are refused row by row (``bulk_programmes.fit_programmes``).
    """
    parsed = parse_file(file_name, content)
    try:
        with client() as enkash:
            pool: Decimal | None = enkash.account_details().available_balance
    except EnkashError:
        pool = None
    preview = check_rows(
        parsed,
        known_balance=ledger.known_balance,
        pool_balance=pool,
        max_points=settings.points_desk_max_points,
    )
    preview = refuse_bad_corrections(preview, ledger)
    with client() as enkash:
        preview = refuse_existing_cards(preview, ledger, enkash)
    return fit_programmes(preview, ledger, programme)


def _corrects(preview: Preview) -> dict[int, str]:
    """Row number -> the reference a valid row corrects (a correction file's ``corrects``)."""
    return {
        v.number: v.values["corrects"].strip()
        for v in preview.valid
        if (v.values.get("corrects") or "").strip()
    }


def refuse_bad_corrections(preview: Preview, ledger: Ledger) -> Preview:
    """Move correction rows that may not pay (their original succeeded, is not settled, or is
    already corrected) to the rejected rows, each with why. ``queue_batch`` asks again, under
    lock: this is what the manager sees, not the guard."""
    refused = ledger.corrections_refused(_corrects(preview))
    if not refused:
        return preview
    return _move_to_rejected(
        preview,
        {
            n: {"corrects": f"Not sent: {why}. A correction never pays twice."}
            for n, why in refused.items()
        },
    )


def _move_to_rejected(preview: Preview, refused: dict[int, dict[str, str]]) -> Preview:
    valid = [v for v in preview.valid if v.number not in refused]
    rejected = sorted(
        [
            *preview.rejected,
            *(
                RejectedRow(v.number, v.values, refused[v.number])
                for v in preview.valid
                if v.number in refused
            ),
        ],
        key=lambda row: row.number,
    )
    return with_rows(preview, valid, rejected)


def refuse_existing_cards(preview: Preview, ledger: Ledger, client: EnkashClient | None) -> Preview:
    """Move ``create`` rows whose email or mobile already has a card to the rejected rows.

    EnKash matches a create by email and mobile and credits the card it finds, whoever holds it;
    such a row is never sent. When EnKash's user search cannot be asked, a create row the ledger
    does not already refuse cannot be checked, so it is refused too (upload the file again).
    """
    creates = [v for v in preview.valid if v.allocation.kind is Kind.CREATE]
    if not creates:
        return preview
    checks = existing_holders_many(
        ledger,
        client,
        [v.allocation.employee for v in creates],  # type: ignore[misc]
    )
    refused: dict[int, dict[str, str]] = {}
    for valid, found in zip(creates, checks, strict=True):
        if found.holders:
            cards = "; ".join(
                f"card {h.card_id} of {' '.join(p for p in (h.title, h.first_name) if p) or '?'}"
                f" ({', '.join(p for p in (h.email, h.mobile) if p)})"
                for h in found.holders
            )
            refused[valid.number] = {
                "row": f"This email or mobile already has a card: {cards}. Nothing will be sent "
                "for this row; credit that card instead (kind credit with its card_id)."
            }
        elif found.unchecked:
            refused[valid.number] = {
                "row": "EnKash's user search did not answer, so Points Desk could not check "
                "whether this employee already has a card. Nothing will be sent for this row; "
                "upload the file again in a moment."
            }
    if not refused:
        return preview
    return _move_to_rejected(preview, refused)


# --- rows repeating recent batches ---------------------------------------------------------------

#: How far back a file's rows are compared with earlier batches.
REPEAT_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class EarlierRow:
    """A row of an earlier batch that a row of the file repeats."""

    batch_id: str
    row_number: int
    created_at: datetime  # when that batch was queued


@dataclass(frozen=True)
class Repeats:
    """Which rows of a file repeat rows of batches of the last 30 days, row by row.

    A row repeats an earlier batch row when both move the same kind and amount for the same card
    id, employee email or employee mobile (compared normalised: a changed space, letter case or
    ``+91`` makes no difference). Earlier rows that failed (refused, cancelled, rejected) are
    left out: they paid nothing.
    """

    checked: int  # valid rows of the file compared
    rows: dict[int, tuple[EarlierRow, ...]] = field(default_factory=dict)  # file row -> earlier

    def __bool__(self) -> bool:
        return bool(self.rows)

    def pairs(self) -> set[tuple[int, str, int]]:
        """(file row, earlier batch, earlier row) of each repeat: what an acknowledgement covers."""
        return {(n, e.batch_id, e.row_number) for n, earlier in self.rows.items() for e in earlier}

    def by_batch(self) -> list[tuple[str, datetime, list[int], list[int]]]:
        """Per earlier batch, oldest first: (batch id, queued at, file rows, that batch's rows)."""
        found: dict[str, tuple[datetime, set[int], set[int]]] = {}
        for number, earlier in self.rows.items():
            for e in earlier:
                _, mine, theirs = found.setdefault(e.batch_id, (e.created_at, set(), set()))
                mine.add(number)
                theirs.add(e.row_number)
        return [
            (batch_id, at, sorted(mine), sorted(theirs))
            for batch_id, (at, mine, theirs) in sorted(found.items(), key=lambda kv: kv[1][0])
        ]

    def summary(self) -> str:
        """``3 of 3 rows repeat batch BK… (rows 1, 2, 3)``, one clause per earlier batch."""
        return "; ".join(
            f"{len(mine)} of {self.checked} rows repeat batch {batch_id} (rows {row_list(mine)})"
            for batch_id, _, mine, _ in self.by_batch()
        )


class RepeatedRows(Conflict):
    """The file repeats rows of a recent batch and nobody acknowledged paying them again."""

    def __init__(self, repeats: Repeats):
        self.repeats = repeats
        super().__init__(
            f"{repeats.summary()}. Nothing was queued: confirm that these rows were paid "
            "before and should be paid again"
        )


def row_list(numbers: Iterable[int], limit: int = 20) -> str:
    """``1, 2, 3`` (at most ``limit`` numbers, then ``… (N more)``)."""
    numbers = list(numbers)
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" … ({len(numbers) - limit} more)" if len(numbers) > limit else "")


def _identities(card_id: str | None, email: str | None, mobile: str | None) -> list[str]:
    """The normalised ways a row names its person: card id, email, mobile."""
    found = []
    if card_id and card_id.strip():
        found.append("card:" + "".join(card_id.split()).upper())
    if email and email.strip():
        found.append("email:" + "".join(email.split()).casefold())
    digits = "".join(ch for ch in (mobile or "") if ch.isdigit())[-10:]
    if digits:
        found.append("mobile:" + digits)
    return found


def _keys(allocation: Allocation) -> list[tuple[str, int, str]]:
    employee = allocation.employee
    return [
        (allocation.kind.value, to_cents(allocation.amount), identity)
        for identity in _identities(
            allocation.card_id,
            employee.email if employee else None,
            employee.mobile if employee else None,
        )
    ]


def find_repeats(
    ledger: Ledger,
    preview: Preview,
    *,
    now: datetime | None = None,
    window: timedelta = REPEAT_WINDOW,
) -> Repeats:
    """For each valid row of ``preview``, the rows of batches of the last ``window`` it repeats.

    One pass over the ledger's batch rows of the window (one query), matched in memory on
    (kind, amount, card id / email / mobile). See ``Repeats`` for what counts as a repeat.
    """
    wanted: dict[tuple[str, int, str], list[int]] = {}
    for valid in preview.valid:
        for key in _keys(valid.allocation):
            wanted.setdefault(key, []).append(valid.number)
    found: dict[int, dict[tuple[str, int], EarlierRow]] = {}
    if wanted:
        since = (now or datetime.now(UTC)) - window
        t, b = transactions, batches
        query = (
            sa.select(
                t.c.batch_id,
                t.c.row_number,
                t.c.kind,
                t.c.amount_cents,
                t.c.card_id,
                t.c.email,
                t.c.mobile,
                b.c.created_at,
            )
            .join(b, b.c.batch_id == t.c.batch_id)
            .where(
                t.c.batch_id.is_not(None),
                t.c.created_at > since,
                t.c.status != Status.FAILED.value,
                t.c.kind.in_(sorted({kind for kind, _, _ in wanted})),
            )
        )
        with ledger.engine.connect() as conn:
            for m in conn.execute(query):
                earlier = EarlierRow(m.batch_id, m.row_number, m.created_at)
                for identity in _identities(m.card_id, m.email, m.mobile):
                    for number in wanted.get((m.kind, m.amount_cents, identity), ()):
                        found.setdefault(number, {})[(m.batch_id, m.row_number)] = earlier
    return Repeats(
        checked=len(preview.valid),
        rows={
            number: tuple(sorted(by_row.values(), key=lambda e: (e.created_at, e.row_number)))
            for number, by_row in sorted(found.items())
        },
    )


# --- queueing ------------------------------------------------------------------------------------


def queue_batch(
    ledger: Ledger,
    preview: Preview,
    *,
    operator: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate_limit: float | None = None,
    session_id: str | None = None,
    acknowledged: Repeats | None = None,
) -> BatchRecord:
    """Record the batch and queue its valid rows (``QUEUED``) in one transaction.

    ``DuplicateBatchFile`` if this file was queued before (nothing is written): a file can be
    paid only once. ``RepeatedRows`` if its rows repeat rows of a recent batch (``find_repeats``,
    asked again here) that ``acknowledged`` does not cover: the manager must have seen and
    accepted each repeat; the acknowledgement is written into the repeated rows' audit trail and
    the batch's note. ``ValueError`` for settings out of range or a preview with no valid rows.
    """
    concurrency = int(concurrency)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInput(f"Rows sent at a time must be between 1 and {MAX_CONCURRENCY}.")
    if rate_limit is not None and rate_limit <= 0:
        rate_limit = None
    existing = ledger.batch_by_digest(preview.file.digest)
    if existing is not None:
        raise DuplicateBatchFile(existing)
    if not preview.valid:
        raise InvalidInput("The file has no valid rows to send.")
    repeats = find_repeats(ledger, preview)
    if repeats and not repeats.pairs() <= (acknowledged.pairs() if acknowledged else set()):
        raise RepeatedRows(repeats)
    batch_id = new_batch_id()
    rows = [
        (
            valid.allocation.model_copy(
                update={"reference": allocations.batch_reference(batch_id, valid.number)}
            ),
            valid.number,
        )
        for valid in preview.valid
    ]
    return ledger.create_batch(
        batch_id=batch_id,
        file_name=preview.file.name,
        file_digest=preview.file.digest,
        operator=operator,
        allocations=rows,
        concurrency=concurrency,
        rate_limit=rate_limit,
        session_id=session_id,
        note=f"{operator} acknowledged: {repeats.summary()}; paid again" if repeats else "",
        row_notes={
            number: f"repeats {_earlier_words(earlier)}; paid again as {operator} acknowledged"
            for number, earlier in repeats.rows.items()
        },
        rejected=[(r.number, r.values, r.reason) for r in preview.rejected],
        corrects=_corrects(preview),
    )


def _earlier_words(earlier: Iterable[EarlierRow]) -> str:
    return ", ".join(f"batch {e.batch_id} row {e.row_number}" for e in earlier)


# --- state changes -------------------------------------------------------------------------------


class AwaitingApproval(ApprovalRequired, StatusConflict):
    """The batch is above the approval threshold and no second person has approved it yet."""


def batch_total(record: BatchRecord) -> Decimal:
    """Every point a batch moves, credits and debits alike (what the approval threshold sees)."""
    return record.credit_points + record.debit_points


def approval_reasons(ledger: Ledger, settings: Settings, record: BatchRecord) -> list[str]:
    """Why this batch needs a second person (its total, a debit above its programme's debit
    limit, credits past the operator's monthly limit, or that it reverses another batch: a
    reversal always needs a second person)."""
    reasons = approvals.stored_batch_reasons(ledger, settings, record, batch_total(record))
    if ledger.is_reversal_batch(record.batch_id):
        reasons.insert(0, "reverses movements of another batch (a reversal always needs approval)")
    return reasons


def needs_approval(ledger: Ledger, settings: Settings, record: BatchRecord) -> bool:
    """Whether this batch must wait for a second person before it may start."""
    return bool(approval_reasons(ledger, settings, record)) and not approvals.is_approved(
        ledger, record.batch_id
    )


def start_batch(
    ledger: Ledger,
    settings: Settings,
    batch_id: str,
    *,
    actor: str,
    wake: Callable[..., None] | None = None,
) -> BatchRecord:
    """Confirmed -> sending: the one place a batch starts (or resumes) sending.

    Works from ``queued``, ``paused``, and ``running`` with no live worker (after a crash or
    restart). ``AwaitingApproval`` for a batch above the approval threshold that no second person
    approved (nothing changes); ``StatusConflict`` for a cancelled or finished batch.
    ``wake(batch_id, actor=actor)`` tells an embedded worker to start now (``Desk.pick_up``);
    without it a worker picks the batch up at its next poll.
    """
    record = ledger.get_batch(batch_id)
    if record is None:
        raise NotFound(f"There is no batch {batch_id}.")
    reasons = approval_reasons(ledger, settings, record)
    if reasons and not approvals.is_approved(ledger, batch_id):
        raise AwaitingApproval(
            f"batch {batch_id} {' and '.join(reasons)}: a second person has to approve it on "
            "the Approvals page first"
        )
    now = datetime.now(UTC)
    moved = ledger.update_batch(
        batch_id,
        from_states=("queued", "paused", "running"),
        state="running",
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        note=f"started by {actor}",
    )
    if not moved:
        raise StatusConflict(f"batch {batch_id} is {record.state}; it cannot be started")
    if wake is not None:
        wake(batch_id, actor=actor)  # the embedded worker now, a worker process at its poll
    return ledger.get_batch(batch_id)  # type: ignore[return-value]


def start_or_ask_approval(
    ledger: Ledger,
    settings: Settings,
    batch_id: str,
    *,
    actor: str,
    wake: Callable[..., None] | None = None,
) -> bool:
    """What confirming a batch does: start it, or, when it needs approval (its total, or a debit
    above the debit limit), ask a second person, saying why (nothing is sent until they
    approve). Returns True when it waits for approval."""
    try:
        start_batch(ledger, settings, batch_id, actor=actor, wake=wake)
    except AwaitingApproval:
        record = ledger.get_batch(batch_id)
        assert record is not None  # start_batch found it
        why = approval_reasons(ledger, settings, record)
        approvals.request_batch(ledger, batch_id, batch_total(record), actor, why=why)
        return True
    return False


def pause_batch(
    ledger: Ledger, batch_id: str, *, actor: str, stop: Callable[[str], None] | None = None
) -> bool:
    """Stop claiming rows (rows in flight finish); ``start_batch`` resumes. False if not running.

    ``stop(batch_id)`` stops this process's job at once (``BatchRunner.stop``); workers elsewhere
    obey the state.
    """
    moved = ledger.update_batch(
        batch_id, from_states=("running", "queued"), state="paused", note=f"paused by {actor}"
    )
    if stop is not None:
        stop(batch_id)
    return moved


def cancel_batch(
    ledger: Ledger, batch_id: str, *, actor: str, stop: Callable[[str], None] | None = None
) -> int:
    """Stop the batch for good: every row not yet sent becomes ``FAILED`` / ``CANCELLED``.

    Rows in flight finish and keep their real outcome. Returns how many rows were cancelled.
    ``stop`` as for ``pause_batch``.
    """
    moved = ledger.update_batch(
        batch_id,
        from_states=ACTIVE_STATES,
        state="cancelled",
        finished_at=datetime.now(UTC),
        note=f"cancelled by {actor}",
    )
    if stop is not None:
        stop(batch_id)
    if moved:
        approvals.withdraw(
            ledger, "batch", batch_id, actor=actor, why=f"batch cancelled by {actor}"
        )
    else:
        record = ledger.get_batch(batch_id)
        if record is None:
            raise NotFound(f"There is no batch {batch_id}.")
        if record.state != "cancelled":
            raise StatusConflict(f"batch {batch_id} is {record.state}; it cannot be cancelled")
    return ledger.cancel_queued(batch_id, actor=actor, code=CANCELLED, message=CANCELLED_MESSAGE)


# --- progress ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Where a batch stands, read from the ledger (the same in every tab and process)."""

    batch: BatchRecord
    counts: dict[Status, int]
    rate: float | None  # rows reaching an outcome per second, recently
    eta_seconds: float | None
    worker_alive: bool
    approval: str | None = None  # a queued batch's approval request: pending, approved, rejected

    @property
    def state(self) -> str:
        """The batch's state as a person should read it: ``settling`` for a batch marked finished
        while some of its rows are still queued or being sent (a resend from Reconcile)."""
        if self.batch.state == "finished" and self.remaining:
            return "settling"
        return self.batch.state

    @property
    def awaiting_approval(self) -> bool:
        """Queued and waiting for a second person's decision: nothing is sent yet."""
        return self.batch.state == "queued" and self.approval == approvals.PENDING

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def remaining(self) -> int:
        return self.counts[Status.QUEUED] + self.counts[Status.SENDING]

    @property
    def done(self) -> int:
        return self.total - self.remaining

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def active(self) -> bool:
        """Still moving (or meant to): the page keeps polling."""
        return self.batch.state == "running" or self.counts[Status.SENDING] > 0

    @property
    def interrupted(self) -> bool:
        """Marked running but nobody is working on it: offer to resume."""
        return self.batch.state == "running" and not self.worker_alive


def progress(ledger: Ledger, batch_id: str, *, window_seconds: float = 10.0) -> Progress:
    """Counts by status, the recent rate and an ETA for one batch."""
    record = ledger.get_batch(batch_id)
    if record is None:
        raise NotFound(f"There is no batch {batch_id}.")
    counts = ledger.batch_counts(batch_id)
    now = datetime.now(UTC)
    alive = record.heartbeat_at is not None and (
        now - record.heartbeat_at < timedelta(seconds=STALE_AFTER_SECONDS)
    )
    rate = eta = None
    if record.state == "running" and record.started_at is not None:
        window = min(window_seconds, (now - record.started_at).total_seconds())
        if window >= 0.5:
            settled = ledger.batch_settled_since(batch_id, now - timedelta(seconds=window))
            rate = settled / window
            remaining = counts[Status.QUEUED] + counts[Status.SENDING]
            eta = remaining / rate if rate > 0 else None
    # Only a queued batch can be waiting for a decision; others need not ask.
    request = approvals.for_subject(ledger, "batch", batch_id) if record.state == "queued" else None
    return Progress(
        record,
        counts,
        rate,
        eta,
        alive and record.state == "running",
        request.status if request is not None else None,
    )


# --- the report ----------------------------------------------------------------------------------

REPORT_HEADER = [
    "row",
    "kind",
    "first_name",
    "email",
    "mobile",
    "card_id",
    "amount",
    "reason",
    "status",
    "transaction_id",
    "balance_after",
    "reference",
    "code",
    "message",
    "corrects",
]


def _message(row: LedgerRow, original: LedgerRow | None = None) -> str:
    if row.status is Status.SUCCEEDED:
        said = "EnKash confirmed it; reference matched"
    elif row.status is Status.FAILED:
        said = row.enkash_message or allocations.describe(row).headline
    else:
        said = allocations.describe(row).headline
    if row.reverses and original is not None:
        said += f"; reverses {row.reverses}"
        if row.amount < original.amount:
            said += (
                f": {row.amount} of its {original.amount} points (the rest was spent or already "
                "reversed when the reversal was asked)"
            )
    return said


def report_rows(ledger: Ledger, batch_id: str) -> list[list[Any]]:
    """One line per input row of the batch's file, in file order: what was asked and what EnKash
    said; rows refused at preview are ``REJECTED`` with the problem as their message."""
    sent = [
        [
            row.row_number,
            row.kind.value,
            row.first_name or "",
            row.email or "",
            row.mobile or "",
            row.card_id or "",
            row.amount,
            row.reason,
            row.status.value,
            row.transaction_id or "",
            row.balance_after,
            row.reference,
            row.enkash_code or "",
            _message(row, ledger.get(row.reverses) if row.reverses else None),
            row.corrects or "",
        ]
        for row in ledger.rows(batch_id=batch_id, order="row_number")
    ]
    refused = [
        [
            r.row_number,
            r.values.get("kind", ""),
            r.values.get("first_name", ""),
            r.values.get("email", ""),
            r.values.get("mobile", ""),
            r.values.get("card_id", ""),
            r.values.get("amount", ""),
            r.values.get("reason", ""),
            REJECTED,
            "",
            None,
            "",
            "",
            f"Rejected at preview, never sent: {r.problem}",
            r.values.get("corrects", ""),
        ]
        for r in ledger.rejected_rows(batch_id)
    ]
    return sorted([*sent, *refused], key=lambda line: line[0])


#: The status a report gives a row refused at preview (it never became a transaction).
REJECTED = "REJECTED"

#: A correction file: the template's columns and the reference of the row each one corrects.
CORRECTION_HEADER = [*COLUMNS, "corrects"]


def correction_rows(ledger: Ledger, batch_id: str) -> tuple[list[LedgerRow], list[LedgerRow]]:
    """The batch's rows a correction file may pay again (``FAILED``, not already corrected by a
    row that did not fail) and the rows not correctable yet (outcome unknown or in flight)."""
    rows = ledger.rows(batch_id=batch_id, order="row_number")
    failed = [r for r in rows if r.status is Status.FAILED]
    refused = ledger.corrections_refused({i: r.reference for i, r in enumerate(failed)})
    pending = (Status.UNKNOWN, Status.SENDING, Status.QUEUED)
    return (
        [r for i, r in enumerate(failed) if i not in refused],
        [r for r in rows if r.status in pending],
    )


def _correction_line(row: LedgerRow) -> list[Any]:
    return [
        row.kind.value,
        row.first_name or "",
        row.title or "",
        row.gender or "",
        row.email or "",
        row.mobile or "",
        row.card_id or "",
        row.amount,
        row.reason,
        row.reference,
    ]


def correction_file(ledger: Ledger, batch_id: str) -> bytes:
    """The batch's failed rows as a pre-filled correction file (CSV): fix and upload it; each
    row pays at most once in place of the row named in ``corrects``."""
    failed, _ = correction_rows(ledger, batch_id)
    return to_csv(CORRECTION_HEADER, [_correction_line(r) for r in failed])


def report_csv(ledger: Ledger, batch_id: str) -> bytes:
    """The per-row report as CSV (formula-neutralised; amounts as plain numbers)."""
    return to_csv(REPORT_HEADER, report_rows(ledger, batch_id))


def report_xlsx(ledger: Ledger, batch_id: str) -> bytes:
    """The per-row report as XLSX (formula-neutralised; amounts as numbers)."""
    return to_xlsx(REPORT_HEADER, report_rows(ledger, batch_id), sheet_title="Report")


# --- the worker ----------------------------------------------------------------------------------


class RateLimiter:
    """At most ``rate`` permits per second, evenly spaced, shared by every worker of a job."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic):
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        """Block until the caller may send; False if ``stop`` was set meanwhile."""
        if not self._interval:
            return not stop.is_set()
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self._interval
        delay = slot - now
        return not stop.wait(delay) if delay > 0 else not stop.is_set()


class GroupCommit:
    """Commits the moves of a job's threads together: one transaction for all that are waiting.

    Each caller of ``transition`` (same signature as ``Ledger.transition``) waits until its move
    is committed and gets its row (or its ``StatusConflict``) only then, exactly as with the
    ledger: a claim is durable before its call is made, an outcome before anyone is told. No
    timer: whoever finds nobody committing commits everything waiting, in one
    ``Ledger.transition_many``; moves arriving meanwhile form the next group, which the first
    of their callers commits (woken by the one before). Each waiting caller is woken only once,
    when its move is committed or its turn to commit has come. If the group's
    transaction fails, nothing of it was written and each move is retried on its own with
    ``Ledger.transition``, so one bad value (and the caller's fallbacks for it) cannot cost the
    others their outcome.
    """

    def __init__(self, ledger: Ledger, max_group: int = 64):
        self.ledger = ledger
        self.max_group = max_group
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._committing = False  # a caller is committing; the others wait on their own signal
        self.groups = 0  # transactions committed (for tests and benchmarks)

    def transition(self, reference: str, to_status: Status, **kwargs: Any) -> LedgerRow:
        pending = _Pending(Move(reference, to_status, **kwargs))
        with self._lock:
            self._waiting.append(pending)
            leads = not self._committing
            self._committing = True
        if not leads:
            # Woken once: either its move is committed, or it is to commit the next group. Only
            # the callers concerned are woken, not every waiting thread.
            pending.signal.acquire()
            if pending.done:
                return pending.result()
        try:
            while not pending.done:
                with self._lock:
                    group = self._waiting[: self.max_group]
                    del self._waiting[: self.max_group]
                try:
                    self._commit(group)
                finally:
                    for other in group:
                        if not other.done:  # only if _commit itself was interrupted
                            other.error = RuntimeError("the group commit was interrupted")
                            other.done = True
                        if other is not pending:
                            other.signal.release()
        finally:
            with self._lock:
                if self._waiting:
                    self._waiting[0].signal.release()  # it commits what came meanwhile
                else:
                    self._committing = False
        return pending.result()

    def _commit(self, group: list[_Pending]) -> None:
        try:
            results = self.ledger.transition_many([p.move for p in group])
            self.groups += 1
        except Exception:
            log.warning("a group of %d outcomes could not be committed together", len(group))
            for pending in group:  # one by one: each gets its own row or its own error
                move = pending.move
                try:
                    pending.row = self.ledger.transition(
                        move.reference,
                        move.to_status,
                        actor=move.actor,
                        from_statuses=move.from_statuses,
                        detail=move.detail,
                        result=move.result,
                        enkash_code=move.enkash_code,
                        enkash_message=move.enkash_message,
                        exchanges=move.exchanges,
                    )
                except Exception as error:
                    pending.error = error
                pending.done = True
            return
        for pending, result in zip(group, results, strict=True):
            if isinstance(result, StatusConflict):
                pending.error = result
            else:
                pending.row = result
            pending.done = True


def _taken_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class _Pending:
    move: Move
    row: LedgerRow | None = None
    error: BaseException | None = None
    done: bool = False
    # Released once to wake its caller (a lock: the cheapest one-shot signal between threads).
    signal: threading.Lock = field(default_factory=_taken_lock)

    def result(self) -> LedgerRow:
        """The committed row, or the error the move met."""
        if self.error is not None:
            raise self.error
        assert self.row is not None
        return self.row


NEXT_QUEUED = "(the next queued row)"  # what the feeder hands out on PostgreSQL


class _Feeder:
    """Hands each queued reference to one thread of this process (the CAS guards the rest).

    On PostgreSQL it hands out ``NEXT_QUEUED`` instead, and ``claim`` takes the batch's next
    queued row with ``FOR UPDATE SKIP LOCKED``: workers in several processes then each get a
    different row rather than all racing for the first ones.
    """

    def __init__(self, ledger: Ledger, batch_id: str, chunk: int = 256):
        self._ledger = ledger
        self._batch_id = batch_id
        self._chunk = chunk
        self._queue: deque[str] = deque()
        self._given: set[str] = set()
        self._lock = threading.Lock()
        self._exhausted = False
        self._skip_locked = ledger.engine.dialect.name == "postgresql"
        #: Whether a thread may claim its next row with its last outcome (a named reference and a
        #: CAS); PostgreSQL's SKIP LOCKED claim picks the row in its own transaction instead.
        self.claims_ahead = not self._skip_locked

    def claim(
        self, reference: str, *, actor: str, group: GroupCommit | None = None
    ) -> tuple[str, LedgerRow | None] | None:
        """Move the row to SENDING for this caller: (the reference claimed, its row if known),
        or ``None``. With ``group``, the claim is committed together with other threads' moves
        (still before this caller sends anything)."""
        if reference is NEXT_QUEUED:
            claimed = self._ledger.claim_next_queued(self._batch_id, actor=actor)
            if claimed is None:
                self._exhausted = True
                return None
            return claimed.reference, claimed
        if group is None:
            return (reference, None) if self._ledger.claim(reference, actor=actor) else None
        try:
            row = group.transition(
                reference,
                Status.SENDING,
                actor=actor,
                from_statuses=(Status.QUEUED,),
                detail="claimed for sending",
            )
        except StatusConflict:
            return None  # another worker has it, or it was cancelled
        return reference, row

    def next(self) -> str | None:
        if self._skip_locked:
            return None if self._exhausted else NEXT_QUEUED
        with self._lock:
            while not self._queue:
                if self._exhausted:
                    return None
                fresh = [
                    ref
                    for ref in self._ledger.next_queued(self._batch_id, self._chunk)
                    if ref not in self._given
                ]
                if not fresh:
                    self._exhausted = True
                    return None
                self._queue.extend(fresh)
            reference = self._queue.popleft()
            self._given.add(reference)
            return reference


class _Job:
    """One run of one batch in this process: a coordinator thread and its worker threads."""

    def __init__(
        self,
        ledger: Ledger,
        new_client: Callable[[], EnkashClient],
        settings: Settings,
        batch_id: str,
        actor: str,
        absence_grace: timedelta,
        in_flight_limit: timedelta,
    ):
        self.ledger = ledger
        self.new_client = new_client
        self.settings = settings
        self.batch_id = batch_id
        self.actor = actor
        self.stop = threading.Event()
        self._not_sent_streak = 0
        self._streak_lock = threading.Lock()
        self._later: list[str] = []  # absent, but looked up too soon after the last attempt
        self._later_lock = threading.Lock()
        self._claimed: set[str] = set()  # rows this job's workers claimed for sending
        self._claimed_lock = threading.Lock()
        self._feeder = _Feeder(self.ledger, batch_id)
        # Claims and outcomes of this job's threads are committed in groups (GroupCommit).
        self._group = GroupCommit(self.ledger)
        self._pool = ThreadPoolExecutor(1)  # the send phase's commit threads (``_phase``)
        self.absence_grace = absence_grace
        self.in_flight_limit = in_flight_limit
        self.thread = threading.Thread(target=self._run, name=f"batch-{batch_id}", daemon=True)

    # -- coordinator -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            record = self.ledger.get_batch(self.batch_id)
            if record is None or record.state != "running":
                return
            workers = max(1, min(MAX_CONCURRENCY, record.concurrency))
            limiter = RateLimiter(record.rate_limit)
            # 1. Settle what a crash (or an earlier run) left unknown, before anything is resent.
            unknown = self._unknown()
            self._phase(min(workers, len(unknown)), limiter, self._settle_one, self._feed(unknown))
            self._take_later()  # step 3 looks at every unknown row again
            # 2. Send the queue, with no more threads than rows (a small file starts quickly).
            queued = self.ledger.batch_counts(self.batch_id)[Status.QUEUED]
            self._phase(min(workers, queued), limiter, None, self._feeder)
            # Rows this job claimed whose outcome could not be written are not in flight any more:
            # they become UNKNOWN now, so the wait below is only for other workers' calls.
            self._recover_stranded()
            self._wait_for_in_flight()
            # 3. Settle what is still unknown (timeouts, 5xx, rows from step 1 looked up too soon
            # after their last attempt, rows whose outcome could not be written): lookups, then
            # same-reference resends of proven absences.
            self._recover_stranded()
            self._settle(workers, limiter, self._unknown())
            self._finish(workers, limiter)
        except Exception:
            log.exception("batch %s: the worker stopped on an unexpected error", self.batch_id)
            self.ledger.update_batch(
                self.batch_id,
                from_states=("running",),
                state="paused",
                note="paused: the worker stopped on an unexpected error; resume to continue",
            )

    def _settle(self, workers: int, limiter: RateLimiter, references: list[str]) -> None:
        """Look these rows up (and resend proven absences); again, a grace apart, for those
        looked up too soon after their last attempt."""
        self._phase(
            min(workers, len(references)), limiter, self._settle_one, self._feed(references)
        )
        for _ in range(SETTLE_ROUNDS):
            later = self._take_later()
            if not later or not self._pause_for(self.absence_grace.total_seconds()):
                break
            self._phase(min(workers, len(later)), limiter, self._settle_one, self._feed(later))

    def _recover_stranded(self) -> list[str]:
        """Rows of this batch left ``SENDING`` that nobody is sending any more become ``UNKNOWN``.

        A row this job claimed is no longer in flight once its workers have returned (its outcome
        could not be written); any other row is in flight elsewhere (a job resumed meanwhile,
        another process) until it has been ``SENDING`` longer than a call can take.
        """
        now = datetime.now(UTC)
        with self._claimed_lock:
            claimed = set(self._claimed)
        moved = []
        for row in self.ledger.rows(statuses=[Status.SENDING], batch_id=self.batch_id):
            if row.reference not in claimed and now - row.updated_at < self.in_flight_limit:
                continue
            try:
                self.ledger.transition(
                    row.reference,
                    Status.UNKNOWN,
                    actor=self.actor,
                    from_statuses=(Status.SENDING,),
                    detail="left in flight: its outcome was not recorded, so it is settled by "
                    "lookup before the batch finishes",
                )
            except StatusConflict:
                continue  # its outcome was recorded meanwhile
            except Exception:
                log.exception("batch %s: could not recover %s", self.batch_id, row.reference)
                continue
            moved.append(row.reference)
        return moved

    def _wait_for_in_flight(self) -> None:
        """Rows of the batch still SENDING belong to another worker (another process, or a job
        of this one still finishing after a pause): wait for their outcome, or, if that worker
        died (stale heartbeat), for them to become UNKNOWN, so step 3 settles them too."""
        stale = timedelta(seconds=self.settings.points_desk_worker_stale_seconds)
        while self.ledger.batch_counts(self.batch_id)[Status.SENDING]:
            self.ledger.recover_interrupted(actor="system", stale_after=stale)
            # A row SENDING for longer than any call can take is in flight nowhere, even if the
            # worker that claimed it is alive (its thread died, or it was claimed by hand).
            self._recover_stranded()
            if not self._pause_for(0.5):
                return

    def _unknown(self) -> list[str]:
        rows = self.ledger.rows(statuses=[Status.UNKNOWN], batch_id=self.batch_id)
        return [r.reference for r in rows if r.enkash_code != allocations.REFERENCE_MISMATCH]

    @staticmethod
    def _feed(references: list[str]) -> Any:
        pending = deque(references)
        lock = threading.Lock()

        class Feed:
            def next(self) -> str | None:
                with lock:
                    return pending.popleft() if pending else None

        return Feed()

    def _take_later(self) -> list[str]:
        with self._later_lock:
            later, self._later = self._later, []
        return later

    def _pause_for(self, seconds: float) -> bool:
        """Wait (heartbeating) for EnKash to finish what may still be in progress; False if
        the batch was paused or cancelled meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.stop.wait(min(left, HEARTBEAT_SECONDS))
            self._heartbeat()
        return False

    def _phase(
        self,
        workers: int,
        limiter: RateLimiter,
        work: Callable[[EnkashClient, str], None] | None,
        feed: Any,
    ) -> None:
        """Run ``workers`` threads over ``feed``, each doing ``work`` per reference (``None``:
        the send phase, ``_sender``), heartbeating until all have returned. No threads (and no
        clients) for no work."""
        if self.stop.is_set() or workers < 1:
            return
        threads = [
            threading.Thread(
                target=self._worker if work is not None else self._sender,
                args=(limiter, work, feed) if work is not None else (limiter, feed),
                name=f"batch-{self.batch_id}-{n}",
                daemon=True,
            )
            for n in range(workers)
        ]
        if work is None:
            # The senders' claims and outcomes are committed on these threads (``_sender``).
            self._pool = ThreadPoolExecutor(
                2 * workers, thread_name_prefix=f"commit-{self.batch_id}"
            )
        for thread in threads:
            thread.start()
        last_beat = 0.0
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.2)
                if thread.is_alive():
                    break
            if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                last_beat = time.monotonic()
                self._heartbeat()
        if work is None:
            self._pool.shutdown(wait=True)  # every sender waited for its own commits already

    def _heartbeat(self) -> None:
        """Say this worker is alive; notice a pause or cancel made by another tab or process."""
        try:
            self.ledger.update_batch(
                self.batch_id, from_states=("running",), heartbeat_at=datetime.now(UTC)
            )
            record = self.ledger.get_batch(self.batch_id)
        except Exception:
            log.exception("batch %s: heartbeat failed", self.batch_id)
            return
        if record is None or record.state != "running":
            self.stop.set()

    def _finish(self, workers: int, limiter: RateLimiter) -> None:
        """Mark the batch finished once no row is queued or in flight.

        Rows still ``SENDING`` are waited for, and settled here once nobody is sending them. If
        some are still in flight after a call's longest time, the batch is left unfinished (its
        worker gone, the page offers to resume) rather than called finished.
        """
        deadline = time.monotonic() + self.in_flight_limit.total_seconds() + STALE_AFTER_SECONDS
        while not self.stop.is_set():
            counts = self.ledger.batch_counts(self.batch_id)
            if counts[Status.QUEUED]:
                return
            if not counts[Status.SENDING]:
                break
            recovered = self._recover_stranded()
            if recovered:
                self._settle(workers, limiter, recovered)
            elif time.monotonic() > deadline:
                self.ledger.update_batch(
                    self.batch_id,
                    from_states=("running",),
                    note=f"not finished: {counts[Status.SENDING]} row(s) still being sent; "
                    "resume to settle them",
                )
                return
            elif not self._pause_for(HEARTBEAT_SECONDS):
                return
        if self.stop.is_set():
            return
        unknown = counts[Status.UNKNOWN]
        note = (
            f"finished; {unknown} row(s) have an unknown outcome and need settling"
            if unknown
            else "finished"
        )
        self.ledger.update_batch(
            self.batch_id,
            from_states=("running",),
            state="finished",
            finished_at=datetime.now(UTC),
            note=note,
        )

    # -- workers -----------------------------------------------------------------------------

    def _worker(
        self, limiter: RateLimiter, work: Callable[[EnkashClient, str], None], feed: Any
    ) -> None:
        client = self.new_client()
        try:
            while not self.stop.is_set():
                reference = feed.next()
                if reference is None or not limiter.wait(self.stop):
                    return
                try:
                    work(client, reference)
                except Exception:
                    log.exception("batch %s: row %s failed unexpectedly", self.batch_id, reference)
        finally:
            client.close()

    def _sender(self, limiter: RateLimiter, feed: _Feeder) -> None:
        """A sending thread, pipelined so it never waits for the ledger between two calls.

        While a row's call is in flight, the claim of the thread's next row is committed (the
        claim is durable before that row's call, as always) and the outcome of its last row is
        committed (the row stays ``SENDING`` until then, which is what a crash leaves for a lookup
        to settle either way). Both go through the job's group commit, on the job's commit
        threads. On PostgreSQL the next row is claimed after the call instead (``SKIP LOCKED``
        picks it in a transaction of its own). A row claimed and not sent because the batch
        stopped first goes back to the queue (``Ledger.release_unsent``).
        """
        client = self.new_client()
        held = allocations.HeldExchanges(client)
        current: tuple[str, LedgerRow | None] | None = None  # claimed, to send next
        claiming: Future | None = None  # the claim of the row after it
        recording: Future | None = None  # the outcome of the last row sent
        try:
            current = self._claim_next(feed)
            while current is not None and not self.stop.is_set():
                if client.login_refused:
                    self._pause(LOGIN_REFUSED_PAUSE)
                    break
                if not limiter.wait(self.stop):
                    break
                following = feed.next() if feed.claims_ahead and not self.stop.is_set() else None
                if following is not None:
                    claiming = self._pool.submit(self._claim, following)
                reference, row = current
                current = None  # from here on it may be sent: never released
                try:
                    outcome = allocations.call_claimed(
                        self.ledger, client, reference, actor=self.actor, row=row
                    )
                except Exception:
                    log.exception("batch %s: row %s failed unexpectedly", self.batch_id, reference)
                else:
                    kept = held.take()
                    if recording is not None:
                        recording.result()  # long since committed: one outcome in hand at most
                    recording = self._pool.submit(self._record, outcome, kept, held)
                    if not outcome.confirmed:
                        # A failure may pause the batch (EnKash unreachable, sign-in refused):
                        # known before the next call, as when each outcome was waited for.
                        recording.result()
                held.flush()
                if claiming is not None:
                    current, claiming = claiming.result(), None
                if current is None:
                    current = self._claim_next(feed)
        finally:
            if recording is not None:
                recording.result()
            if claiming is not None:
                current = claiming.result() or current
            if current is not None:
                self._release(current[0])
            held.flush()
            client.close()

    def _claim(self, reference: str) -> tuple[str, LedgerRow | None] | None:
        """Claim this row for the calling sender (on a commit thread): (reference, row), or
        ``None`` if someone else has it (or it was cancelled)."""
        try:
            return self._claim_one(reference)
        except Exception:
            log.exception("batch %s: could not claim %s", self.batch_id, reference)
            return None  # still QUEUED: the batch is not finished until it is sent

    def _claim_one(self, reference: str) -> tuple[str, LedgerRow | None] | None:
        """Claim this row through the group commit and remember it as this job's."""
        claimed = self._feeder.claim(reference, actor=self.actor, group=self._group)
        if claimed is not None:
            with self._claimed_lock:
                self._claimed.add(claimed[0])
        return claimed

    def _claim_next(self, feed: _Feeder) -> tuple[str, LedgerRow | None] | None:
        """Claim the feed's next row that nobody else has, or ``None`` once the feed is empty or
        the batch stopped."""
        while not self.stop.is_set():
            reference = feed.next()
            if reference is None:
                return None
            claimed = self._claim_one(reference)
            if claimed is not None:
                return claimed
            # another worker (thread, process or replica) has it, or it was cancelled
        return None

    def _release(self, reference: str) -> None:
        """Hand back a row claimed ahead and never sent (nothing was called for it)."""
        try:
            released = self.ledger.release_unsent(
                reference,
                actor=self.actor,
                detail="claimed, not sent: the batch stopped first",
                cancelled_code=CANCELLED,
                cancelled_message=CANCELLED_MESSAGE,
            )
        except Exception:
            # Left SENDING: once this job's threads are done it is settled by lookup, as any row
            # whose outcome is not known (_recover_stranded), so it is still sent at most once.
            log.exception("batch %s: could not hand %s back", self.batch_id, reference)
            return
        if released is not None:
            with self._claimed_lock:
                self._claimed.discard(reference)

    def _record(
        self, outcome: allocations.Called, kept: list[Exchange], held: allocations.HeldExchanges
    ) -> None:
        """Commit one row's outcome (on a commit thread), with its call's exchanges; pause the
        batch if EnKash keeps being unreachable or refuses the sign-in."""
        try:
            row, _ = outcome.record(allocations.WithExchanges(self._group, kept, held))
        except Exception:
            log.exception("batch %s: an outcome could not be recorded", self.batch_id)
            return
        with self._streak_lock:
            if row.status is Status.FAILED and row.enkash_code == allocations.NOT_SENT:
                self._not_sent_streak += 1
                streak = self._not_sent_streak
            else:
                self._not_sent_streak = streak = 0
        if streak >= NOT_SENT_PAUSE_AFTER:
            self._pause("paused: EnKash could not be reached; resume when it is back")
        elif row.enkash_code == allocations.LOGIN_REFUSED:
            self._pause(LOGIN_REFUSED_PAUSE)

    def _settle_one(self, client: EnkashClient, reference: str) -> None:
        grace = self.absence_grace
        try:
            settlement = allocations.settle(
                self.ledger, client, reference, actor=self.actor, absence_grace=grace
            )
            if settlement.outcome is SettleOutcome.ABSENT:
                # Proven absent: resend with the same reference (resend looks it up once more).
                allocations.resend(
                    self.ledger, client, reference, actor=self.actor, absence_grace=grace
                )
            elif settlement.outcome in (SettleOutcome.NOT_YET, SettleOutcome.CHANGED):
                with self._later_lock:
                    self._later.append(reference)
        except (EnkashError, StatusConflict) as error:
            # A failed lookup proves nothing: the row stays UNKNOWN for the Reconcile page.
            log.warning("batch %s: %s left unsettled: %s", self.batch_id, reference, error)

    def _pause(self, note: str) -> None:
        self.ledger.update_batch(self.batch_id, from_states=("running",), state="paused", note=note)
        self.stop.set()


class BatchRunner:
    """This process's background sender: at most one job per batch.

    ``new_client`` makes an EnKash client a job's worker thread owns (``Desk.new_client``).
    """

    def __init__(self, ledger: Ledger, new_client: Callable[[], EnkashClient], settings: Settings):
        self._ledger = ledger
        self._new_client = new_client
        self._settings = settings
        #: How long after a row's last attempt a lookup that finds nothing counts as proof of
        #: absence (allocations.ABSENCE_GRACE); tests on the sandbox shorten it.
        self.absence_grace: timedelta = allocations.ABSENCE_GRACE
        #: How long a row may be ``SENDING`` before it counts as abandoned: longer than one call
        #: can take (a sign-in and the call, each connect + read, and one resend after a 401).
        self.in_flight_limit = timedelta(seconds=4 * (settings.enkash_timeout_seconds + 5))
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def start(self, batch_id: str, *, actor: str = "system") -> bool:
        """Run the batch in the background; False if this process is already running it."""
        with self._lock:
            job = self._jobs.get(batch_id)
            if job is not None and job.thread.is_alive() and not job.stop.is_set():
                return False
            # A job still finishing its in-flight rows after a pause does not block a resume:
            # the new job only claims rows that are still QUEUED (the CAS decides).
            job = _Job(
                self._ledger,
                self._new_client,
                self._settings,
                batch_id,
                actor,
                self.absence_grace,
                self.in_flight_limit,
            )
            self._jobs[batch_id] = job
            job.thread.start()
            return True

    def is_running(self, batch_id: str) -> bool:
        with self._lock:
            job = self._jobs.get(batch_id)
            return job is not None and job.thread.is_alive()

    def stop(self, batch_id: str) -> None:
        """Stop claiming rows of this batch (rows in flight finish)."""
        with self._lock:
            job = self._jobs.get(batch_id)
        if job is not None:
            job.stop.set()

    def wait(self, batch_id: str, timeout: float | None = None) -> bool:
        """Wait for this process's job of the batch to end; True if it has."""
        with self._lock:
            job = self._jobs.get(batch_id)
        if job is None:
            return True
        job.thread.join(timeout)
        return not job.thread.is_alive()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every job and wait for rows in flight (Desk.close, sandbox reset)."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.stop.set()
        deadline = time.monotonic() + timeout
        for job in jobs:
            job.thread.join(max(0.0, deadline - time.monotonic()))
