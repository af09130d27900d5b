"""Maker-checker: large debits and batches wait for a second person's approval before sending.

A debit above ``POINTS_DESK_APPROVAL_DEBIT_THRESHOLD`` is not sent (0 means every one); nor is
a batch that moves more than ``POINTS_DESK_APPROVAL_BATCH_THRESHOLD`` points in all, or that
holds any one debit above the debit threshold (``batch_approval_reasons`` says which).
``request_debit`` writes an approval request and the debit's intent to the ledger as ``QUEUED``
under the reference minted when the form was shown, with the maker as its operator. An approver
who is not the maker then:

* ``approve``: the row gets ``approved_by``, is claimed and sent once, with its original
  reference; its audit trail shows the maker's intent, the approval and the outcome.
* ``reject`` (a comment is required): the row moves ``QUEUED -> FAILED`` and nothing is sent.

Batches use the same requests (``request_batch`` / ``approve`` / ``reject`` / ``is_approved``):
approving one sends nothing itself; the batch runner checks ``is_approved`` before starting.
A decision is a compare-and-set on the request, so two approvers racing cannot both decide.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services import numbers
from services.allocations import (
    Outcome,
    debit_needs_approval,
    describe,
    figure,
    send_claimed,
)
from services.config import Settings
from services.enkash import EnkashClient
from services.errors import Conflict, InvalidInput, NotFound, PointsDeskError
from services.models import (
    Allocation,
    ApprovalStatus,
    AuditKind,
    BatchState,
    Kind,
    ReasonCode,
    Status,
)
from services.store import DuplicateReference, Ledger, LedgerRow, from_cents

log = logging.getLogger("points_desk.approvals")

#: Approval subjects that are one movement (approving it sends it with its reference).
MOVEMENTS = ("debit", "credit")

REJECTED = ReasonCode.APPROVAL_REJECTED  # the enkash_code of a debit an approver refused
PENDING, APPROVED, REJECTED_STATUS = (
    ApprovalStatus.PENDING,
    ApprovalStatus.APPROVED,
    ApprovalStatus.REJECTED,
)


#: Subjects that approving sends at once: a held debit, a reversal (``services/corrections.py``).
SENT_ON_APPROVAL = ("debit", "credit", "reversal")


class ApprovalError(PointsDeskError):
    """A decision that cannot be made; the message says why in a manager's words."""


class SelfApproval(ApprovalError):
    """The maker tried to decide their own request."""


class AlreadyDecided(ApprovalError, Conflict):
    """Someone decided this request first."""


class NoSuchRequest(ApprovalError, NotFound):
    """There is no approval request with this id."""


class NotApproved(ApprovalError, Conflict):
    """Only an approved request can be sent."""


class CommentRequired(ApprovalError, InvalidInput):
    """A rejection needs a comment: the maker sees why."""


@dataclass(frozen=True)
class Approval:
    """One request for a second person's decision."""

    id: int
    subject_kind: str  # "debit", "credit", "batch" or "budget"
    subject: str  # the movement's reference, the batch id or the programme code
    amount: Decimal
    maker: str
    requested_at: datetime
    status: ApprovalStatus
    decided_by: str | None
    decided_at: datetime | None
    comment: str
    request: dict

    @property
    def pending(self) -> bool:
        return self.status == PENDING

    @property
    def reasons(self) -> list[str]:
        """Why a batch waits ("holds a debit of 99,999 points (row 2), above the ...")."""
        why = self.request.get("why") if self.subject_kind != "debit" else None
        return [str(reason) for reason in why] if isinstance(why, list) else []

    def allocation(self) -> Allocation | None:
        """The movement exactly as the maker asked for it (``None`` for a batch or budget)."""
        if self.subject_kind not in MOVEMENTS or not self.request:
            return None
        fields = {k: v for k, v in self.request.items() if k != "why"}
        return Allocation.model_validate(fields, context={"max_points": self.amount})


@dataclass(frozen=True)
class Decision:
    approval: Approval
    outcome: Outcome | None  # a debit's send outcome (or rejection); None for a batch


def _approval(m) -> Approval:
    return Approval(
        id=m["id"],
        subject_kind=m["subject_kind"],
        subject=m["subject"],
        amount=from_cents(m["amount_cents"]),  # type: ignore[arg-type]
        maker=m["maker"],
        requested_at=m["requested_at"],
        status=ApprovalStatus(m["status"]),
        decided_by=m["decided_by"],
        decided_at=m["decided_at"],
        comment=m["comment"] or "",
        request=json.loads(m["request"]) if m["request"] else {},
    )


# --- thresholds ----------------------------------------------------------------------------------


def batch_approval_reasons(
    total: Decimal, largest_debit: tuple[int, Decimal] | None, settings: Settings
) -> list[str]:
    """Why a batch waits for a second person, in a manager's words; empty when it need not.

    ``total`` is every point the batch moves (credits and debits alike); ``largest_debit`` is its
    largest debit as (row number, amount). A batch waits when its total is above the batch
    threshold, or when any one debit in it is above the debit threshold: a file is not a way
    round the rule a single debit on the Debit page follows.
    """
    reasons = []
    batch_limit = settings.points_desk_approval_batch_threshold
    if total > batch_limit:
        reasons.append(f"moves {figure(total)} points, above the {figure(batch_limit)} batch limit")
    if largest_debit is not None and debit_needs_approval(largest_debit[1], settings):
        number, amount = largest_debit
        reasons.append(
            f"holds a debit of {figure(amount)} points (row {number}), above the "
            f"{figure(settings.points_desk_approval_debit_threshold)} debit limit"
        )
    return reasons


def batch_needs_approval(
    total: Decimal, settings: Settings, largest_debit: tuple[int, Decimal] | None = None
) -> bool:
    """Whether a batch needs a second person (see ``batch_approval_reasons``)."""
    return bool(batch_approval_reasons(total, largest_debit, settings))


def largest_debit(ledger: Ledger, batch_id: str) -> tuple[int, Decimal] | None:
    """A batch's largest debit row as (row number, amount); ``None`` if it debits nothing."""
    return ledger.largest_debit(batch_id)


# --- reads ---------------------------------------------------------------------------------------


def get(ledger: Ledger, approval_id: int) -> Approval | None:
    m = ledger.approval(approval_id)
    return _approval(m) if m is not None else None


def for_subject(ledger: Ledger, subject_kind: str, subject: str) -> Approval | None:
    """The request about a debit reference (``"debit"``) or a batch id (``"batch"``)."""
    m = ledger.approval_for(subject_kind, subject)
    return _approval(m) if m is not None else None


def pending(ledger: Ledger) -> list[Approval]:
    """Requests waiting for a decision, oldest first."""
    return [_approval(m) for m in ledger.pending_approvals()]


def pending_count(ledger: Ledger) -> int:
    """How many requests wait for a decision (the number next to Approvals in the menu)."""
    return ledger.pending_approval_count()


def decided(ledger: Ledger, limit: int = 20) -> list[Approval]:
    """The latest decisions, newest first."""
    return [_approval(m) for m in ledger.decided_approvals(limit)]


def is_approved(ledger: Ledger, batch_id: str) -> bool:
    """Whether a second person approved this batch (the gate before it may start)."""
    found = for_subject(ledger, "batch", batch_id)
    return found is not None and found.status == APPROVED


# --- requests ------------------------------------------------------------------------------------


def _request(
    ledger: Ledger, subject_kind: str, subject: str, amount: Decimal, maker: str, request: dict
) -> Approval:
    """Insert a pending request; a repeat of the same subject returns the existing one."""
    # A double click or a rerun inserts nothing: the first request stands.
    ledger.request_approval(
        subject_kind,
        subject,
        amount,
        maker,
        json.dumps(request, sort_keys=True) if request else "",
    )
    found = for_subject(ledger, subject_kind, subject)
    assert found is not None
    return found


def request_debit(
    ledger: Ledger, allocation: Allocation, *, maker: str, session_id: str | None = None
) -> Outcome:
    """Hold a debit for approval: nothing is sent. Repeating it is harmless.

    The approval request is written first (with the whole allocation), then the ledger intent as
    ``QUEUED``: if the process stops in between, approving still records and sends it.
    """
    if allocation.kind is not Kind.DEBIT:
        raise ValueError("only debits wait for approval one by one")
    return _hold(
        ledger,
        allocation,
        "debit",
        maker=maker,
        session_id=session_id,
        why="above the debit approval threshold",
    )


def request_credit(
    ledger: Ledger,
    allocation: Allocation,
    *,
    maker: str,
    why: str,
    session_id: str | None = None,
) -> Outcome:
    """Hold a credit for approval (past the operator's monthly limit in its programme): nothing
    is sent. Its intent is recorded ``QUEUED`` and so reserves its points: ``BudgetExceeded``
    (the request withdrawn, nothing held) when the programme cannot cover it."""
    if allocation.kind is Kind.DEBIT:
        raise ValueError("a debit waits with request_debit")
    return _hold(ledger, allocation, "credit", maker=maker, session_id=session_id, why=why)


def _hold(
    ledger: Ledger,
    allocation: Allocation,
    subject_kind: str,
    *,
    maker: str,
    session_id: str | None,
    why: str,
) -> Outcome:
    existing = ledger.get(allocation.reference)
    if existing is not None and for_subject(ledger, subject_kind, allocation.reference) is None:
        return describe_row(ledger, existing, replayed=True)  # already sent without approval
    request = allocation.model_dump(mode="json")
    request["why"] = [why]
    _request(ledger, subject_kind, allocation.reference, allocation.amount, maker, request)
    replayed = existing is not None
    if existing is None:
        try:
            ledger.record_intent(
                allocation, operator=maker, status=Status.QUEUED, session_id=session_id
            )
            ledger.note(
                allocation.reference,
                actor=maker,
                detail=f"held for approval: {why}; nothing sent",
                kind=AuditKind.APPROVAL_REQUESTED,
            )
        except DuplicateReference:
            replayed = True
        except PointsDeskError:
            # Refused (budget spent, programme closed): nothing is held, the request goes too.
            ledger.withdraw_approval(
                subject_kind, allocation.reference, actor=maker, comment="withdrawn: refused"
            )
            raise
    log.info("%s %s held for approval (maker %s)", subject_kind, allocation.reference, maker)
    return describe_row(ledger, ledger.get(allocation.reference), replayed=replayed)  # type: ignore[arg-type]


def request_budget_raise(
    ledger: Ledger, code: str, budget: Decimal, *, maker: str, current: Decimal | None
) -> Approval:
    """Ask a second person to raise a programme's budget to ``budget`` (audited on the
    programme). Approving applies it; rejecting leaves the budget as it was."""
    subject = f"{code}@{datetime.now(UTC):%Y%m%dT%H%M%S%f}"  # one request per raise asked
    shown = "no limit" if current is None else numbers.figure(current)
    why = f"raise {code} from {shown} to {numbers.figure(budget)} points"
    ledger.note_programme(code, actor=maker, action="raise asked", detail=why)
    return _request(ledger, "budget", subject, Decimal(budget), maker, {"why": [why], "code": code})


def _raise_budget(ledger: Ledger, decision: Approval, approver: str) -> None:
    code = str(decision.request.get("code") or decision.subject.split("@", 1)[0])
    ledger.update_programme(
        code, actor=f"{approver} (approving {decision.maker})", budget=decision.amount
    )


def request_batch(
    ledger: Ledger, batch_id: str, total: Decimal, maker: str, why: list[str] | None = None
) -> Approval:
    """Ask a second person to approve a batch of ``total`` points before it starts; ``why`` are
    the reasons it waits (``batch_approval_reasons``), shown with the request."""
    return _request(ledger, "batch", batch_id, Decimal(total), maker, {"why": why} if why else {})


# --- decisions -----------------------------------------------------------------------------------


def _identity(text: str) -> str:
    return " ".join(text.split()).casefold()


def _decide(
    ledger: Ledger,
    approval_id: int,
    status: str,
    decider: str,
    comment: str,
    allow_self: bool = False,
    identities: Iterable[str] = (),
) -> Approval:
    # Every name the decider goes by (account, email, display name, linked accounts): a request
    # made under any of them is their own, whichever identity they decide it under.
    own = sorted({_identity(decider), *(_identity(name) for name in identities)} - {""})
    found = get(ledger, approval_id)
    if found is None:
        raise NoSuchRequest("There is no such approval request.")
    if _identity(found.maker) in own and not allow_self:
        raise SelfApproval(
            "You asked for this yourself: a second person has to approve or reject it."
        )
    decided_now = ledger.decide_approval(
        approval_id,
        ApprovalStatus(status),
        decider=decider,
        comment=comment,
        not_makers=None if allow_self else own,
    )
    if not decided_now:
        current = get(ledger, approval_id)
        who = current.decided_by if current else "someone"
        raise AlreadyDecided(f"{who} already decided this request ({current and current.status}).")
    log.info("approval %s %s by %s", approval_id, status, decider)
    return get(ledger, approval_id)  # type: ignore[return-value]


def approve(
    ledger: Ledger,
    approval_id: int,
    *,
    approver: str,
    comment: str = "",
    client: EnkashClient | None = None,
    allow_self: bool = False,
    identities: Iterable[str] = (),
) -> Decision:
    """Approve a request. A debit is then sent once, with its original reference (needs
    ``client``); a batch is only marked approved for its runner. ``SelfApproval`` if the
    approver is the maker under any of the names in ``identities`` (the approver's account,
    email, display name and linked accounts: ``AuthConfig.identities``), ``AlreadyDecided`` if
    someone decided first.

    ``allow_self`` is for the open sandbox only (one person on their own computer, no real
    points): there is no second person to ask, so the maker may decide their own request."""
    found = get(ledger, approval_id)
    if found is not None and found.subject_kind in SENT_ON_APPROVAL and client is None:
        raise ValueError("approving a debit, credit or reversal sends it: pass an EnKash client")
    comment = " ".join(comment.split())
    decision = _decide(ledger, approval_id, APPROVED, approver, comment, allow_self, identities)
    detail = f"approved by {approver}" + (f": {comment}" if comment else "")
    if decision.subject_kind == "batch":
        ledger.set_approved_by(approver, batch_id=decision.subject, detail=detail)
        return Decision(decision, None)
    if decision.subject_kind == "budget":
        _raise_budget(ledger, decision, approver)
        return Decision(decision, None)
    return Decision(decision, send_approved(ledger, client, decision, detail=detail))  # type: ignore[arg-type]


def send_approved(
    ledger: Ledger, client: EnkashClient, approval: Approval, *, detail: str = ""
) -> Outcome:
    """Send an approved debit that has not been sent yet (after ``approve``, or to finish one
    whose sending was interrupted). Exactly one caller wins the claim; others get the row."""
    if approval.subject_kind not in SENT_ON_APPROVAL or approval.status != APPROVED:
        raise NotApproved("Only an approved debit, credit or reversal can be sent.")
    approver = approval.decided_by or "approver"
    reference = approval.subject
    if ledger.get(reference) is None and approval.subject_kind == "debit":
        allocation = approval.allocation()
        assert allocation is not None
        with contextlib.suppress(DuplicateReference):  # written meanwhile: fine either way
            ledger.record_intent(
                allocation, operator=approval.maker, status=Status.QUEUED, approved_by=approver
            )
    ledger.set_approved_by(
        approver, reference=reference, detail=detail or f"approved by {approver}"
    )
    if not ledger.claim(reference, actor=approver, from_statuses=(Status.QUEUED,)):
        return describe_row(ledger, ledger.get(reference), replayed=True)  # type: ignore[arg-type]
    return describe_row(ledger, send_claimed(ledger, client, reference, actor=approver))


def reject(
    ledger: Ledger,
    approval_id: int,
    *,
    approver: str,
    comment: str,
    allow_self: bool = False,
    identities: Iterable[str] = (),
) -> Decision:
    """Refuse a request (a comment saying why is required). A debit's row becomes ``FAILED``
    without anything being sent."""
    comment = " ".join((comment or "").split())
    if not comment:
        raise CommentRequired("Say why you reject it: the maker sees your comment.")
    decision = _decide(
        ledger, approval_id, REJECTED_STATUS, approver, comment, allow_self, identities
    )
    if decision.subject_kind == "batch":
        _cancel_rejected_batch(ledger, decision.subject, approver, comment)
        return Decision(decision, None)
    if decision.subject_kind == "budget":
        ledger.note_programme(
            decision.subject,
            actor=approver,
            action="raise rejected",
            detail=f"budget raise to {numbers.figure(decision.amount)} rejected: {comment}",
        )
        return Decision(decision, None)
    row = ledger.get(decision.subject)
    if row is not None and row.status is Status.QUEUED:
        row = ledger.transition(
            decision.subject,
            Status.FAILED,
            actor=approver,
            from_statuses=(Status.QUEUED,),
            detail=f"rejected by {approver}: {comment}; nothing was sent",
            kind=AuditKind.REJECTED,
            enkash_code=REJECTED,
            enkash_message=f"Rejected by {approver}: {comment}",
        )
    return Decision(decision, describe_row(ledger, row) if row is not None else None)


def withdraw(ledger: Ledger, subject_kind: str, subject: str, *, actor: str, why: str) -> bool:
    """Close a pending request because its subject went away (a batch cancelled before anyone
    decided). Anyone who may cancel the subject may withdraw it; False if nothing was pending."""
    return ledger.withdraw_approval(subject_kind, subject, actor=actor, comment=f"withdrawn: {why}")


def _cancel_rejected_batch(ledger: Ledger, batch_id: str, approver: str, comment: str) -> None:
    """A rejected batch never starts: it is cancelled and each of its rows fails unsent."""
    ledger.update_batch(
        batch_id,
        from_states=(BatchState.QUEUED,),
        state=BatchState.CANCELLED,
        finished_at=datetime.now(UTC),
        note=f"rejected by {approver}: {comment}",
    )
    ledger.cancel_queued(
        batch_id,
        actor=approver,
        code=REJECTED,
        message=f"Rejected by {approver}: {comment}; nothing was sent",
        kind=AuditKind.REJECTED,
    )


# --- words ---------------------------------------------------------------------------------------


def _held(row: LedgerRow) -> bool:
    """A single row (not a batch's) waits for approval while QUEUED: a debit, a credit past an
    operator's monthly limit, or a reversal of any kind."""
    return row.batch_id is None


def status_word(row: LedgerRow) -> str:
    """A row's status as a manager reads it in tables: a held movement is "Awaiting approval"."""
    if row.status is Status.QUEUED and _held(row):
        return "Awaiting approval"
    if row.status is Status.FAILED and row.enkash_code == REJECTED:
        return "Rejected"
    if row.status is Status.FAILED and row.enkash_code == ReasonCode.CANCELLED:
        return "Cancelled"
    return row.status.value.title()


def holder(
    ledger: Ledger, card_id: str | None, given: Mapping[str, Any] | None = None
) -> tuple[str, str]:
    """Whose card this is, as (name with title, email): from the employee details sent with the
    request, else the ledger's latest for the card; empty strings where neither knows."""
    details: Mapping[str, Any] = given or {}
    if not details.get("first_name") and card_id:
        known = ledger.employee_by_card(card_id)
        if known is not None:
            details = {"title": known.title, "first_name": known.first_name, "email": known.email}
    name = " ".join(str(details[part]) for part in ("title", "first_name") if details.get(part))
    return name, str(details.get("email") or "")


def describe_row(ledger: Ledger, row: LedgerRow, *, replayed: bool = False) -> Outcome:
    """``allocations.describe``, plus the words for a movement held for or refused at approval."""
    if _held(row):
        if row.status is Status.QUEUED:
            given = {"title": row.title, "first_name": row.first_name, "email": row.email}
            who = " · ".join(part for part in holder(ledger, row.card_id, given) if part)
            return Outcome(
                row,
                "Waiting for approval by a second person",
                f"{numbers.points(row.amount)} points to debit from {who or 'the card'} "
                f"(card {row.card_id or '—'}). Nothing has been sent. An approver decides on "
                "the Approvals page; once approved it is sent with this same reference.",
                replayed,
            )
        if row.status is Status.FAILED and row.enkash_code == REJECTED:
            return Outcome(
                row,
                "Rejected at approval: nothing was sent",
                row.enkash_message or "An approver rejected this request.",
                replayed,
            )
    return describe(row, replayed=replayed)
