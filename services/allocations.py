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
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from services import numbers
from services.config import Settings
from services.enkash import (
    NO_ANSWER,
    OTHER_CARD,
    SIGN_IN_FAILED,
    SLOW_DOWN,
    BusinessRefusal,
    EnkashClient,
    EnkashError,
    Exchange,
    LoginRefused,
    LookupMismatch,
    NotSent,
    OutcomeUnknown,
    ReferenceMismatch,
)
from services.errors import ApprovalRequired, Conflict, NotFound
from services.models import (
    Allocation,
    AllocationResult,
    AuditKind,
    CardHolder,
    Employee,
    Kind,
    ReasonCode,
    SettleOutcome,
    Status,
    TransactionRecord,
    parse_card_id,
)
from services.redact import redact
from services.store import (
    GENERAL_CODE,
    AuditEvent,
    DuplicateReference,
    Ledger,
    LedgerRow,
    StatusConflict,
)

log = logging.getLogger("points_desk.allocations")

# Kept importable from here: the codes themselves are ``ReasonCode`` (services/models.py).
REFERENCE_MISMATCH = ReasonCode.REFERENCE_MISMATCH
NOT_SENT = ReasonCode.NOT_SENT
LOGIN_REFUSED = ReasonCode.LOGIN_REFUSED


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
    reported: CardHolder | None = None  # the card's holder as EnKash's success reply names it
    holder_warning: str = ""  # plain text: EnKash names another holder than the one sent

    @property
    def status(self) -> Status:
        return self.row.status

    @property
    def reference_matched(self) -> bool:
        return self.row.status is Status.SUCCEEDED and bool(self.row.transaction_id)


#: Longest holder field taken from a reply (a name or an email); longer is not a name.
_HOLDER_FIELD_LENGTH = 100


def reported_holder(result: AllocationResult) -> CardHolder | None:
    """The card's holder as EnKash's success reply names it (None when it names nobody).

    Each field is EnKash's text, on one line, without control characters; a field that holds a
    secret (a reply echoing the token as a first name) or is too long to be a name is left out,
    never shown in part."""
    raw = result.raw if isinstance(result.raw, dict) else {}

    def text(name: str) -> str:
        value = raw.get(name)
        if not isinstance(value, str):
            return ""
        value = " ".join(_plain(value, _HOLDER_FIELD_LENGTH + 1).split())
        if len(value) > _HOLDER_FIELD_LENGTH or redact(value) != value:
            return ""
        return value

    holder = CardHolder(
        card_id=result.card_id,
        email=text("email"),
        mobile=text("mobile"),
        title=text("title"),
        first_name=text("firstName"),
        gender=text("gender"),
    )
    return holder if holder.first_name or holder.email or holder.mobile else None


def _digits(mobile: str | None) -> str:
    return "".join(ch for ch in mobile or "" if ch.isdigit())[-10:]


def holder_warning(row: LedgerRow, reported: CardHolder | None) -> str:
    """Plain text when EnKash names another holder than the details sent, else ``""``.

    Only what both sides give is compared: a reply without an email says nothing about it.
    """
    if reported is None or not (row.first_name or row.email or row.mobile):
        return ""
    differs = [
        (reported.first_name and row.first_name)
        and reported.first_name.casefold() != row.first_name.casefold(),
        (reported.email and row.email) and reported.email.lower() != row.email.lower(),
        (reported.mobile and row.mobile) and _digits(reported.mobile) != _digits(row.mobile),
    ]
    if not any(differs):
        return ""
    theirs = " ".join(p for p in (reported.title, reported.first_name) if p) or "someone else"
    contact = ", ".join(p for p in (reported.email, reported.mobile) if p)
    sent = row.first_name or row.email or row.mobile
    return (
        f"EnKash says this card belongs to {theirs}"
        + (f" ({contact})" if contact else "")
        + f", not {sent}. Check the card before moving more points to it."
    )


def describe(
    row: LedgerRow, *, replayed: bool = False, reported: CardHolder | None = None
) -> Outcome:
    """Turn a ledger row into the words the page shows.

    ``reported`` is the holder EnKash's success reply names: the headline names them, and a
    warning says so when they are not the person whose details were sent.
    """
    amount = numbers.points(row.amount)
    verb = "debited from" if row.kind is Kind.DEBIT else "credited to"
    who = row.first_name or row.email or row.card_id or "the card"
    if row.status is Status.SUCCEEDED:
        if reported is not None:
            who = reported.first_name or reported.email or who
        return Outcome(
            row,
            f"{amount} points {verb} {who}",
            "EnKash confirmed it.",
            replayed,
            reported,
            holder_warning(row, reported),
        )
    if row.status is Status.FAILED:
        reason = row.enkash_message or "EnKash refused it."
        if row.enkash_code == NOT_SENT and reason.startswith(SIGN_IN_FAILED):
            # EnKash answered the sign-in (an error page, a 429, no token): it was reached.
            headline = "Not sent: EnKash's sign-in did not give a usable token"
            reason = "Nothing was sent and no points moved. Try again in a moment."
        elif row.enkash_code == NOT_SENT:
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
        if row.enkash_code == REFERENCE_MISMATCH and (row.enkash_message or "").startswith(
            OTHER_CARD
        ):
            return Outcome(
                row,
                "EnKash answered for a different card",
                "EnKash confirmed this transaction for another card than the one it was sent "
                "for, so it is not counted as a success. It is listed on the Reconcile page for "
                "investigation.",
                replayed,
            )
        if row.enkash_code == REFERENCE_MISMATCH:
            return Outcome(
                row,
                "EnKash answered for a different reference",
                "The reply did not carry this transaction's reference, so it is not counted as "
                "a success. It is listed on the Reconcile page for investigation.",
                replayed,
            )
        said = row.enkash_message or ""
        if said.startswith(NO_ANSWER):
            headline = "Outcome unknown: EnKash did not answer in time"
        elif said.startswith(SLOW_DOWN):
            headline = f"Outcome unknown: {SLOW_DOWN}"
        else:
            headline = "Outcome unknown: EnKash did not give a readable answer"
        return Outcome(
            row,
            headline,
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


def _failure(error: Exception, reference: str) -> tuple[Status, str, str | None, str | None]:
    """What an error from ``allocate`` means for the row: (status, audit detail, code, message).

    Only a refusal EnKash stated, or a call that provably never reached it, is ``FAILED``;
    everything else may have committed and is ``UNKNOWN`` until a lookup settles it.
    """
    message = getattr(error, "message", None)
    if isinstance(error, BusinessRefusal):
        code = str(error.code) if error.code is not None else None
        return Status.FAILED, "EnKash refused the transaction", code, message
    if isinstance(error, LoginRefused):
        return Status.FAILED, "not sent: EnKash refused the sign-in", LOGIN_REFUSED, message
    if isinstance(error, NotSent):
        if (message or "").startswith(SIGN_IN_FAILED):
            return (
                Status.FAILED,
                "not sent: EnKash's sign-in gave no usable token",
                NOT_SENT,
                message,
            )
        return Status.FAILED, "not sent: EnKash could not be reached", NOT_SENT, message
    if isinstance(error, ReferenceMismatch):
        return Status.UNKNOWN, f"reference mismatch: {message}", REFERENCE_MISMATCH, message
    if isinstance(error, OutcomeUnknown | EnkashError):
        return Status.UNKNOWN, f"outcome unknown: {message}", None, message
    log.error("unexpected error while allocating %s", reference, exc_info=error)
    return Status.UNKNOWN, f"outcome unknown: unexpected {type(error).__name__}", None, None


def _send(
    ledger: Ledger, client: EnkashClient, allocation: Allocation, actor: str
) -> tuple[LedgerRow, CardHolder | None]:
    """Call EnKash for a row already in ``SENDING`` and commit the outcome; also returns the
    holder EnKash's success reply names, if any.

    The row never stays ``SENDING``: if EnKash's answer cannot be written as given (a value the
    ledger refuses, a database error), what can be stored is, and the audit trail says what was
    left out; if even that fails, the row becomes ``UNKNOWN`` and a lookup settles it. Only a row
    another caller moved meanwhile (``StatusConflict``) is left as they left it.

    The call's exchanges (what was sent and answered, for the exchange inspector) are written
    in the outcome's transaction, not in one of their own.
    """
    held = HeldExchanges(client)
    try:
        called = _call(client, allocation, actor)
    finally:
        held.release()
    try:
        return called.record(WithExchanges(ledger, held.take(), held))
    finally:
        held.flush()


class HeldExchanges:
    """A client's calls to EnKash, held to commit with the outcome they led to.

    The client hands each exchange here instead of writing it in a transaction of its own; the
    caller takes those of each call to commit with its outcome (``WithExchanges``): one write
    per movement instead of two. Whatever no outcome took (a sign-in's, or after a failed write)
    is written as before by ``flush``, so every exchange is kept and keeping it never changes
    what is recorded for the row. ``release`` gives the client its own keeper back.
    """

    def __init__(self, client: EnkashClient):
        self._client = client
        self._keep = client.on_exchange
        self._held: list[Exchange] = []
        self._lock = threading.Lock()  # the outcome is committed by another thread
        if self._keep is not None:
            client.on_exchange = self._hold

    def _hold(self, exchange: Exchange) -> None:
        with self._lock:
            self._held.append(exchange)

    def take(self) -> list[Exchange]:
        """The held exchanges, no longer held."""
        with self._lock:
            taken, self._held[:] = list(self._held), []
        return taken

    def give_back(self, exchanges: list[Exchange]) -> None:
        """Hold these again (their outcome was not written), before any held since."""
        with self._lock:
            self._held[:0] = exchanges

    def release(self) -> None:
        """Hand the client's exchanges to its own keeper again (what is held stays held)."""
        if self._keep is not None:
            self._client.on_exchange = self._keep

    def flush(self) -> None:
        """Write what is still held, each on its own (errors logged, as the client does)."""
        for exchange in self.take():
            try:
                self._keep(exchange)  # type: ignore[misc]  # only held when there is a keeper
            except Exception:
                log.exception("could not keep the exchange for reference %s", exchange.reference)


class WithExchanges:
    """Commits one row's outcome, with the exchanges of its call, through ``ledger`` (a
    ``Ledger``, or the batch job's group commit: anything with ``Ledger.transition``'s signature).

    Only the first write attempt carries them: if it fails, the fallbacks of ``_record_success``
    and ``_record_failure`` (less of the reply, then ``UNKNOWN``) go exactly as without them,
    and the exchanges go back to ``held``, to be written on their own (``HeldExchanges.flush``).
    """

    def __init__(self, ledger: Any, kept: list[Exchange], held: HeldExchanges):
        self._ledger = ledger
        self._kept: list[Exchange] | None = kept
        self._held = held

    def transition(self, reference: str, to_status: Status, **kwargs: Any) -> LedgerRow:
        kept, self._kept = self._kept, None
        if kept is None:
            return self._ledger.transition(reference, to_status, **kwargs)
        try:
            return self._ledger.transition(
                reference, to_status, exchanges=tuple(map(asdict, kept)), **kwargs
            )
        except BaseException:
            self._held.give_back(kept)
            raise


@dataclass(frozen=True)
class Called:
    """A call made to EnKash for a claimed row, its outcome not yet committed."""

    confirmed: bool  # EnKash confirmed the allocation
    #: Commits the outcome, given the ledger (or anything with ``Ledger.transition``'s
    #: signature); returns the row and the holder EnKash's reply names, as ``_send`` does.
    record: Callable[[Any], tuple[LedgerRow, CardHolder | None]]


def _call(client: EnkashClient, allocation: Allocation, actor: str) -> Called:
    """Call EnKash for a row already in ``SENDING``; what commits the outcome is returned."""
    reference = allocation.reference
    started = time.monotonic()
    try:
        result: AllocationResult = client.allocate(allocation)
    except Exception as error:
        status, detail, code, message = _failure(error, reference)
        return Called(
            False,
            lambda ledger: (
                _record_failure(ledger, reference, status, actor, detail, code, message),
                None,
            ),
        )
    log.info("allocated %s in %.0f ms", reference, (time.monotonic() - started) * 1000)
    return Called(
        True,
        lambda ledger: (_record_success(ledger, reference, result, actor), reported_holder(result)),
    )


def _record_success(
    ledger: Ledger, reference: str, result: AllocationResult, actor: str
) -> LedgerRow:
    """Commit a confirmed success; with less of EnKash's reply if all of it cannot be stored."""
    detail = "; ".join(["EnKash confirmed; reference matched", *result.notes])
    try:
        return ledger.transition(
            reference,
            Status.SUCCEEDED,
            actor=actor,
            from_statuses=(Status.SENDING,),
            detail=detail,
            result=result,
        )
    except StatusConflict:
        raise
    except Exception as error:
        log.error("could not record %s as EnKash confirmed it", reference, exc_info=error)
        problem = type(error).__name__
    # Keep only what is known to fit: the card id when it is a card id, no transaction id or
    # balance. The success itself is what matters; the rest is in EnKash's lookup.
    card_id = _storable_card_id(result.card_id)
    minimal = AllocationResult(
        reference=reference, card_id=card_id or "", transaction_id="", balance_after=None
    )
    try:
        return ledger.transition(
            reference,
            Status.SUCCEEDED,
            actor=actor,
            from_statuses=(Status.SENDING,),
            detail=(
                f"{_plain(detail)}; EnKash's reply could not be stored in full ({problem}): its "
                "transaction id and balance were not recorded"
                + ("" if card_id else ", nor its card id")
            ),
            result=minimal if card_id else None,
        )
    except StatusConflict:
        raise
    except Exception as error:
        log.error("could not record %s as succeeded at all", reference, exc_info=error)
        problem = type(error).__name__
    return ledger.transition(
        reference,
        Status.UNKNOWN,
        actor=actor,
        from_statuses=(Status.SENDING,),
        detail=(
            f"EnKash confirmed the transaction but it could not be recorded ({problem}); "
            "outcome to be settled by lookup"
        ),
    )


def _record_failure(
    ledger: Ledger,
    reference: str,
    status: Status,
    actor: str,
    detail: str,
    code: str | None,
    message: str | None,
) -> LedgerRow:
    """Commit a refusal or unknown outcome; without EnKash's code and message if they cannot be
    stored, and as ``UNKNOWN`` if even that fails (a lookup then settles it)."""
    try:
        return ledger.transition(
            reference,
            status,
            actor=actor,
            from_statuses=(Status.SENDING,),
            detail=detail,
            enkash_code=code,
            enkash_message=message,
        )
    except StatusConflict:
        raise
    except Exception as error:
        log.error("could not record the outcome of %s", reference, exc_info=error)
        problem = type(error).__name__
    kept = _storable_code(code)
    try:
        return ledger.transition(
            reference,
            status,
            actor=actor,
            from_statuses=(Status.SENDING,),
            detail=(
                f"{_plain(detail)}; EnKash's answer could not be stored as given ({problem}): "
                "its message is kept without control characters, shortened to 300"
                + ("" if kept == code else "; its code is left out")
            ),
            enkash_code=kept,
            enkash_message=_plain(message) if message is not None else None,
        )
    except StatusConflict:
        raise
    except Exception as error:
        log.error("could not record the outcome of %s at all", reference, exc_info=error)
        problem = type(error).__name__
    return ledger.transition(
        reference,
        Status.UNKNOWN,
        actor=actor,
        from_statuses=(Status.SENDING,),
        detail=f"the outcome could not be recorded ({problem}); to be settled by lookup",
    )


def figure(amount: Decimal) -> str:
    """Points in a sentence: ``99999`` -> ``99,999``, ``10.5`` -> ``10.50``."""
    return numbers.figure(amount)


def debit_threshold(settings: Settings | None) -> Decimal | None:
    """The largest debit sent without a second person's approval; ``None``: every debit waits."""
    return settings.points_desk_approval_debit_threshold if settings is not None else None


def debit_needs_approval(
    amount: Decimal, settings: Settings | None, override: Decimal | None = None
) -> bool:
    """A debit above the threshold (every debit when it is 0, or when no settings are given)
    needs a second person's approval before it may be sent. ``override``: the programme's own
    debit-approval threshold, which replaces the global one."""
    threshold = override if override is not None else debit_threshold(settings)
    return threshold is None or amount > threshold


def programme_debit_threshold(ledger: Ledger, allocation: Allocation) -> Decimal | None:
    """The debit-approval threshold of the allocation's programme (``None``: the global one)."""
    if allocation.kind is not Kind.DEBIT:
        return None
    found = ledger.programme(allocation.programme or GENERAL_CODE)
    return found.debit_threshold if found is not None else None


def _plain(text: str | None, limit: int = 300) -> str:
    """Text with no control or surrogate characters, at most ``limit`` of them (always
    storable). Redact before calling it: a secret cut in two no longer matches."""
    cleaned = "".join(
        ch for ch in text or "" if unicodedata.category(ch) not in ("Cc", "Cs")
    ).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _storable_code(code: str | None) -> str | None:
    """Our own codes and short plain ones are kept; anything else is dropped."""
    if code is None or (len(code) <= 64 and _plain(code) == code):
        return code
    return None


def _storable_card_id(card_id: str) -> str | None:
    try:
        return parse_card_id(card_id)
    except ValueError:
        return None


def submit(
    ledger: Ledger,
    client: EnkashClient,
    allocation: Allocation,
    *,
    operator: str,
    session_id: str | None = None,
    settings: Settings | None = None,
    within_operator_limit: bool = False,
) -> Outcome:
    """Record the intent, call EnKash once, record the outcome.

    ``within_operator_limit``: a credit past the operator's monthly limit in its programme is
    refused with ``OperatorLimitReached`` before anything is written or sent.

    A debit above the approval threshold of ``settings`` is refused with ``ApprovalRequired``
    before anything is written (without ``settings`` every debit is): this function never sends
    a debit that needs a second person, whoever calls it. ``services.movements.request`` is the
    entry that holds such a debit for approval instead.

    A reference that is already in the ledger is never sent again: the existing row's outcome is
    returned (``replayed``), which is what a double click or a rerun of the same form gets.
    """
    override = programme_debit_threshold(ledger, allocation)
    if allocation.kind is Kind.DEBIT and debit_needs_approval(
        allocation.amount, settings, override
    ):
        threshold = override if override is not None else debit_threshold(settings)
        limit = "" if threshold is None else f", above the {figure(threshold)} debit limit,"
        raise ApprovalRequired(
            f"Not sent: a debit of {figure(allocation.amount)} points{limit} needs a second "
            "person's approval; ask for it with movements.request"
        )
    try:
        ledger.record_intent(
            allocation,
            operator=operator,
            session_id=session_id,
            within_operator_limit=within_operator_limit,
        )
    except DuplicateReference:
        existing = ledger.get(allocation.reference)
        assert existing is not None  # the unique constraint just said it exists
        return replay(existing, allocation)
    row, reported = _send(ledger, client, allocation, operator)
    return describe(row, reported=reported)


class ReferenceReused(Conflict):
    """The reference is in the ledger for another transaction (a second tab of one form, say):
    nothing was recorded or sent for this one."""


def same_intent(row: LedgerRow, allocation: Allocation) -> bool:
    """Whether ``row`` is what ``allocation`` asks for: the same kind, points, reason and person
    (the card; for a new account, the email and mobile)."""
    asked = (allocation.kind, allocation.amount, allocation.reason)
    if (row.kind, row.amount, row.reason) != asked:
        return False
    if allocation.kind is Kind.CREATE:
        employee = allocation.employee
        return employee is not None and (row.email, row.mobile) == (employee.email, employee.mobile)
    return row.card_id == allocation.card_id


def replay(existing: LedgerRow, allocation: Allocation) -> Outcome:
    """The outcome of a reference already in the ledger, when ``allocation`` repeats it (a
    double click, a reload); ``ReferenceReused`` when it asks for something else under it."""
    if same_intent(existing, allocation):
        return describe(existing, replayed=True)
    whom = existing.card_id or existing.email or "a new account"
    raise ReferenceReused(
        f"Not sent: this form's reference {existing.reference} was already used, in another tab "
        f"or window of this form, for a {existing.kind.value} of {figure(existing.amount)} "
        f"points ({whom}). Nothing was sent for this one. The form has a new reference now: "
        "check the details and send again."
    )


def send_claimed(ledger: Ledger, client: EnkashClient, reference: str, *, actor: str) -> LedgerRow:
    """Send one row this caller has already claimed (``SENDING``), such as an approved debit,
    and commit its outcome before returning. (The batch worker uses ``call_claimed``.)"""
    row = _claimed(ledger, reference)
    return _send(ledger, client, allocation_from_row(row), actor)[0]


def call_claimed(
    ledger: Ledger,
    client: EnkashClient,
    reference: str,
    *,
    actor: str,
    row: LedgerRow | None = None,
) -> Called:
    """``send_claimed`` in two steps: make the call now, and return what commits its outcome
    (given the ledger or a recorder). The batch worker sends its next row while this one's
    outcome is being committed; until then the row stays ``SENDING``, which is what a crash in
    between leaves for a lookup to settle."""
    return _call(client, allocation_from_row(_claimed(ledger, reference, row)), actor)


def _claimed(ledger: Ledger, reference: str, row: LedgerRow | None = None) -> LedgerRow:
    """The row, claimed for sending (``row``: as the claim returned it, saves reading it)."""
    if row is None or row.reference != reference:
        row = ledger.get(reference)
    if row is None or row.status is not Status.SENDING:
        raise StatusConflict(f"{reference} is not claimed for sending")
    return row


# --- settling unknown outcomes --------------------------------------------------------------------

#: How the detail of an audit note that proves absence begins (for people: code reads its kind,
#: ``AuditKind.LOOKUP_ABSENT``). A resend is allowed only while such a note is the row's latest.
PROVED_ABSENT = "lookup: proved absent"

#: A lookup made sooner than this after the last attempt does not count as proof of absence: a
#: request that timed out on our side may still be in progress at EnKash. (The Desk's read timeout
#: is at most 120 s and its default 15 s; EnKash's own processing time is not documented.)
ABSENCE_GRACE = timedelta(seconds=30)


class NotProvenAbsent(StatusConflict):
    """A resend was asked for a row whose latest lookup did not prove its reference absent."""


@dataclass(frozen=True)
class Settlement:
    """The result of checking one unknown reference with EnKash.

    ``outcome`` is ``succeeded`` or ``failed`` (EnKash has it; the row is settled), ``absent``
    (proved absent: a resend with the same reference may follow), ``not_yet`` (absent, but too
    soon after the last attempt to prove anything), ``unreadable`` (EnKash lists it with a status
    Points Desk cannot read), ``changed`` (absent, but the row changed during the lookup, so
    nothing is proved) or ``already`` (the row was not ``UNKNOWN``: nothing was asked).
    """

    reference: str
    found: bool
    row: LedgerRow
    message: str
    outcome: SettleOutcome
    proof_event_id: int | None = None  # the audit note that proves absence (``absent`` only)


def proof_of_absence(ledger: Ledger, reference: str) -> AuditEvent | None:
    """The audit note proving the reference absent at EnKash, if it still stands.

    It stands while the row is ``UNKNOWN`` and the note is the row's latest audit event: any later
    event (another lookup, a claim, a settlement, an approval) means something happened since.
    """
    row = ledger.get(reference)
    if row is None or row.status is not Status.UNKNOWN:
        return None
    latest = ledger.latest_events([reference]).get(reference)
    return latest if is_proof_of_absence(latest) else None


def is_proof_of_absence(event: AuditEvent | None) -> bool:
    """Whether an audit event is a lookup that proved absence on an ``UNKNOWN`` row."""
    return (
        event is not None
        and event.from_status is Status.UNKNOWN
        and event.to_status is Status.UNKNOWN
        and event.kind is AuditKind.LOOKUP_ABSENT
    )


def settle(
    ledger: Ledger,
    client: EnkashClient,
    reference: str,
    *,
    actor: str,
    absence_grace: timedelta = ABSENCE_GRACE,
) -> Settlement:
    """Look an ``UNKNOWN`` reference up at EnKash and record what the lookup proves.

    Found with a success: ``SUCCEEDED`` with EnKash's ids and balance. Found as failed: ``FAILED``.
    Absent: stays ``UNKNOWN`` with a "proved absent" audit note (see ``proof_of_absence``), written
    only if nothing happened to the row during the lookup and only once ``absence_grace`` has
    passed since the last attempt. A row that is not ``UNKNOWN`` is left alone and EnKash is not
    asked. A failed lookup proves nothing and raises the client's error; nothing is recorded.
    """
    row = ledger.get(reference)
    if row is None:
        raise NotFound(f"There is no transaction with the reference {reference}.")
    if row.status is not Status.UNKNOWN:
        return _already(row)
    before = ledger.latest_events([reference]).get(reference)
    try:
        record = client.find_transaction(
            reference,
            card_id=row.card_id,
            amount=row.amount,
            transaction_type="DR" if row.kind is Kind.DEBIT else "CR",
        )
    except LookupMismatch as mismatch:
        return _mismatched(ledger, row, mismatch, actor=actor)
    if record is None:
        return _absent(ledger, row, before, actor=actor, absence_grace=absence_grace)
    # EnKash's status, as it may be stored and shown: redacted, then bounded.
    reported = _plain(redact(record.status), 60).upper()
    try:
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
            return Settlement(
                reference,
                True,
                failed,
                f"EnKash has it as {reported}: it did not go through and no points moved.",
                SettleOutcome.FAILED,
            )
        if reported in _LOOKUP_SUCCEEDED:
            return _found(ledger, row, record, actor=actor)
    except StatusConflict:
        # Settled (or resent) by someone else while EnKash was being asked: theirs stands.
        return _already(ledger.get(reference))  # type: ignore[arg-type]
    # Neither a success nor a failure we know: prove nothing, keep it for a person to look at.
    shown = reported or "(none)"
    ledger.note(
        reference,
        actor=actor,
        detail=f"lookup: EnKash reports status {shown}; left unsettled",
        kind=AuditKind.LOOKUP_UNREADABLE,
    )
    return Settlement(
        reference,
        True,
        ledger.get(reference),  # type: ignore[arg-type]
        f"EnKash has this reference with status {shown}, which Points Desk cannot read as a "
        "success or a failure. It stays unsettled and is never resent; ask EnKash.",
        SettleOutcome.UNREADABLE,
    )


def _mismatched(
    ledger: Ledger, row: LedgerRow, mismatch: LookupMismatch, *, actor: str
) -> Settlement:
    """EnKash lists the reference but not as it was sent (another card, amount or type): like a
    reply for another reference, it is investigated, never taken as this transaction's outcome
    and never resent. The lookup's verdict is noted (``LOOKUP_UNREADABLE``: the Reconcile page
    shows it as the row's state); the row stays ``UNKNOWN``."""
    said = _plain(redact("; ".join(mismatch.differences)), 240)
    ledger.note(
        row.reference,
        actor=actor,
        detail=f"lookup: EnKash lists this reference, but not as it was sent ({said}); left "
        "unsettled: investigate with EnKash",
        kind=AuditKind.LOOKUP_UNREADABLE,
    )
    return Settlement(
        row.reference,
        True,
        ledger.get(row.reference),  # type: ignore[arg-type]
        f"EnKash lists this reference, but not as it was sent ({said}). It stays unsettled and "
        "is never resent: investigate with EnKash.",
        SettleOutcome.UNREADABLE,
    )


def _already(row: LedgerRow) -> Settlement:
    words = {
        Status.SUCCEEDED: "it went through",
        Status.FAILED: "it did not go through",
        Status.SENDING: "it is being sent right now",
        Status.QUEUED: "it is queued and has not been sent",
    }
    return Settlement(
        row.reference,
        row.status is Status.SUCCEEDED,
        row,
        f"Already settled: {words.get(row.status, row.status.value)}. Nothing was asked.",
        SettleOutcome.ALREADY,
    )


def _absent(
    ledger: Ledger,
    row: LedgerRow,
    before: AuditEvent | None,
    *,
    actor: str,
    absence_grace: timedelta,
) -> Settlement:
    waited = datetime.now(UTC) - row.updated_at
    if waited < absence_grace:
        left = max(1, int((absence_grace - waited).total_seconds() + 0.999))
        return Settlement(
            row.reference,
            False,
            row,
            "EnKash has no transaction with this reference yet, but the last attempt was only "
            f"{int(waited.total_seconds())} s ago and may still be in progress at EnKash. "
            f"Check again in {left} s; until then it cannot be resent.",
            SettleOutcome.NOT_YET,
        )
    proof = ledger.note_if_latest(
        row.reference,
        actor=actor,
        detail=f"{PROVED_ABSENT}: EnKash has no transaction with this reference "
        f"({int(waited.total_seconds())} s after the last attempt)",
        expected_event_id=before.id if before is not None else None,
        kind=AuditKind.LOOKUP_ABSENT,
    )
    current = ledger.get(row.reference)
    assert current is not None
    if proof is None:
        return Settlement(
            row.reference,
            False,
            current,
            "Something happened to this transaction while EnKash was being asked (another check "
            "or a resend), so this lookup proves nothing. Check it again.",
            SettleOutcome.CHANGED,
        )
    return Settlement(
        row.reference,
        False,
        current,
        "EnKash has no transaction with this reference: it never arrived and no points moved. "
        "It can be resent with the same reference.",
        SettleOutcome.ABSENT,
        proof.id,
    )


def _found(ledger: Ledger, row: LedgerRow, record: TransactionRecord, *, actor: str) -> Settlement:
    card_id = record.card_id or row.card_id or ""
    balance = record.balance_after
    detail = "; ".join(
        [
            f"settled by lookup: EnKash transaction {record.transaction_id or '(id not kept)'}",
            *record.notes,
        ]
    )
    if balance is not None and card_id:
        # The lookup's balance is the balance right after this transaction. If other transactions
        # on the card succeeded since this one was started, EnKash may have applied them after
        # it, so that balance may be stale: record none rather than a wrong one.
        summary = ledger.employee_by_card(card_id)
        if summary is not None and summary.last_activity and summary.last_activity > row.created_at:
            balance = None
            detail += "; balance after not recorded (the card moved meanwhile)"
    settled = ledger.transition(
        row.reference,
        Status.SUCCEEDED,
        actor=actor,
        from_statuses=(Status.UNKNOWN,),
        detail=detail,
        result=AllocationResult(
            reference=row.reference,
            card_id=card_id,
            transaction_id=record.transaction_id,
            balance_after=balance,  # None when the lookup does not report it (or it is stale)
        ),
    )
    named = f" (EnKash transaction {record.transaction_id})" if record.transaction_id else ""
    return Settlement(
        row.reference,
        True,
        settled,
        f"EnKash has it: the transaction went through{named}.",
        SettleOutcome.SUCCEEDED,
    )


def resend(
    ledger: Ledger,
    client: EnkashClient,
    reference: str,
    *,
    actor: str,
    absence_grace: timedelta = ABSENCE_GRACE,
) -> Outcome:
    """Resend an ``UNKNOWN`` row with the same reference, once a lookup has proved it absent.

    Refused (``NotProvenAbsent``) unless the row's latest audit event is a lookup that proved the
    reference absent (``settle``). The lookup is then repeated immediately before the claim, and
    the claim itself is a compare-and-set on that fresh proof, so a resend can never follow a
    stale "absent" or race another resend. Rows whose reply carried another reference are
    investigated, never resent (``StatusConflict``).
    """
    row = ledger.get(reference)
    if row is None:
        raise NotFound(f"There is no transaction with the reference {reference}.")
    if row.status is not Status.UNKNOWN:
        return describe(row, replayed=True)
    if row.enkash_code == REFERENCE_MISMATCH:
        raise StatusConflict("a reference mismatch is investigated, not resent")
    if proof_of_absence(ledger, reference) is None:
        raise NotProvenAbsent(
            "Not resent: EnKash has not been shown to lack this reference since the last change. "
            "Check it with EnKash first; only a lookup that proves it absent allows a resend."
        )
    settlement = settle(ledger, client, reference, actor=actor, absence_grace=absence_grace)
    if settlement.outcome in (
        SettleOutcome.SUCCEEDED,
        SettleOutcome.FAILED,
        SettleOutcome.ALREADY,
    ):
        return describe(settlement.row, replayed=settlement.outcome == SettleOutcome.ALREADY)
    if settlement.outcome != SettleOutcome.ABSENT or settlement.proof_event_id is None:
        raise NotProvenAbsent(f"Not resent. {settlement.message}")
    if not ledger.claim_if_latest(
        reference,
        actor=actor,
        expected_event_id=settlement.proof_event_id,
        detail="resend with the same reference: EnKash's lookup proved it absent",
    ):
        raise NotProvenAbsent(
            "Not resent: something happened to this transaction meanwhile. Check it again."
        )
    sent, reported = _send(ledger, client, allocation_from_row(row), actor)
    return describe(sent, reported=reported)
