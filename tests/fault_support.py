"""Helpers shared by the settle/resend tests, the fault-injection suite and benchmarks/faults.py.

The central one is ``audit_books``: it compares the ledger with the sandbox's committed
transactions and says, in numbers, whether anything was paid twice or lost.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from services import reconcile
from services.allocations import REFERENCE_MISMATCH
from services.config import load_settings, sandbox_enkash_config
from services.enkash import EnkashClient
from services.models import Allocation, Employee, Status
from services.store import Ledger

NO_GRACE = timedelta(0)
# Default settings: a debit up to the approval threshold (10,000) may be sent without approval.
SETTINGS = load_settings(secrets_file=None)
# The sandbox's fault knobs that are rates (0 to 1): what a fault schedule turns on.
RATE_KNOBS = (
    "fail_before_commit_rate",
    "error_after_commit_rate",
    "drop_after_commit_rate",
    "hang_before_commit_rate",
    "malformed_rate",
    "wrong_reference_rate",
)
_people = itertools.count(1)


def client_for(server, *, timeout: float = 1.0, connect_timeout: float = 0.5, **changes):
    """A real EnKash client for a sandbox server, with short timeouts so faults stay fast."""
    config = dataclasses.replace(
        sandbox_enkash_config(server.url, server.identity),
        timeout_seconds=timeout,
        connect_timeout_seconds=connect_timeout,
        **changes,
    )
    return EnkashClient(config)


def reference() -> str:
    return f"PDT-{uuid.uuid4().hex[:20].upper()}"


def employee(n: int | None = None) -> Employee:
    n = next(_people) if n is None else n
    return Employee(
        email=f"person.{n}@example.com",
        mobile=f"9{n % 10**9:09d}",
        title="Ms",
        first_name="Asha",
        gender="F",
    )


def create(amount: str = "1000", n: int | None = None) -> Allocation:
    return Allocation(reference=reference(), kind="create", amount=amount, employee=employee(n))


def credit(card_id: str, amount: str = "100") -> Allocation:
    return Allocation(reference=reference(), kind="credit", amount=amount, card_id=card_id)


def debit(card_id: str, amount: str = "50") -> Allocation:
    return Allocation(reference=reference(), kind="debit", amount=amount, card_id=card_id)


def reset_knobs(server) -> None:
    """Every fault off (the hang length and token lifetime back to short test values)."""
    knobs = server.knobs
    for name in ("latency_ms", *RATE_KNOBS):
        setattr(knobs, name, 0)
    knobs.token_lifetime_seconds = 300
    knobs.drop_hang_seconds = 1.5
    knobs.reply_payload = {}
    knobs.refusal_envelope = {}
    knobs.next_fault, knobs.next_fault_calls = "", 0


@dataclass
class Books:
    """The ledger against the sandbox: every way the two can disagree, counted."""

    transactions: int = 0  # ledger rows
    commits: int = 0  # sandbox transactions
    double_payments: list[str] = field(default_factory=list)  # references committed > once
    succeeded_without_commit: list[str] = field(default_factory=list)
    commit_without_success: list[str] = field(default_factory=list)  # committed, ledger not ok
    failed_with_commit: list[str] = field(default_factory=list)  # FAILED yet committed: lost
    commit_not_in_ledger: list[str] = field(default_factory=list)
    wrong_card: list[str] = field(default_factory=list)
    balance_mismatches: dict[str, tuple[Decimal | None, Decimal]] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)  # UNKNOWN or SENDING
    unexplained: list[str] = field(default_factory=list)  # unresolved and not a mismatch

    @property
    def lost(self) -> int:
        """Transactions whose money the ledger does not account for correctly."""
        return (
            len(self.succeeded_without_commit)
            + len(self.failed_with_commit)
            + len(self.commit_not_in_ledger)
        )

    def problems(self, *, settled: bool) -> list[str]:
        found = []
        for name in (
            "double_payments",
            "succeeded_without_commit",
            "failed_with_commit",
            "commit_not_in_ledger",
            "wrong_card",
        ):
            if getattr(self, name):
                found.append(f"{name}: {getattr(self, name)}")
        if settled:
            for name in ("commit_without_success", "balance_mismatches", "unexplained"):
                if getattr(self, name):
                    found.append(f"{name}: {getattr(self, name)}")
        return found


def audit_books(ledger: Ledger, store) -> Books:
    """Compare every ledger row with the sandbox's committed transactions."""
    commits = store.transactions()
    per_reference = Counter(txn["pgReferenceNumber"] for txn in commits)
    committed = {txn["pgReferenceNumber"]: txn for txn in commits}
    rows = {row.reference: row for row in ledger.rows()}
    books = Books(transactions=len(rows), commits=len(commits))
    books.double_payments = sorted(ref for ref, n in per_reference.items() if n > 1)
    for ref, row in rows.items():
        txn = committed.get(ref)
        if row.status is Status.SUCCEEDED:
            if txn is None:
                books.succeeded_without_commit.append(ref)
            elif row.card_id != txn["enKashCardId"]:
                books.wrong_card.append(ref)
        elif txn is not None:
            books.commit_without_success.append(ref)
            if row.status is Status.FAILED:
                books.failed_with_commit.append(ref)
        if row.status in (Status.UNKNOWN, Status.SENDING):
            books.unresolved.append(ref)
            if row.enkash_code != REFERENCE_MISMATCH or row.status is Status.SENDING:
                books.unexplained.append(ref)
    books.commit_not_in_ledger = sorted(ref for ref in committed if ref not in rows)
    totals = ledger.card_totals()
    for card in store.cards():
        card_id = card["enKashCardId"]
        if totals.get(card_id, Decimal("0.00")) != card["balance"]:
            books.balance_mismatches[card_id] = (totals.get(card_id), card["balance"])
    return books


def assert_books_agree(ledger: Ledger, store, *, settled: bool = True) -> Books:
    books = audit_books(ledger, store)
    problems = books.problems(settled=settled)
    assert not problems, "\n".join(problems)
    return books


def settle_everything(
    ledger: Ledger,
    client: EnkashClient,
    *,
    actor: str = "test",
    rounds: int = 4,
    on_round: Callable[[], None] | None = None,
) -> None:
    """Check every unknown with EnKash, resend those proved absent, until nothing is left."""
    for _ in range(rounds):
        if on_round is not None:
            on_round()
        for result in reconcile.check_all(ledger, client, actor=actor, absence_grace=NO_GRACE):
            if result.resend_allowed:
                reconcile.resend(
                    ledger, client, result.reference, actor=actor, absence_grace=NO_GRACE
                )
        if not ledger.rows(statuses=[Status.UNKNOWN]):
            return
