"""Demo data for the sandbox: a believable incentive programme, made through the real flow.

A few hundred partner employees (Indian first names, valid emails and mobiles) join a programme
over the last few months, and the programme runs as a team would run it:

- each month's **joiners** get their account and welcome points from one file, and most people
  get a **monthly incentive** from another; a quarter-end and a Diwali file go to about half;
- between files, operators make **single** credits and debits (the Credit and Debit forms'
  path: ``movements.request``; a large debit waits for, and gets, another operator's approval),
  including the refusals EnKash really gives (KYC under review, a debit larger than the card
  holds).

Files go through exactly what a manager's upload does: a CSV read and checked
(``bulk.preview_upload``), queued (``bulk.queue_batch``), approved by a second operator when
above the batch threshold, and sent by the bulk runner (concurrent sends, claims and outcomes
group-committed; ``services/bulk.py``). Everything is sent to the embedded sandbox over loopback
HTTP, so the ledger and the sandbox agree exactly as they would in use.

Each card appears at most once in a file, and files and single movements are sent in the order
of their planned dates, so every card's ledger order is its EnKash order and its known balance
is the sandbox's. Afterwards the rows' ``created_at``/``updated_at`` (and their audit events,
shifted by the same amount) and the batches' times are moved to their planned moments, so the
charts and *Recent batches* have history. The sandbox's own transactions move to the same
moments, so its "allocated this month" agrees with the ledger's.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from services import allocations, approvals, bulk, movements
from services.bulk_files import COLUMNS
from services.config import Settings
from services.enkash import EnkashClient
from services.models import Allocation, Employee, Kind, Status
from services.spreadsheet import to_csv
from services.store import Ledger

if TYPE_CHECKING:
    from services.bulk import BatchRunner
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


SLOT_DAYS = 30  # the programme's "months": the last ends now
FILE_CONCURRENCY = 16  # rows a demo file sends at a time (the Bulk page's default is 8)
JOINERS_DAY, SPECIAL_DAY, MONTHLY_DAY = 1, 12, 25  # when in its slot each kind of file is sent
# Single movements fall on these days of a slot, clear of the files' days, so a card's single
# movements and its file rows never share a moment.
SINGLE_DAYS = (*range(3, 11), *range(15, 23))


@dataclass
class _File:
    """One bulk file of the plan: its name, moment and uploader."""

    name: str
    when: datetime
    operator: str
    reason: str


@dataclass
class _Step:
    kind: Kind
    amount: Decimal
    when: datetime
    reason: str
    operator: str
    file: _File | None = None  # None: a single movement (the forms' path)


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
    batches: list[str] = field(default_factory=list)  # the files' batch ids, in sending order
    singles: int = 0  # transactions sent one at a time (movements.request)

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


def _files(
    rng: random.Random, start: datetime, months: int, tag: str
) -> tuple[list[_File], list[_File], dict[int, _File]]:
    """The plan's files: joiners and monthly incentive per slot, and the two special files."""

    def at(slot: int, day: int, label: str, reason: str) -> _File:
        when = start + timedelta(days=SLOT_DAYS * slot + day, hours=4 + rng.random() * 6)
        month = when.strftime("%Y-%m")
        return _File(f"demo-{tag}-{label}-{month}.csv", when, rng.choice(OPERATORS), reason)

    joiners = [at(m, JOINERS_DAY, "joiners", "Welcome points") for m in range(months)]
    monthly = [at(m, MONTHLY_DAY, "monthly", "Monthly sales incentive") for m in range(months)]
    special = {
        int(months * 0.45): at(int(months * 0.45), SPECIAL_DAY, "quarter-end", "Bulk: quarter-end"),
        int(months * 0.8): at(int(months * 0.8), SPECIAL_DAY + 1, "diwali", "Bulk: Diwali"),
    }
    return joiners, monthly, special


def plan(
    employees: int, *, months: int = 6, seed: int | None = None, now: datetime | None = None
) -> list[_Person]:
    """Who gets what, when: each person's steps in date order (no HTTP yet)."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    start = now - timedelta(days=SLOT_DAYS * months)
    tag = f"{rng.randrange(36**4):x}"  # keeps emails unique when demo data is loaded twice
    joiners, monthly, special = _files(rng, start, months, tag)
    people = []
    for index in range(employees):
        employee = _employee(rng, tag, index)
        if index % 97 == 13:  # a few accounts EnKash refuses (KYC under review)
            employee = employee.model_copy(
                update={"email": employee.email.replace("@", ".kyc-pending@")}
            )
        # Most of the programme joins in the first slot; some join along the way.
        joined = min(months - 1, int(months * rng.random() ** 1.6 * 0.9))
        opening = Decimal(rng.choice([500, 1000, 1500, 2000, 2500, 5000]))
        steps = [_step(Kind.CREATE, opening, joiners[joined], rng)]
        # A card's file credits differ in amount, so no file repeats an earlier file's row (the
        # bulk check would ask the manager to acknowledge a repeat).
        used: set[Decimal] = set()
        for slot in range(joined, months):
            if rng.random() < 0.8:
                steps.append(
                    _file_credit(rng, used, monthly[slot], [250, 500, 750, 1000, 1500, 2000, 3000])
                )
            if slot in special and rng.random() < 0.55:
                steps.append(_file_credit(rng, used, special[slot], [1000, 2000, 2500]))
            for _ in range(rng.choice([0, 0, 0, 1])):
                moment = start + timedelta(
                    days=SLOT_DAYS * slot + rng.choice(SINGLE_DAYS), seconds=rng.randrange(86400)
                )
                if moment >= now:
                    continue
                roll = rng.random()
                operator = rng.choice(OPERATORS)
                if roll < 0.35:
                    steps.append(_Step(Kind.DEBIT, Decimal(0), moment, "", operator))
                elif roll < 0.41:  # a debit larger than the card holds: EnKash refuses it
                    steps.append(
                        _Step(Kind.DEBIT, Decimal(-1), moment, "Recovery on exit", operator)
                    )
                else:
                    amount = Decimal(rng.choice([250, 500, 750, 1000, 1500, 2000, 3000]))
                    steps.append(_Step(Kind.CREDIT, amount, moment, rng.choice(REASONS), operator))
        steps.sort(key=lambda step: step.when)
        people.append(_Person(employee, _debit_amounts(rng, steps)))
    return people


def _file_credit(rng: random.Random, used: set[Decimal], file: _File, choices: list[int]) -> _Step:
    """A credit row of ``file`` whose amount none of the card's earlier file credits has."""
    while True:
        amount = Decimal(rng.choice(choices)) + rng.choice([Decimal(0), Decimal("0.50")])
        if amount not in used:
            used.add(amount)
            return _step(Kind.CREDIT, amount, file, rng)


def _step(kind: Kind, amount: Decimal, file: _File, rng: random.Random) -> _Step:
    """A file's row: the file's moment (a few minutes in), reason and uploader."""
    when = file.when + timedelta(seconds=rng.randrange(900))
    return _Step(kind, amount, when, file.reason, file.operator, file)


def _debit_amounts(rng: random.Random, steps: list[_Step]) -> list[_Step]:
    """Debit amounts follow the balance at their own moment: a share of it, or (the planned
    refusals) more than the card holds; a debit of a card holding little is dropped."""
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
    return kept


def _stages(people: list[_Person]) -> list[tuple[_File | None, list[tuple[_Person, _Step]]]]:
    """Every step, in date order, cut into what is sent together: a whole file, or a run of
    single movements between two files (sent as waves in which each card appears once)."""
    ordered = sorted(
        ((person, step) for person in people for step in person.steps), key=lambda ps: ps[1].when
    )
    stages: list[tuple[_File | None, list[tuple[_Person, _Step]]]] = []
    for person, step in ordered:
        if not stages or stages[-1][0] is not step.file:
            stages.append((step.file, []))
        stages[-1][1].append((person, step))
    return stages


def _waves(members: list[tuple[_Person, _Step]]) -> list[list[tuple[_Person, _Step]]]:
    """Single movements in date order as waves: a card's k-th movement is in wave k."""
    waves: list[list[tuple[_Person, _Step]]] = []
    seen: dict[int, int] = defaultdict(int)
    for person, step in members:
        k = seen[id(person)]
        seen[id(person)] += 1
        if k == len(waves):
            waves.append([])
        waves[k].append((person, step))
    return waves


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
    runner: BatchRunner | None = None,
) -> DemoReport:
    """Seed the sandbox and the ledger with a demo programme. Sandbox mode only.

    ``new_client`` makes an EnKash client for one thread (``Desk.new_client``); ``sandbox`` is
    the sandbox's store (``Desk.sandbox.store``), ``None`` outside the sandbox. ``runner`` sends
    the files (``Desk.runner``, so the process's embedded worker shares the job rather than
    starting a second one); by default a runner of its own. ``workers``: threads sending single
    movements.
    """
    if sandbox is None:
        raise RuntimeError("Demo data is only for the sandbox: no real points may move")
    started = time.monotonic()
    people = plan(employees, months=months, seed=seed, now=now)
    runner = runner or bulk.BatchRunner(ledger, new_client, settings)
    when_of: dict[str, datetime] = {}
    batch_times: dict[str, datetime] = {}
    outcomes: dict[str, int] = defaultdict(int)
    count_lock = threading.Lock()
    report = DemoReport(employees=len(people))

    def record(person: _Person, step: _Step, row: Any) -> None:
        with count_lock:
            outcomes[row.status.value] += 1
            when_of[row.reference] = step.when
        if row.status is Status.SUCCEEDED and row.card_id:
            person.card_id = row.card_id
        elif step.kind is Kind.CREATE:
            person.dead = True

    def single(clients: _ThreadClients, person: _Person, step: _Step) -> None:
        client = clients.get()
        done = movements.request(
            ledger,
            client,
            _allocation(person, step, allocations.new_reference("DM")),
            settings,
            operator=step.operator,
            session_id="demo-data",
        )
        if done.row.status is Status.QUEUED:
            # A large debit waited for a second person: another operator approves it (and so
            # sends it), as a team would.
            held = approvals.for_subject(ledger, "debit", done.row.reference)
            assert held is not None
            checker = _other_operator(step.operator)
            done = approvals.approve(ledger, held.id, approver=checker, client=client).outcome
            assert done is not None
        record(person, step, done.row)

    def send_file(file: _File, members: list[tuple[_Person, _Step]]) -> None:
        members = [
            (p, s) for p, s in members if not p.dead and (p.card_id or s.kind is Kind.CREATE)
        ]
        if not members:
            return
        content = to_csv(list(COLUMNS), [_csv_row(p, s) for p, s in members])
        with _ThreadClients(new_client) as clients:
            preview = bulk.preview_upload(ledger, clients.lend, settings, file.name, content)
        if preview.rejected:  # the plan only writes rows a manager's file could carry
            raise RuntimeError(f"demo file {file.name}: rows refused: {preview.rejected[:3]}")
        record_ = bulk.queue_batch(
            ledger,
            preview,
            operator=file.operator,
            concurrency=FILE_CONCURRENCY,
            session_id="demo-data",
        )
        batch_id = record_.batch_id
        if bulk.start_or_ask_approval(ledger, settings, batch_id, actor=file.operator):
            held = approvals.for_subject(ledger, "batch", batch_id)
            assert held is not None
            checker = _other_operator(file.operator)
            approvals.approve(ledger, held.id, approver=checker)
            bulk.start_batch(ledger, settings, batch_id, actor=checker)
        runner.start(batch_id, actor=file.operator)
        runner.wait(batch_id)
        sent = ledger.get_batch(batch_id)
        if sent is None or sent.state != "finished":  # paused: EnKash unreachable, say
            raise RuntimeError(f"demo file {file.name} stopped: {sent and sent.note}")
        by_number = {n: ps for n, ps in enumerate(members, start=2)}  # row 1 is the header
        for row in ledger.rows(batch_id=batch_id):
            person, step = by_number[row.row_number]  # type: ignore[index]
            record(person, step, row)
        batch_times[batch_id] = file.when
        report.batches.append(batch_id)

    for file, members in _stages(people):
        if file is not None:
            send_file(file, members)
            continue
        # Clients of this run of single movements only: a connection left idle while a file
        # is sent would be closed by the server, and a POST on it has an unknown outcome.
        with (
            _ThreadClients(new_client) as clients,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo") as pool,
        ):
            for wave in _waves(members):
                due = [(p, s) for p, s in wave if not p.dead and p.card_id]
                report.singles += len(due)
                for future in [pool.submit(single, clients, p, s) for p, s in due]:
                    future.result()
    _redate(ledger, when_of, batch_times)
    sandbox.redate(when_of)
    report.outcomes = dict(outcomes)
    report.transactions = sum(outcomes.values())
    report.seconds = time.monotonic() - started
    report.mismatched_cards = disagreements(ledger, sandbox)
    return report


class _ThreadClients:
    """One EnKash client per thread, all closed together at the end of a ``with`` block."""

    def __init__(self, new_client: Callable[[], EnkashClient]):
        self._new_client = new_client
        self._local = threading.local()
        self._made: list[EnkashClient] = []
        self._lock = threading.Lock()

    def get(self) -> EnkashClient:
        if not hasattr(self._local, "client"):
            self._local.client = self._new_client()
            with self._lock:
                self._made.append(self._local.client)
        return self._local.client

    @contextmanager
    def lend(self) -> Iterator[EnkashClient]:
        """This thread's client for a ``with`` block (``bulk.preview_upload``'s factory)."""
        yield self.get()

    def __enter__(self) -> _ThreadClients:
        return self

    def __exit__(self, *_: object) -> None:
        for client in self._made:
            client.close()


def _other_operator(operator: str) -> str:
    """The second person who approves what ``operator`` asked for."""
    return next(name for name in OPERATORS if name != operator)


def _allocation(person: _Person, step: _Step, reference: str) -> Allocation:
    return Allocation(
        reference=reference,
        kind=step.kind,
        amount=step.amount,
        employee=person.employee,
        card_id=None if step.kind is Kind.CREATE else person.card_id,
        reason=step.reason,
    )


def _csv_row(person: _Person, step: _Step) -> list[Any]:
    """The step as a row of the Bulk page's template (``bulk_files.COLUMNS``)."""
    employee = person.employee
    values: dict[str, Any] = {"kind": step.kind.value, "amount": step.amount}
    values["reason"] = step.reason
    if step.kind is Kind.CREATE:
        values.update(
            first_name=employee.first_name,
            title=employee.title,
            gender=employee.gender,
            email=employee.email,
            mobile=employee.mobile,
        )
    else:
        values["card_id"] = person.card_id
    return [values.get(column) for column in COLUMNS]


def _redate(ledger: Ledger, when_of: dict[str, datetime], batch_times: dict[str, datetime]) -> None:
    """Move each demo row (and its audit events, by the same amount) to its planned moment, and
    each demo batch to its file's moment (it started then and finished with its last row)."""
    ledger.redate(when_of)
    for batch_id, when in batch_times.items():
        last = max((row.updated_at for row in ledger.rows(batch_id=batch_id)), default=when)
        ledger.update_batch(
            batch_id, created_at=when, started_at=when, heartbeat_at=last, finished_at=last
        )


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
