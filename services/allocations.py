"""The use cases: submit one allocation, settle an unknown outcome, resend a proven-absent one.

Every function here follows the same order so that nothing is sent twice and nothing is lost:
the intent is committed to the ledger before a byte goes to EnKash, and the outcome is committed
before anyone is told about it. An outcome that cannot be known becomes ``UNKNOWN`` and is settled
by looking the reference up at EnKash; only a lookup that proves it absent allows a resend, and a
resend reuses the same reference.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from services.enkash import (
    BusinessRefusal,
    EnkashClient,
    EnkashError,
    LoginRefused,
    NotSent,
    OutcomeUnknown,
    ReferenceMismatch,
)
from services.ledger import DuplicateReference, Ledger, LedgerRow, StatusConflict
from services.models import Allocation, AllocationResult, Employee, Kind, Status

log = logging.getLogger("points_desk.allocations")

REFERENCE_MISMATCH = "REFERENCE_MISMATCH"
NOT_SENT = "NOT_SENT"
LOGIN_REFUSED = "LOGIN_REFUSED"


def new_reference(prefix: str = "PD") -> str:
    """A fresh ``uniqueReferenceNumber``: sortable by time, unguessable, 24 characters."""
    stamp = datetime.now(UTC).strftime("%y%m%d%H%M%S")
    return f"{prefix}{stamp}{secrets.token_hex(4).upper()}"


def batch_reference(batch_id: str, row_number: int) -> str:
    """The reference of one batch row: derived, so a resumed batch can never mint a second one."""
    return f"{batch_id}-{row_number:06d}"


# Transaction-lookup statuses (undocumented by EnKash; see ENKASH_API.md) and what they prove.
_LOOKUP_SUCCEEDED = frozenset({"SUCCESS", "SUCCEEDED", "SUCCESSFUL", "COMPLETED"})
_LOOKUP_FAILED = frozenset({"FAILED", "FAILURE", "DECLINED", "REJECTED", "REVERSED"})


@dataclass(frozen=True)
class Outcome:
    """What happened to one allocation, in the ledger's words and a manager's."""

    row: LedgerRow
    headline: str
    explanation: str
    replayed: bool = False  # the reference was already in the ledger: nothing new was sent

    @property
    def status(self) -> Status:
        return self.row.status

    @property
    def reference_matched(self) -> bool:
        return self.row.status is Status.SUCCEEDED and bool(self.row.transaction_id)


def describe(row: LedgerRow, *, replayed: bool = False) -> Outcome:
    """Turn a ledger row into the words the page shows."""
    amount = f"{row.amount:,.2f}"
    verb = "debited from" if row.kind is Kind.DEBIT else "credited to"
    who = row.first_name or row.email or row.card_id or "the card"
    if row.status is Status.SUCCEEDED:
        return Outcome(row, f"{amount} points {verb} {who}", "EnKash confirmed it.", replayed)
    if row.status is Status.FAILED:
        reason = row.enkash_message or "EnKash refused it."
        if row.enkash_code == NOT_SENT:
            headline = "Not sent: EnKash could not be reached"
            reason = "Nothing was sent and no points moved. Try again in a moment."
        elif row.enkash_code == LOGIN_REFUSED:
            headline = "Not sent: EnKash refused the sign-in"
            reason = (
                "Nothing was sent. The EnKash credentials need attention; Points Desk will not "
                "retry a refused sign-in because three refusals lock the partner account."
            )
        else:
            headline = "EnKash refused this transaction"
        return Outcome(row, headline, reason, replayed)
    if row.status is Status.UNKNOWN:
        if row.enkash_code == REFERENCE_MISMATCH:
            return Outcome(
                row,
                "EnKash answered for a different reference",
                "The reply did not carry this transaction's reference, so it is not counted as "
                "a success. It is listed on the Reconcile page for investigation.",
                replayed,
            )
        return Outcome(
            row,
            "Outcome unknown: EnKash did not give a readable answer",
            "The request may or may not have gone through. It will be settled by looking the "
            "reference up at EnKash, and it will not be sent again unless EnKash proves it never "
            "arrived. Do not retry it by hand.",
            replayed,
        )
    if row.status is Status.SENDING:
        return Outcome(row, "Being sent to EnKash", "Waiting for EnKash's answer.", replayed)
    return Outcome(row, "Queued", "Waiting its turn in the batch.", replayed)


def allocation_from_row(row: LedgerRow) -> Allocation:
    """Rebuild what was sent from the ledger row, for a resend with the same reference."""
    employee = None
    if row.email and row.mobile and row.title and row.first_name and row.gender:
        employee = Employee(
            email=row.email,
            mobile=row.mobile,
            title=row.title,
            first_name=row.first_name,
            gender=row.gender,
        )
    return Allocation.model_validate(
        {
            "reference": row.reference,
            "kind": row.kind,
            "amount": row.amount,
            "employee": employee,
            "card_id": row.card_id,
            "reason": row.reason or "",
        },
        context={"max_points": row.amount},
    )


def _send(ledger: Ledger, client: EnkashClient, allocation: Allocation, actor: str) -> LedgerRow:
    """Call EnKash for a row already in ``SENDING`` and commit the outcome."""
    reference = allocation.reference
    started = time.monotonic()
    try:
        result: AllocationResult = client.allocate(allocation)
    except BusinessRefusal as refusal:
        return ledger.transition(
            reference,
            Status.FAILED,
            actor=actor,
            from_statuses=(Status.SENDING,),
            detail="EnKash refused the transaction",
            enkash_code=str(refusal.code) if refusal.code is not None else None,
            enkash_message=refusal.message,
        )
    except LoginRefused as refusal:
        return ledger.transition(
            reference,
            Status.FAILED,
            actor=actor,
            from_statuses=(Status.SENDING,),
            detail="not sent: EnKash refused the sign-in",
            enkash_code=LOGIN_REFUSED,
            enkash_message=refusal.message,
        )
    except NotSent as error:
        return ledger.transition(
            reference,
            Status.FAILED,
            actor=actor,
            from_statuses=(Status.SENDING,),
            detail="not sent: EnKash could not be reached",
            enkash_code=NOT_SENT,
            enkash_message=error.message,
        )
    except ReferenceMismatch as error:
        return ledger.transition(
            reference,
            Status.UNKNOWN,
            actor=actor,
            from_statuses=(Status.SENDING,),
            detail=f"reference mismatch: {error.message}",
            enkash_code=REFERENCE_MISMATCH,
            enkash_message=error.message,
        )
    except (OutcomeUnknown, EnkashError) as error:
        return ledger.transition(
            reference,
            Status.UNKNOWN,
            actor=actor,
            from_statuses=(Status.SENDING,),
            detail=f"outcome unknown: {error.message}",
            enkash_message=error.message,
        )
    except Exception as error:
        log.exception("unexpected error while allocating %s", reference)
        return ledger.transition(
            reference,
            Status.UNKNOWN,
            actor=actor,
            from_statuses=(Status.SENDING,),
            detail=f"outcome unknown: unexpected {type(error).__name__}",
        )
    log.info("allocated %s in %.0f ms", reference, (time.monotonic() - started) * 1000)
    return ledger.transition(
        reference,
        Status.SUCCEEDED,
        actor=actor,
        from_statuses=(Status.SENDING,),
        detail="EnKash confirmed; reference matched",
        result=result,
    )


def submit(
    ledger: Ledger,
    client: EnkashClient,
    allocation: Allocation,
    *,
    operator: str,
    session_id: str | None = None,
) -> Outcome:
    """Record the intent, call EnKash once, record the outcome.

    A reference that is already in the ledger is never sent again: the existing row's outcome is
    returned (``replayed``), which is what a double click or a rerun of the same form gets.
    """
    try:
        ledger.record_intent(allocation, operator=operator, session_id=session_id)
    except DuplicateReference:
        existing = ledger.get(allocation.reference)
        assert existing is not None  # the unique constraint just said it exists
        return describe(existing, replayed=True)
    return describe(_send(ledger, client, allocation, operator))


def send_claimed(ledger: Ledger, client: EnkashClient, reference: str, *, actor: str) -> LedgerRow:
    """Send one row this caller has already claimed (``SENDING``); used by the batch worker."""
    row = ledger.get(reference)
    if row is None or row.status is not Status.SENDING:
        raise StatusConflict(f"{reference} is not claimed for sending")
    return _send(ledger, client, allocation_from_row(row), actor)


@dataclass(frozen=True)
class Settlement:
    """The result of checking one unknown reference with EnKash."""

    reference: str
    found: bool
    row: LedgerRow
    message: str


def settle(ledger: Ledger, client: EnkashClient, reference: str, *, actor: str) -> Settlement:
    """Look an ``UNKNOWN`` reference up at EnKash and record what the lookup proves.

    Found: the row becomes ``SUCCEEDED`` with EnKash's ids. Absent: the row stays ``UNKNOWN`` and
    the audit trail says so; ``resend`` may then be offered. A failed lookup proves nothing and
    raises the client's error.
    """
    row = ledger.get(reference)
    if row is None:
        raise KeyError(reference)
    if row.status is not Status.UNKNOWN:
        return Settlement(reference, row.status is Status.SUCCEEDED, row, "Already settled.")
    record = client.find_transaction(reference)
    if record is None:
        ledger.note(reference, actor=actor, detail="lookup: EnKash has no such reference")
        return Settlement(
            reference,
            False,
            ledger.get(reference),  # type: ignore[arg-type]
            "EnKash has no transaction with this reference: it never arrived. It can be resent "
            "with the same reference.",
        )
    reported = record.status.strip().upper()
    if reported in _LOOKUP_FAILED:
        # EnKash has the attempt but it did not go through: nothing moved.
        failed = ledger.transition(
            reference,
            Status.FAILED,
            actor=actor,
            from_statuses=(Status.UNKNOWN,),
            detail=f"settled by lookup: EnKash reports the transaction {reported}",
            enkash_code=reported,
            enkash_message=f"EnKash reports this transaction as {reported}",
        )
        return Settlement(reference, True, failed, f"EnKash has it as {reported}: no points moved.")
    if reported not in _LOOKUP_SUCCEEDED:
        # Neither a success nor a failure we know: prove nothing, keep it for a person to look at.
        ledger.note(
            reference,
            actor=actor,
            detail=f"lookup: EnKash reports status {reported or '(none)'}; left unsettled",
        )
        return Settlement(
            reference,
            False,
            ledger.get(reference),  # type: ignore[arg-type]
            f"EnKash has this reference with status {reported or '(none)'}, which Points Desk "
            "cannot read as a success or a failure. It stays unsettled; ask EnKash.",
        )
    settled = ledger.transition(
        reference,
        Status.SUCCEEDED,
        actor=actor,
        from_statuses=(Status.UNKNOWN,),
        detail=f"settled by lookup: EnKash transaction {record.transaction_id}",
        result=AllocationResult(
            reference=reference,
            card_id=record.card_id,
            transaction_id=record.transaction_id,
            balance_after=record.balance_after,  # None when the lookup does not report it
        ),
    )
    return Settlement(reference, True, settled, "EnKash has it: the transaction went through.")


def resend(ledger: Ledger, client: EnkashClient, reference: str, *, actor: str) -> Outcome:
    """Resend an ``UNKNOWN`` row with the same reference, after a fresh lookup proves it absent.

    The lookup is repeated here, immediately before the claim, so a resend can never follow a
    stale "absent". Rows whose reply carried another reference are never resent automatically.
    """
    row = ledger.get(reference)
    if row is None:
        raise KeyError(reference)
    if row.status is not Status.UNKNOWN:
        return describe(row, replayed=True)
    if row.enkash_code == REFERENCE_MISMATCH:
        raise StatusConflict("a reference mismatch is investigated, not resent")
    settlement = settle(ledger, client, reference, actor=actor)
    if settlement.found:
        return describe(settlement.row)
    if not ledger.claim(reference, actor=actor, from_statuses=(Status.UNKNOWN,)):
        return describe(ledger.get(reference), replayed=True)  # type: ignore[arg-type]
    return describe(_send(ledger, client, allocation_from_row(row), actor))
