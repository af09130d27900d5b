"""Demo data for the sandbox: a believable incentive programme, made through the real flow.

A few hundred partner employees (Indian first names, valid emails and mobiles) get an account,
then months of credits and the odd debit, from several operators, some in bulk batches, with a
few refusals EnKash really gives (KYC under review, a debit larger than the card holds). Every
transaction goes through ``movements.request`` (a large debit is approved by another operator),
or the batch path (``record_intents``, ``claim``, ``send_claimed``), against the embedded
sandbox over loopback HTTP, several worker threads each with its own client, so the ledger and
the sandbox agree exactly as they would in use.

Afterwards the rows' ``created_at``/``updated_at`` (and their audit events, shifted by the same
amount) are spread over the last few months so the charts have history. Each card's rows keep
their order, so "latest row" (and with it the known balance) is unchanged. The sandbox's own
transactions move to the same moments, so its "allocated this month" agrees with the ledger's.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from services import allocations, approvals, movements
from services.config import Settings
from services.enkash import EnkashClient
from services.models import Allocation, Employee, Kind, Status
from services.store import Ledger

if TYPE_CHECKING:
    from services.sandbox.store import SandboxStore

WOMEN = [
    "Aadhya",
    "Ananya",
    "Diya",
    "Saanvi",
    "Pari",
    "Anika",
    "Navya",
    "Myra",
    "Ira",
    "Priya",
    "Kavya",
    "Meera",
    "Lakshmi",
    "Divya",
    "Pooja",
    "Neha",
    "Sneha",
    "Sunita",
    "Rekha",
    "Asha",
    "Geeta",
    "Shruti",
    "Swati",
    "Nandini",
    "Revathi",
    "Deepika",
    "Aishwarya",
    "Bhavna",
    "Farah",
    "Harpreet",
    "Jyoti",
    "Madhuri",
    "Nisha",
    "Pallavi",
    "Radhika",
    "Shalini",
    "Tanvi",
    "Uma",
    "Vidya",
    "Zoya",
]
MEN = [
    "Aarav",
    "Vivaan",
    "Aditya",
    "Vihaan",
    "Arjun",
    "Sai",
    "Reyansh",
    "Krishna",
    "Ishaan",
    "Shaurya",
    "Rohan",
    "Kabir",
    "Rahul",
    "Vikram",
    "Karthik",
    "Suresh",
    "Ramesh",
    "Ganesh",
    "Harish",
    "Manoj",
    "Deepak",
    "Anil",
    "Sanjay",
    "Amit",
    "Gaurav",
    "Imran",
    "Jatin",
    "Mohit",
    "Naveen",
    "Pranav",
    "Rajesh",
    "Siddharth",
    "Tarun",
    "Varun",
    "Yash",
    "Zubin",
    "Abhishek",
    "Chetan",
    "Dinesh",
    "Farhan",
]
SURNAMES = [
    "sharma",
    "iyer",
    "nair",
    "reddy",
    "patel",
    "gupta",
    "rao",
    "menon",
    "singh",
    "das",
    "mukherjee",
    "kulkarni",
    "joshi",
    "pillai",
    "khan",
    "verma",
    "chatterjee",
    "banerjee",
    "naidu",
    "shetty",
    "bhat",
    "desai",
    "mehta",
    "kapoor",
    "malhotra",
]
OPERATORS = ("priya.menon", "arjun.rao", "kavya.iyer", "rahul.sharma")
REASONS = (
    "Monthly sales incentive",
    "Target achieved",
    "Festive bonus",
    "Star performer",
    "Referral reward",
    "Quarter-end incentive",
)
DEBIT_REASONS = ("Reversal of duplicate award", "Correction: wrong amount", "Recovery on exit")
_MOBILE_PREFIXES = ("98", "97", "96", "95", "94", "93", "91", "90", "88", "87", "86", "85", "70")


@dataclass
class _Step:
    kind: Kind
    amount: Decimal
    when: datetime
    reason: str
    operator: str
    batch_id: str | None = None
    row_number: int | None = None


@dataclass
class _Person:
    employee: Employee
    steps: list[_Step]
    card_id: str | None = None
    dead: bool = False  # the account was refused: nothing more for this person


@dataclass
class DemoReport:
    """What ``load`` did, and whether the sandbox and the ledger agree afterwards."""

    employees: int = 0
    transactions: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    mismatched_cards: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.mismatched_cards


def _employee(rng: random.Random, tag: str, index: int) -> Employee:
    woman = rng.random() < 0.45
    first = rng.choice(WOMEN if woman else MEN)
    email = f"{first.lower()}.{rng.choice(SURNAMES)}.{tag}{index}@partner-demo.in"
    while True:
        mobile = rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
        try:
            return Employee(
                email=email,
                mobile=mobile,
                title="Ms" if woman else "Mr",
                first_name=first,
                gender="F" if woman else "M",
            )
        except ValueError:  # a number outside India's mobile ranges: draw another
            continue


def plan(
    employees: int, *, months: int = 6, seed: int | None = None, now: datetime | None = None
) -> list[_Person]:
    """Who gets what, when: each person's steps in date order (no HTTP yet)."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    start = now - timedelta(days=30 * months)
    span = (now - start).total_seconds()
    tag = f"{rng.randrange(36**4):x}"  # keeps emails unique when demo data is loaded twice
    batches = [
        (f"DEMO-{tag}-{label}", start + timedelta(seconds=span * share))
        for label, share in (("QTR", 0.45), ("FEST", 0.8))
    ]
    batch_rows: dict[str, int] = defaultdict(int)
    people = []
    for index in range(employees):
        employee = _employee(rng, tag, index)
        if index % 97 == 13:  # a few accounts EnKash refuses (KYC under review)
            employee = employee.model_copy(
                update={"email": employee.email.replace("@", ".kyc-pending@")}
            )
        # Most of the programme joins early; some join along the way.
        joined = start + timedelta(seconds=span * rng.random() ** 1.6 * 0.9)
        opening = Decimal(rng.choice([500, 1000, 1500, 2000, 2500, 5000]))
        steps = [_Step(Kind.CREATE, opening, joined, "Welcome points", rng.choice(OPERATORS))]
        moments = sorted(
            joined + timedelta(seconds=(now - joined).total_seconds() * rng.random())
            for _ in range(rng.randint(2, 8))
        )
        for moment in moments:
            roll = rng.random()
            if roll < 0.13:
                steps.append(_Step(Kind.DEBIT, Decimal(0), moment, "", rng.choice(OPERATORS)))
            elif roll < 0.145:  # a debit larger than the card holds: EnKash refuses it
                steps.append(
                    _Step(
                        Kind.DEBIT, Decimal(-1), moment, "Recovery on exit", rng.choice(OPERATORS)
                    )
                )
            else:
                amount = Decimal(rng.choice([250, 500, 750, 1000, 1500, 2000, 3000]))
                amount += rng.choice([Decimal(0), Decimal("0.50")])
                steps.append(
                    _Step(Kind.CREDIT, amount, moment, rng.choice(REASONS), rng.choice(OPERATORS))
                )
        for batch_id, when in batches:
            if joined < when and rng.random() < 0.55:
                batch_rows[batch_id] += 1
                steps.append(
                    _Step(
                        Kind.CREDIT,
                        Decimal(rng.choice([1000, 2000, 2500])),
                        when + timedelta(seconds=rng.randrange(900)),
                        "Bulk: quarter-end incentive" if "QTR" in batch_id else "Bulk: Diwali",
                        "bulk-upload",
                        batch_id,
                        batch_rows[batch_id],
                    )
                )
        steps.sort(key=lambda step: step.when)
        # Debit amounts follow the balance at their own moment: a share of it, or (the planned
        # refusals) more than the card holds.
        balance = Decimal(0)
        kept = []
        for step in steps:
            if step.kind is Kind.DEBIT:
                if step.amount < 0:
                    step.amount = balance + 1000
                    kept.append(step)
                    continue
                if balance < 200:
                    continue
                step.amount = Decimal(rng.randrange(1, int(balance * Decimal("0.4")) // 100 + 2))
                step.amount = min(step.amount * 100, balance)
                step.reason = rng.choice(DEBIT_REASONS)
                balance -= step.amount
            else:
                balance += step.amount
            kept.append(step)
        steps = kept
        people.append(_Person(employee, steps))
    return people


def load(
    ledger: Ledger,
    new_client: Callable[[], EnkashClient],
    settings: Settings,
    sandbox: SandboxStore | None,
    employees: int = 300,
    *,
    months: int = 6,
    workers: int = 8,
    seed: int | None = None,
    now: datetime | None = None,
) -> DemoReport:
    """Seed the sandbox and the ledger with a demo programme. Sandbox mode only.

    ``new_client`` makes an EnKash client for one worker thread (``Desk.new_client``);
    ``sandbox`` is the sandbox's store (``Desk.sandbox.store``), ``None`` outside the sandbox.
    """
    if sandbox is None:
        raise RuntimeError("Demo data is only for the sandbox: no real points may move")
    started = time.monotonic()
    people = plan(employees, months=months, seed=seed, now=now)
    local = threading.local()
    clients: list[EnkashClient] = []
    clients_lock = threading.Lock()
    when_of: dict[str, datetime] = {}
    outcomes: dict[str, int] = defaultdict(int)
    count_lock = threading.Lock()

    def client() -> EnkashClient:
        if not hasattr(local, "client"):
            local.client = new_client()
            with clients_lock:
                clients.append(local.client)
        return local.client

    def record(person: _Person, step: _Step, row: Any) -> None:
        with count_lock:
            outcomes[row.status.value] += 1
            when_of[row.reference] = step.when
        if row.status is Status.SUCCEEDED and row.card_id:
            person.card_id = row.card_id
        elif step.kind is Kind.CREATE:
            person.dead = True

    def allocation(person: _Person, step: _Step, reference: str) -> Allocation:
        return Allocation(
            reference=reference,
            kind=step.kind,
            amount=step.amount,
            employee=person.employee,
            card_id=None if step.kind is Kind.CREATE else person.card_id,
            reason=step.reason,
        )

    def direct(person: _Person, step: _Step) -> None:
        done = movements.request(
            ledger,
            client(),
            allocation(person, step, allocations.new_reference("DM")),
            settings,
            operator=step.operator,
            session_id="demo-data",
        )
        if done.row.status is Status.QUEUED:
            # A large debit waited for a second person: another operator approves it (and so
            # sends it), as a team would.
            held = approvals.for_subject(ledger, "debit", done.row.reference)
            assert held is not None
            checker = next(name for name in OPERATORS if name != step.operator)
            done = approvals.approve(ledger, held.id, approver=checker, client=client()).outcome
            assert done is not None
        record(person, step, done.row)

    def queued(person: _Person, step: _Step, reference: str) -> None:
        if ledger.claim(reference, actor=step.operator):
            record(
                person, step, allocations.send_claimed(ledger, client(), reference, actor="bulk")
            )

    # Round k sends everyone's k-th step at once: one card's steps never overlap, so each card's
    # ledger order is its EnKash order, and the known balance is the sandbox's balance.
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo") as pool:
            for k in range(max(len(p.steps) for p in people)):
                due = [(p, p.steps[k]) for p in people if k < len(p.steps) and not p.dead]
                tasks: list[Callable[[], None]] = []
                by_batch: dict[str, list[tuple[_Person, _Step]]] = defaultdict(list)
                for person, step in due:
                    if step.batch_id:
                        by_batch[step.batch_id].append((person, step))
                    else:
                        tasks.append(lambda p=person, s=step: direct(p, s))
                for batch_id, members in by_batch.items():
                    ledger.record_intents(
                        [
                            (
                                allocation(
                                    p, s, allocations.batch_reference(batch_id, s.row_number)
                                ),
                                s.row_number,
                            )  # type: ignore[misc]
                            for p, s in members
                        ],
                        operator="bulk-upload",
                        batch_id=batch_id,
                        session_id="demo-data",
                    )
                    for p, s in members:
                        ref = allocations.batch_reference(batch_id, s.row_number)  # type: ignore[arg-type]
                        tasks.append(lambda p=p, s=s, r=ref: queued(p, s, r))
                for future in [pool.submit(task) for task in tasks]:
                    future.result()
    finally:
        for each in clients:
            each.close()
    _redate(ledger, when_of)
    sandbox.redate(when_of)
    report = DemoReport(
        employees=len(people),
        transactions=sum(outcomes.values()),
        outcomes=dict(outcomes),
        seconds=time.monotonic() - started,
    )
    report.mismatched_cards = disagreements(ledger, sandbox)
    return report


def _redate(ledger: Ledger, when_of: dict[str, datetime]) -> None:
    """Move each demo row (and its audit events, by the same amount) to its planned moment."""
    ledger.redate(when_of)


def disagreements(ledger: Ledger, sandbox: SandboxStore | None) -> list[str]:
    """Cards whose sandbox balance differs from the ledger's known balance (should be none)."""
    if sandbox is None:
        raise RuntimeError("only the sandbox can be compared card by card")
    wrong = []
    for card in sandbox.cards():
        known = ledger.known_balance(card["enKashCardId"])
        if known is not None and known != card["balance"]:
            wrong.append(card["enKashCardId"])
    return wrong
