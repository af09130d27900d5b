"""Reconciliation: settle unknown outcomes, list what needs a person, and check for drift.

Three jobs, none of which ever pays anything twice:

- **Unknown outcomes.** ``unknown_transactions`` lists every ``UNKNOWN`` row with its age, its
  attempts and what the latest lookup said. ``check`` / ``check_all`` settle them through
  ``allocations.settle`` (a lookup of the reference at EnKash). ``resend`` is allowed only for a
  row whose latest lookup proved it absent; it reuses the same reference.
- **Reference mismatches.** A success whose reply carried another reference is not trusted;
  ``reference_mismatches`` lists those rows (settled or not) for a person to investigate.
- **Drift.** ``drift_check`` compares each card's balance as the ledger accounts for it with the
  balance EnKash reports, and the pool as EnKash reports it.

``SettleLoop`` runs ``check_all`` in a background thread at start-up and on a timer. It only
settles: it never resends, and it leaves alone rows already proved absent (they wait for a person).
No Streamlit here; the Reconcile page and scripts call these functions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services import allocations
from services.allocations import (
    ABSENCE_GRACE,
    REFERENCE_MISMATCH,
    NotProvenAbsent,
    Outcome,
    is_proof_of_absence,
)
from services.enkash import OTHER_CARD, EnkashClient, EnkashError
from services.errors import NotFound
from services.models import AccountDetails, AuditKind, SettleOutcome, Status
from services.store import AuditEvent, Ledger, LedgerRow, StatusConflict

log = logging.getLogger("points_desk.reconcile")

SETTLE_ACTOR = "settle-loop"
ZERO = Decimal("0.00")


# --- unknown outcomes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnknownTransaction:
    """One ``UNKNOWN`` row as the Reconcile page lists it."""

    row: LedgerRow
    age: timedelta  # since the row was created
    last_event: AuditEvent | None

    @property
    def reference(self) -> str:
        return self.row.reference

    @property
    def attempts(self) -> int:
        return self.row.attempts

    @property
    def proven_absent(self) -> bool:
        """The latest lookup proved the reference absent and nothing happened since."""
        return is_proof_of_absence(self.last_event)

    @property
    def mismatch(self) -> bool:
        return self.row.enkash_code == REFERENCE_MISMATCH

    @property
    def resend_allowed(self) -> bool:
        return self.proven_absent and not self.mismatch

    @property
    def state(self) -> str:
        """What is known, in words."""
        if self.mismatch and not self.proven_absent:
            if (self.row.enkash_message or "").startswith(OTHER_CARD):
                return "EnKash answered for another card; not checked since."
            return "EnKash answered for another reference; not checked since."
        if self.proven_absent:
            if self.mismatch:
                return (
                    "EnKash has no transaction with this reference, yet it answered for "
                    "another one: investigate with EnKash; it is never resent."
                )
            return "EnKash has no transaction with this reference: it can be resent."
        event = self.last_event
        if event is not None and event.kind is AuditKind.LOOKUP_UNREADABLE:
            said = event.detail.removeprefix("lookup:").strip()
            return said[:1].upper() + said[1:]
        if event is not None and event.kind is AuditKind.RECOVERED:
            return "Interrupted mid-call by a restart; not checked with EnKash yet."
        return "Not checked with EnKash yet."


def unknown_transactions(
    ledger: Ledger, *, now: datetime | None = None, limit: int | None = None
) -> list[UnknownTransaction]:
    """Every ``UNKNOWN`` row, oldest first, with its age and its latest audit event."""
    now = now or datetime.now(UTC)
    rows = ledger.rows(statuses=[Status.UNKNOWN], limit=limit)
    latest = ledger.latest_events(row.reference for row in rows)
    return [
        UnknownTransaction(row, now - row.created_at, latest.get(row.reference)) for row in rows
    ]


def reference_mismatches(ledger: Ledger) -> list[LedgerRow]:
    """Successes and unknowns whose reply carried another reference: to investigate, newest
    first. (A settled one went through, found by its own reference; the odd reply still needs
    explaining.)"""
    return ledger.rows_with_code(REFERENCE_MISMATCH, statuses=[Status.SUCCEEDED, Status.UNKNOWN])


@dataclass(frozen=True)
class CheckResult:
    """What one check with EnKash found, in words.

    ``outcome``: ``succeeded``, ``failed``, ``absent``, ``not_yet``, ``unreadable``, ``changed``,
    ``already`` (see ``allocations.Settlement``), or ``error`` when the lookup itself failed.
    """

    reference: str
    outcome: SettleOutcome
    message: str
    row: LedgerRow | None = None

    @property
    def settled(self) -> bool:
        return self.outcome.settled

    @property
    def resend_allowed(self) -> bool:
        return (
            self.outcome is SettleOutcome.ABSENT
            and self.row is not None
            and self.row.enkash_code != REFERENCE_MISMATCH
        )


def check(
    ledger: Ledger,
    client: EnkashClient,
    reference: str,
    *,
    actor: str,
    absence_grace: timedelta = ABSENCE_GRACE,
) -> CheckResult:
    """Look one reference up at EnKash and record what it proves; never raises for EnKash."""
    try:
        settlement = allocations.settle(
            ledger, client, reference, actor=actor, absence_grace=absence_grace
        )
    except NotFound:
        return CheckResult(
            reference, SettleOutcome.ERROR, "There is no transaction with this reference."
        )
    except EnkashError as error:
        log.warning("lookup of %s failed: %s", reference, error.message)
        return CheckResult(
            reference,
            SettleOutcome.ERROR,
            f"EnKash could not be asked ({error.message}). Nothing was recorded; it stays "
            "unknown. Try again later.",
            ledger.get(reference),
        )
    return CheckResult(reference, settlement.outcome, settlement.message, settlement.row)


def check_all(
    ledger: Ledger,
    client: EnkashClient,
    *,
    actor: str,
    absence_grace: timedelta = ABSENCE_GRACE,
    skip_proven_absent: bool = False,
    stop: threading.Event | None = None,
) -> list[CheckResult]:
    """Check every ``UNKNOWN`` row with EnKash, oldest first.

    ``skip_proven_absent`` leaves alone rows whose latest lookup already proved absence (they wait
    for a person to resend). ``stop`` ends the pass early when set.
    """
    results = []
    for item in unknown_transactions(ledger):
        if stop is not None and stop.is_set():
            break
        if skip_proven_absent and item.proven_absent:
            continue
        results.append(
            check(ledger, client, item.reference, actor=actor, absence_grace=absence_grace)
        )
    return results


@dataclass(frozen=True)
class ResendResult:
    """What a resend did: ``outcome`` (the row afterwards) or, when refused, ``refusal``."""

    reference: str
    outcome: Outcome | None = None
    refusal: str = ""


def resend(
    ledger: Ledger,
    client: EnkashClient,
    reference: str,
    *,
    actor: str,
    absence_grace: timedelta = ABSENCE_GRACE,
) -> ResendResult:
    """``allocations.resend`` with every refusal and EnKash failure turned into words."""
    try:
        outcome = allocations.resend(
            ledger, client, reference, actor=actor, absence_grace=absence_grace
        )
    except NotFound:
        return ResendResult(reference, refusal="There is no transaction with this reference.")
    except NotProvenAbsent as refusal:
        return ResendResult(reference, refusal=str(refusal))
    except StatusConflict:
        return ResendResult(
            reference,
            refusal="Not resent: EnKash answered this one for another reference, so it is "
            "investigated with EnKash, never resent.",
        )
    except EnkashError as error:
        return ResendResult(
            reference,
            refusal=f"Not resent: EnKash could not be asked first ({error.message}).",
        )
    return ResendResult(reference, outcome)


# --- the background settle pass -------------------------------------------------------------------


@dataclass
class SettlePass:
    """A summary of one background pass."""

    started_at: datetime
    checked: int = 0
    settled: int = 0
    errors: int = 0
    finished_at: datetime | None = None
    outcomes: dict[str, int] = field(default_factory=dict)


class SettleLoop:
    """Settles ``UNKNOWN`` rows in a daemon thread: once at start, then every ``interval_seconds``.

    Only settles (looks references up); never resends. Rows whose latest lookup proved absence are
    skipped, so a row waiting for a person's resend decision does not collect a note per pass.
    Talks to EnKash only when there is something to check. Uses its own client (a client is not
    thread-safe), made by ``client_factory`` and closed by ``stop()``.
    """

    def __init__(
        self,
        ledger: Ledger,
        client_factory: Callable[[], EnkashClient],
        interval_seconds: float,
        *,
        actor: str = SETTLE_ACTOR,
        absence_grace: timedelta = ABSENCE_GRACE,
    ) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive (0 means: do not start a loop)")
        self.ledger = ledger
        self.interval_seconds = interval_seconds
        self.actor = actor
        self.absence_grace = absence_grace
        self._client_factory = client_factory
        self._client: EnkashClient | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="points-desk-settle", daemon=True)
        self.last_pass: SettlePass | None = None
        self.passes = 0

    def start(self) -> SettleLoop:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the loop to stop and wait up to ``timeout`` s (a lookup in flight may outlast it;
        the thread is a daemon and stops after that lookup)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._client is not None and not self._thread.is_alive():
            self._client.close()
            self._client = None

    def run_once(self) -> SettlePass:
        """One pass over the ``UNKNOWN`` rows (also what the thread does on each tick)."""
        summary = SettlePass(started_at=datetime.now(UTC))
        if not any(
            not item.proven_absent for item in unknown_transactions(self.ledger, limit=None)
        ):
            summary.finished_at = datetime.now(UTC)
            return summary
        if self._client is None:
            self._client = self._client_factory()
        results = check_all(
            self.ledger,
            self._client,
            actor=self.actor,
            absence_grace=self.absence_grace,
            skip_proven_absent=True,
            stop=self._stop,
        )
        for result in results:
            summary.checked += 1
            summary.settled += result.settled
            summary.errors += result.outcome is SettleOutcome.ERROR
            summary.outcomes[result.outcome] = summary.outcomes.get(result.outcome, 0) + 1
        summary.finished_at = datetime.now(UTC)
        if summary.checked:
            log.info(
                "settle pass: %d checked, %d settled, %d lookups failed",
                summary.checked,
                summary.settled,
                summary.errors,
            )
        return summary

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last_pass = self.run_once()
            except Exception:  # the loop must outlive any one bad pass (e.g. a reset mid-pass)
                log.exception("settle pass failed; trying again at the next tick")
            self.passes += 1
            self._stop.wait(self.interval_seconds)


# --- drift ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CardDrift:
    """One card whose balance at EnKash differs from what the ledger accounts for."""

    card_id: str
    employee: str
    ledger_balance: Decimal | None  # None: the ledger has no succeeded row for this card
    enkash_balance: Decimal | None  # None: EnKash does not list this card
    unsettled: int  # UNKNOWN rows on this card, which may explain the difference

    @property
    def difference(self) -> Decimal:
        """EnKash minus ledger (a missing side counts as 0)."""
        return (self.enkash_balance or Decimal("0")) - (self.ledger_balance or Decimal("0"))

    @property
    def explanation(self) -> str:
        if self.enkash_balance is None:
            return "EnKash does not list this card."
        if self.ledger_balance is None:
            return "The ledger has no confirmed transaction for this card."
        if self.unsettled:
            return f"{self.unsettled} unknown outcome(s) on this card may explain it."
        return "Moved outside Points Desk (e.g. redeemed), or a transaction to investigate."


@dataclass(frozen=True)
class DriftReport:
    """The ledger and EnKash compared card by card, plus the pool as EnKash reports it."""

    checked_at: datetime
    cards_checked: int
    differences: list[CardDrift]
    ledger_card_total: Decimal  # what the ledger accounts for on every card
    enkash_card_total: Decimal  # what EnKash's cards hold, summed from its user search
    account: AccountDetails | None  # EnKash's account details (pool); None if it could not say
    account_error: str = ""

    @property
    def agrees(self) -> bool:
        return not self.differences


def drift_check(
    ledger: Ledger, client: EnkashClient, card_ids: Iterable[str] | None = None
) -> DriftReport:
    """Compare every card's ledger balance (succeeded credits minus debits) with EnKash's.

    ``card_ids`` None: every card either side knows (one user search for all cards); else only
    those cards (one search per card). Raises the client's error if the search fails; a failed
    account lookup is reported in ``account_error`` instead.
    """
    ledger_totals = ledger.card_totals()
    if card_ids is None:
        holders = client.search_users()
        wanted = set(ledger_totals) | {holder.card_id for holder in holders}
    else:
        wanted = {card.strip().upper() for card in card_ids if card.strip()}
        holders = [holder for card in sorted(wanted) for holder in client.search_users(card)]
    enkash = {holder.card_id: holder for holder in holders if holder.card_id in wanted}
    unsettled: dict[str, int] = {}
    for row in ledger.rows(statuses=[Status.UNKNOWN, Status.SENDING]):
        if row.card_id:
            unsettled[row.card_id] = unsettled.get(row.card_id, 0) + 1
    differences = []
    for card in sorted(wanted):
        holder = enkash.get(card)
        mine = ledger_totals.get(card)
        theirs = holder.balance if holder is not None else None
        if holder is not None and theirs is None:
            theirs = Decimal("0")  # listed without a balance: nothing to compare but presence
        if mine is not None and theirs is not None and mine == theirs:
            continue
        if mine is None and theirs == 0:
            continue  # an empty card the ledger never funded: nothing to explain
        summary = ledger.employee_by_card(card)
        who = (holder.first_name or holder.email) if holder is not None else ""
        if not who and summary is not None:
            who = summary.first_name or summary.email or ""
        differences.append(CardDrift(card, who, mine, theirs, unsettled.get(card, 0)))
    account, account_error = None, ""
    try:
        account = client.account_details()
    except EnkashError as error:
        account_error = error.message
    return DriftReport(
        checked_at=datetime.now(UTC),
        cards_checked=len(wanted),
        differences=differences,
        ledger_card_total=sum((ledger_totals.get(c, ZERO) for c in wanted), ZERO),
        enkash_card_total=sum((h.balance or ZERO for h in enkash.values()), ZERO),
        account=account,
        account_error=account_error,
    )
