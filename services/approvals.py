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
approving one sends nothing itself; the batch runner checks ``is_approved`` before starting. A
batch waits by the rules a single movement follows (``stored_batch_reasons``): each debit row
against its own programme's debit threshold (the global one where the programme sets none), and
the credits against the operator's monthly limit in each programme, counted as the Credit form
counts them.

A change that loosens a programme's money rules (``services/programmes.py`` decides which) is a
request of kind ``"budget"`` (``request_programme_change``): approving it applies exactly the
asked values, rejecting it leaves the programme as it was.

A held credit (or a reversal that credits) whose programme has since closed, ended or not yet
started is not sent: approving it refuses (``ProgrammeNotOpen``), closes the request as refused
and fails its row unsent, so its points are no longer held in the programme or the operator's
month. A closed programme never takes credits again, so the request could only ever be rejected.

A decision is a compare-and-set on the request, so two approvers racing cannot both decide.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from services import numbers
from services.allocations import (
    Outcome,
    debit_needs_approval,
    debit_threshold,
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
from services.store import (
    GENERAL_CODE,
    BatchRecord,
    DuplicateReference,
    Ledger,
    LedgerRow,
    Programme,
    StatusConflict,
    from_cents,
    operator_months,
    programmes,
    to_cents,
    transactions,
)
from services.store import approvals as requests_table
from services.store.programmes import IN_FLIGHT, month_of, today_ist

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

#: A programme's money rules that a ``"budget"`` request may change (amounts; ``None``: none).
PROGRAMME_RULES = ("budget", "debit_threshold", "monthly_operator_limit")


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


class ProgrammeNotOpen(ApprovalError, Conflict):
    """A held credit's programme takes no credits now (closed, ended, not started): it was not
    sent, and the request was closed as refused."""


@dataclass(frozen=True)
class Approval:
    """One request for a second person's decision."""

    id: int
    subject_kind: str  # "debit", "credit", "reversal", "batch" or "budget" (a programme change)
    subject: str  # the movement's reference, the batch id, or "CODE@time" for a programme change
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

    @property
    def programme_code(self) -> str:
        """The programme a ``"budget"`` request changes (empty for other kinds)."""
        if self.subject_kind != "budget":
            return ""
        return str(self.request.get("code") or self.subject.split("@", 1)[0])

    @property
    def changes(self) -> dict[str, Decimal | None]:
        """What a ``"budget"`` request sets on its programme once approved (``None``: no
        limit): ``budget``, ``debit_threshold``, ``monthly_operator_limit``. A request from
        before changes were asked together carries only its new budget (``amount``)."""
        if self.subject_kind != "budget":
            return {}
        asked = self.request.get("changes")
        if not isinstance(asked, dict):
            return {"budget": self.amount}
        return {
            key: None if value is None else Decimal(str(value))
            for key, value in asked.items()
            if key in PROGRAMME_RULES
        }

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


@dataclass(frozen=True)
class DebitOverLimit:
    """A batch's debit row above the debit threshold that applies to it: its programme's own,
    or the global one (``limit`` ``None``: every debit waits, as without settings)."""

    number: int
    amount: Decimal
    limit: Decimal | None
    programme: str | None = None  # the programme's name when its own threshold applies

    def words(self) -> str:
        held = f"holds a debit of {figure(self.amount)} points (row {self.number})"
        if self.limit is None:
            return f"{held}, and every debit needs a second person"
        own = f" of {self.programme}" if self.programme else ""
        return f"{held}, above the {figure(self.limit)} debit limit{own}"


@dataclass(frozen=True)
class OperatorMonthOver:
    """A batch's credits in one programme that take its operator past the programme's monthly
    operator limit: ``month`` is the operator's month with the batch, ``credits`` the batch's."""

    operator: str
    programme: str  # the programme's name
    limit: Decimal
    credits: Decimal
    month: Decimal

    @property
    def left_before(self) -> Decimal:
        """What the operator had left this month before the batch."""
        return max(self.limit - (self.month - self.credits), Decimal(0))

    def words(self) -> str:
        return (
            f"credits {figure(self.credits)} points in {self.programme}, past "
            f"{self.operator}'s monthly limit of {figure(self.limit)} points there "
            f"({figure(self.left_before)} left this month)"
        )


def batch_reasons(
    total: Decimal,
    settings: Settings,
    *,
    debit_over: DebitOverLimit | None = None,
    months_over: Sequence[OperatorMonthOver] = (),
) -> list[str]:
    """Why a batch waits for a second person, in a manager's words; empty when it need not.

    ``total`` is every point the batch moves (credits and debits alike); above the batch
    threshold it waits. ``debit_over`` is its largest debit above the debit threshold that
    applies to that row, and ``months_over`` its credits past an operator's monthly limit: a
    file is not a way round the rules a single debit or credit follows on its form.
    """
    reasons = []
    batch_limit = settings.points_desk_approval_batch_threshold
    if total > batch_limit:
        reasons.append(f"moves {figure(total)} points, above the {figure(batch_limit)} batch limit")
    if debit_over is not None:
        reasons.append(debit_over.words())
    reasons.extend(over.words() for over in months_over)
    return reasons


def batch_approval_reasons(
    total: Decimal, largest_debit: tuple[int, Decimal] | None, settings: Settings
) -> list[str]:
    """``batch_reasons`` with the global debit threshold only: ``largest_debit`` is the batch's
    largest debit as (row number, amount). It knows neither programmes nor operators; a queued
    batch is judged by ``stored_batch_reasons``, planned rows by ``services.preflight``."""
    over = None
    if largest_debit is not None and debit_needs_approval(largest_debit[1], settings):
        over = DebitOverLimit(largest_debit[0], largest_debit[1], debit_threshold(settings))
    return batch_reasons(total, settings, debit_over=over)


def batch_needs_approval(
    total: Decimal, settings: Settings, largest_debit: tuple[int, Decimal] | None = None
) -> bool:
    """Whether a batch needs a second person (see ``batch_approval_reasons``)."""
    return bool(batch_approval_reasons(total, largest_debit, settings))


def largest_debit(ledger: Ledger, batch_id: str) -> tuple[int, Decimal] | None:
    """A batch's largest debit row as (row number, amount); ``None`` if it debits nothing."""
    return ledger.largest_debit(batch_id)


def debit_over_limit(
    ledger: Ledger, settings: Settings | None, batch_id: str
) -> DebitOverLimit | None:
    """A batch's largest debit above the threshold its row's programme applies (its own, else
    the global one, as ``movements.needs_approval`` does for one debit); ``None`` if none is."""
    t, p = transactions.c, programmes.c
    overall = debit_threshold(settings)
    # No settings: every debit waits (-1 cent is below any amount).
    overall_cents = -1 if overall is None else to_cents(overall)
    limit = sa.func.coalesce(p.debit_threshold_cents, overall_cents)
    query = (
        sa.select(t.row_number, t.amount_cents, p.debit_threshold_cents, p.name)
        .select_from(transactions.outerjoin(programmes, p.id == t.programme_id))
        .where(t.batch_id == batch_id, t.kind == Kind.DEBIT.value, t.amount_cents > limit)
        .order_by(t.amount_cents.desc(), t.row_number)
        .limit(1)
    )
    with ledger.reading() as conn:
        found = conn.execute(query).one_or_none()
    if found is None:
        return None
    own = found.debit_threshold_cents
    return DebitOverLimit(
        number=found.row_number,
        amount=from_cents(found.amount_cents),  # type: ignore[arg-type]
        limit=from_cents(own) if own is not None else overall,
        programme=found.name if own is not None else None,
    )


def months_over_limit(ledger: Ledger, record: BatchRecord) -> list[OperatorMonthOver]:
    """A queued batch's credits that take their operator past a programme's monthly operator
    limit: per programme with a limit, the operator's month as the Credit form counts it (the
    ``operator_months`` counter, which counts the batch's queued rows since it was queued)."""
    t, p, m = transactions.c, programmes.c, operator_months.c
    counted = (Status.SUCCEEDED, *IN_FLIGHT)
    credits = (
        sa.select(
            t.programme_id,
            t.operator,
            sa.func.sum(t.amount_cents).label("cents"),
        )
        .where(
            t.batch_id == record.batch_id,
            t.transaction_type == "CR",
            t.status.in_([s.value for s in counted]),
        )
        .group_by(t.programme_id, t.operator)
        .subquery()
    )
    month = month_of(record.created_at)
    query = (
        sa.select(
            p.name,
            p.monthly_operator_limit_cents,
            credits.c.operator,
            credits.c.cents,
            m.credited_cents,
        )
        .select_from(
            credits.join(programmes, p.id == credits.c.programme_id).outerjoin(
                operator_months,
                sa.and_(
                    m.programme_id == credits.c.programme_id,
                    m.operator == credits.c.operator,
                    m.month == month,
                ),
            )
        )
        .where(p.monthly_operator_limit_cents.is_not(None))
        .order_by(p.name)
    )
    with ledger.reading() as conn:
        found = conn.execute(query).all()
    over = []
    for name, limit, operator, cents, month_cents in found:
        # The counter already holds the queued rows; without one (never counted), the batch.
        month_total = max(int(month_cents or 0), int(cents))
        if month_total > limit:
            over.append(
                OperatorMonthOver(
                    operator=operator,
                    programme=name,
                    limit=from_cents(limit),  # type: ignore[arg-type]
                    credits=from_cents(cents),  # type: ignore[arg-type]
                    month=from_cents(month_total),  # type: ignore[arg-type]
                )
            )
    return over


def operator_month(ledger: Ledger, programme_id: int, operator: str, month: Any) -> Decimal:
    """What an operator credited from a programme in a month (in flight or succeeded), as the
    programme's monthly-limit counter holds it (0 when it holds none)."""
    m = operator_months.c
    with ledger.reading() as conn:
        cents = conn.execute(
            sa.select(m.credited_cents).where(
                m.programme_id == programme_id, m.operator == operator, m.month == month
            )
        ).scalar_one_or_none()
    return from_cents(int(cents or 0))  # type: ignore[return-value]


def stored_batch_reasons(
    ledger: Ledger, settings: Settings, record: BatchRecord, total: Decimal
) -> list[str]:
    """Why a batch in the ledger waits for a second person (``batch_reasons``): its ``total``,
    any debit row above its programme's debit threshold, and, while it is still queued (not yet
    started), credits past an operator's monthly limit. A batch that started was judged on the
    operator's month when it was confirmed; credits made since do not stop it half-way."""
    over = debit_over_limit(ledger, settings, record.batch_id) if record.debit_rows else None
    months = (
        months_over_limit(ledger, record)
        if record.credit_rows and record.state == BatchState.QUEUED
        else []
    )
    return batch_reasons(total, settings, debit_over=over, months_over=months)


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


def request_programme_change(
    ledger: Ledger,
    code: str,
    changes: Mapping[str, Decimal | None],
    *,
    maker: str,
    why: Sequence[str],
    budget_after: Decimal | None,
) -> Approval:
    """Ask a second person to set a programme's money rules (``PROGRAMME_RULES``) to
    ``changes`` (``None``: no limit), saying ``why`` in a manager's words; audited on the
    programme. Approving applies exactly these values; rejecting leaves the programme as it was.
    The request's amount is the budget once approved (0 for no limit)."""
    unknown = set(changes) - set(PROGRAMME_RULES)
    if unknown or not changes:
        raise ValueError(f"a programme change asks for {', '.join(PROGRAMME_RULES)} only")
    subject = f"{code}@{datetime.now(UTC):%Y%m%dT%H%M%S%f}"  # one request per change asked
    reasons = [str(reason) for reason in why]
    action = "raise asked" if set(changes) == {"budget"} else "change asked"
    ledger.note_programme(code, actor=maker, action=action, detail="; ".join(reasons))
    request = {
        "why": reasons,
        "code": code,
        "changes": {key: None if value is None else str(value) for key, value in changes.items()},
    }
    amount = Decimal(0) if budget_after is None else Decimal(budget_after)
    return _request(ledger, "budget", subject, amount, maker, request)


def request_budget_raise(
    ledger: Ledger, code: str, budget: Decimal, *, maker: str, current: Decimal | None
) -> Approval:
    """Ask a second person to raise a programme's budget to ``budget`` (audited on the
    programme). Approving applies it; rejecting leaves the budget as it was."""
    shown = "no limit" if current is None else numbers.figure(current)
    why = f"raise {code} from {shown} to {numbers.figure(budget)} points"
    return request_programme_change(
        ledger, code, {"budget": Decimal(budget)}, maker=maker, why=[why], budget_after=budget
    )


def approved_budget(ledger: Ledger, code: str) -> Decimal | None:
    """The budget a second person last approved for a programme (``None``: no limit); 0 when
    nobody ever approved one (a programme starts with nothing a second person agreed to)."""
    a = requests_table.c
    code = code.strip().upper()
    query = (
        sa.select(a.request, a.amount_cents)
        .where(
            a.subject_kind == "budget",
            a.status == APPROVED.value,
            a.subject.startswith(f"{code}@", autoescape=True),
        )
        .order_by(a.decided_at.desc(), a.id.desc())
    )
    with ledger.reading() as conn:
        found = conn.execute(query).all()
    for text, cents in found:
        request = json.loads(text) if text else {}
        if str(request.get("code") or code) != code:
            continue
        changes = request.get("changes")
        if not isinstance(changes, dict):  # a budget raise asked before changes were
            return from_cents(cents)
        if "budget" in changes:
            value = changes["budget"]
            return None if value is None else Decimal(str(value))
    return Decimal(0)


def _apply_programme_change(ledger: Ledger, decision: Approval, approver: str) -> None:
    ledger.update_programme(
        decision.programme_code,
        actor=f"{approver} (approving {decision.maker})",
        **decision.changes,
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
    ``client``); a batch is only marked approved for its runner; a programme change is applied.
    ``SelfApproval`` if the approver is the maker under any of the names in ``identities`` (the
    approver's account, email, display name and linked accounts: ``AuthConfig.identities``),
    ``AlreadyDecided`` if someone decided first. ``ProgrammeNotOpen`` for a held credit whose
    programme takes no credits now: nothing is sent, the request is closed as refused and its
    row fails unsent (``programme_not_open``).

    ``allow_self`` is for the open sandbox only (one person on their own computer, no real
    points): there is no second person to ask, so the maker may decide their own request."""
    found = get(ledger, approval_id)
    if found is not None and found.subject_kind in SENT_ON_APPROVAL and client is None:
        raise ValueError("approving a debit, credit or reversal sends it: pass an EnKash client")
    comment = " ".join(comment.split())
    closed = programme_not_open(ledger, found) if found is not None and found.pending else None
    if closed is not None:
        _refuse_not_open(ledger, approval_id, closed, approver, allow_self, identities)
    decision = _decide(ledger, approval_id, APPROVED, approver, comment, allow_self, identities)
    detail = f"approved by {approver}" + (f": {comment}" if comment else "")
    if decision.subject_kind == "batch":
        ledger.set_approved_by(approver, batch_id=decision.subject, detail=detail)
        return Decision(decision, None)
    if decision.subject_kind == "budget":
        _apply_programme_change(ledger, decision, approver)
        return Decision(decision, None)
    return Decision(decision, send_approved(ledger, client, decision, detail=detail))  # type: ignore[arg-type]


def send_approved(
    ledger: Ledger, client: EnkashClient, approval: Approval, *, detail: str = ""
) -> Outcome:
    """Send an approved debit that has not been sent yet (after ``approve``, or to finish one
    whose sending was interrupted). Exactly one caller wins the claim; others get the row. A
    credit whose programme has closed (ended, not started) since is not sent: its row fails
    unsent, saying why."""
    if approval.subject_kind not in SENT_ON_APPROVAL or approval.status != APPROVED:
        raise NotApproved("Only an approved debit, credit or reversal can be sent.")
    approver = approval.decided_by or "approver"
    reference = approval.subject
    held = ledger.get(reference)
    closed = programme_not_open(ledger, approval)
    if closed is not None and held is not None and held.status is Status.QUEUED:
        # Approved while the programme was open, sent after it closed: never sent.
        row = _fail_unsent(ledger, reference, approver, f"Not sent: {closed}.")
        assert row is not None  # it was there a moment ago; rows are never deleted
        return describe_row(ledger, row, replayed=row.status is not Status.FAILED)
    if held is None and approval.subject_kind == "debit":
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


def programme_not_open(ledger: Ledger, approval: Approval) -> str | None:
    """Why a held credit (or a reversal that credits) cannot be sent now, in a manager's words
    ("Promo is closed: it takes no new credits"): its programme is closed, ended or not yet
    started. ``None`` for a debit, a batch, a programme change, or an open programme. For the
    approval card too, so the approver sees it before deciding."""
    if approval.subject_kind not in SENT_ON_APPROVAL:
        return None
    row = ledger.get(approval.subject)
    programme: Programme | None
    if row is not None:
        if row.transaction_type != "CR":
            return None
        programme = _programme_of_row(ledger, approval.subject)
    else:
        allocation = approval.allocation()
        if allocation is None or allocation.kind is Kind.DEBIT:
            return None
        programme = ledger.programme(allocation.programme or GENERAL_CODE)
    return programme.why_closed(today_ist()) if programme is not None else None


def _programme_of_row(ledger: Ledger, reference: str) -> Programme | None:
    with ledger.reading() as conn:
        programme_id = conn.execute(
            sa.select(transactions.c.programme_id).where(transactions.c.reference == reference)
        ).scalar_one_or_none()
    return ledger.programme_by_id(programme_id) if programme_id is not None else None


def _fail_unsent(ledger: Ledger, reference: str, actor: str, message: str) -> LedgerRow | None:
    """A held row that may not be sent fails unsent (its points are no longer held); the row
    as it is if it was no longer queued; ``None`` if it was never written."""
    row = ledger.get(reference)
    if row is None or row.status is not Status.QUEUED:
        return row
    with contextlib.suppress(StatusConflict):  # claimed or decided meanwhile: it stands
        return ledger.transition(
            reference,
            Status.FAILED,
            actor=actor,
            from_statuses=(Status.QUEUED,),
            detail=f"{message} Nothing was sent",
            kind=AuditKind.REJECTED,
            enkash_code=REJECTED,
            enkash_message=message,
        )
    return ledger.get(reference)


def _refuse_not_open(
    ledger: Ledger,
    approval_id: int,
    why: str,
    approver: str,
    allow_self: bool,
    identities: Iterable[str],
) -> None:
    """Approving a held credit whose programme takes no credits: close the request as refused
    (the same compare-and-set as any decision, so only its approver can, once), fail its row
    unsent, and say so. Left pending it could only ever be rejected, and meanwhile its points
    would stay held in the programme's budget and the maker's month."""
    decision = _decide(
        ledger,
        approval_id,
        REJECTED_STATUS,
        approver,
        f"not sent: {why}",
        allow_self,
        identities,
    )
    _fail_unsent(ledger, decision.subject, approver, f"Not sent: {why}.")
    raise ProgrammeNotOpen(
        f"Not sent: {why}. Nothing was sent and the request is closed; its "
        f"{figure(decision.amount)} points are no longer held for it."
    )


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
        only_budget = set(decision.changes) == {"budget"}
        asked = (
            f"budget raise to {numbers.figure(decision.amount)}"
            if only_budget
            else "; ".join(decision.reasons) or "change"
        )
        ledger.note_programme(
            decision.programme_code,
            actor=approver,
            action="raise rejected" if only_budget else "change rejected",
            detail=f"{asked} rejected: {comment}",
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
                f"{numbers.points(row.amount)} points to "
                + ("debit from" if row.kind is Kind.DEBIT else "credit to")
                + f" {who or 'the card'} "
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
