"""Randomised fault schedules against the sandbox: does anything get paid twice or lost?

    .venv/bin/python benchmarks/faults.py --schedules 50 --seed 7

Each schedule resets the sandbox, turns random fault knobs on (failures before and after the
commit, hangs, dropped replies, malformed replies, wrong references, short-lived tokens, latency),
runs a random sequence of create / credit / debit through ``allocations.submit`` (with the odd
simulated crash mid-call), then turns the faults off and settles: every unknown is looked up,
every one proved absent is resent with its same reference. It prints:

- double payments: references the sandbox committed more than once (must be 0);
- lost transactions: a SUCCEEDED row with no sandbox commit, a FAILED row that did commit, or a
  sandbox commit whose ledger row is not SUCCEEDED after settling (must be 0);
- unresolved at the end: rows still UNKNOWN or SENDING (reference mismatches not found by
  lookup would be listed for a person; the sandbox always commits those, so expect 0).

For contrast, the same schedules run a naive policy (retry an unknown outcome with a new reference,
as a person clicking "submit" again would) and count the intents it paid more than once.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.allocations import submit
from services.enkash import BusinessRefusal, EnkashError
from services.models import Status
from services.sandbox import start_sandbox
from services.store import Ledger
from tests.fault_support import (
    RATE_KNOBS,
    SETTINGS,
    audit_books,
    client_for,
    create,
    credit,
    debit,
    reference,
    reset_knobs,
    settle_everything,
)

READ_TIMEOUT = 0.2
HANG = 0.35


@dataclass
class Totals:
    schedules: int = 0
    attempted: int = 0
    outcomes: Counter = field(default_factory=Counter)  # first outcome of each transaction
    became_unknown: int = 0
    settled_by_lookup: int = 0
    resent_after_proof: int = 0
    crashes: int = 0
    double_payments: int = 0
    lost: int = 0
    unresolved: int = 0
    mismatches: int = 0
    naive_intents: int = 0
    naive_paid_twice: int = 0


def random_knobs(server, rng: random.Random, seed: int) -> str:
    reset_knobs(server)
    knobs = server.knobs
    knobs.drop_hang_seconds = HANG
    knobs.seed = seed
    chosen = rng.sample(RATE_KNOBS, rng.randint(1, 3))
    budget = rng.uniform(0.1, 0.6)
    for name in chosen:
        setattr(knobs, name, round(budget / len(chosen), 3))
    knobs.latency_ms = rng.choice([0, 0, 5, 20])
    knobs.token_lifetime_seconds = rng.choice([300, 300, 2])
    return ", ".join(f"{name.removesuffix('_rate')}={getattr(knobs, name)}" for name in chosen)


def plan(rng: random.Random, operations: int) -> list[tuple[str, int, int]]:
    """(kind, amount, card pick) steps; the same plan drives both policies."""
    steps = [("create", rng.randint(500, 3000), 0)]
    for _ in range(operations - 1):
        kind = rng.choices(["create", "credit", "debit", "crash"], weights=[2, 5, 4, 1])[0]
        steps.append((kind, rng.randint(1, 1500), rng.randint(0, 10**6)))
    return steps


def run_points_desk(server, steps, totals: Totals) -> None:
    ledger = Ledger("sqlite://")
    client = client_for(server, timeout=READ_TIMEOUT)
    try:
        for kind, amount, pick in steps:
            cards = sorted(ledger.card_totals())
            if kind == "create" or not cards:
                allocation = create(str(amount))
            elif kind == "debit":
                allocation = debit(cards[pick % len(cards)], str(amount))
            else:
                allocation = credit(cards[pick % len(cards)], str(amount))
            totals.attempted += 1
            if kind == "crash":
                # The process dies mid-call: intent durable, reply (if any) never recorded.
                totals.crashes += 1
                ledger.record_intent(allocation, operator="bench")
                if pick % 2:
                    with contextlib.suppress(EnkashError):
                        client.allocate(allocation)
                ledger.recover_interrupted(actor="restart")
                totals.outcomes["crashed"] += 1
                continue
            outcome = submit(ledger, client, allocation, operator="bench", settings=SETTINGS)
            totals.outcomes[outcome.status.value] += 1
        reset_knobs(server)
        settle_everything(ledger, client, actor="bench", rounds=6)
        books = audit_books(ledger, server.store)
        totals.double_payments += len(books.double_payments)
        totals.lost += books.lost + len(books.commit_without_success)
        totals.unresolved += len(books.unresolved)
        for row in ledger.rows():
            for event in ledger.audit_trail(row.reference):
                if event.from_status is Status.SENDING and event.to_status is Status.UNKNOWN:
                    totals.became_unknown += 1
                elif event.detail.startswith("settled by lookup"):
                    totals.settled_by_lookup += 1
                elif event.detail.startswith("resend with the same reference"):
                    totals.resent_after_proof += 1
            totals.mismatches += row.enkash_code == "REFERENCE_MISMATCH"
    finally:
        client.close()
        ledger.dispose()


def run_naive(server, steps, totals: Totals) -> None:
    """Retry an unknown outcome with a fresh reference, up to 3 tries, never looking it up."""
    cards: list[str] = []
    intents: dict[str, int] = {}  # reference -> intent number
    client = client_for(server, timeout=READ_TIMEOUT)
    try:
        for number, (kind, amount, pick) in enumerate(steps):
            if kind == "crash":
                continue
            totals.naive_intents += 1
            base = (
                create(str(amount))
                if kind == "create" or not cards
                else (debit if kind == "debit" else credit)(cards[pick % len(cards)], str(amount))
            )
            for _ in range(3):
                allocation = base.model_copy(update={"reference": reference()})
                intents[allocation.reference] = number
                try:
                    result = client.allocate(allocation)
                except BusinessRefusal:
                    break
                except EnkashError:
                    continue  # "it didn't work, try again"
                if result.card_id not in cards:
                    cards.append(result.card_id)
                break
    finally:
        client.close()
    paid = Counter(
        intents[t["pgReferenceNumber"]]
        for t in server.store.transactions()
        if t["pgReferenceNumber"] in intents
    )
    totals.naive_paid_twice += sum(1 for n in paid.values() if n > 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--operations", type=int, default=20, help="per schedule")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive policy")
    parser.add_argument("--verbose", action="store_true", help="one line per schedule")
    args = parser.parse_args()

    import logging

    logging.disable(logging.WARNING)  # the client logs every injected fault; figures only here
    rng = random.Random(args.seed)
    totals = Totals()
    server = start_sandbox()
    started = time.monotonic()
    try:
        for index in range(args.schedules):
            schedule_seed = rng.randrange(2**31)
            schedule_rng = random.Random(schedule_seed)
            steps = plan(schedule_rng, args.operations)
            server.store.reset()
            faults = random_knobs(server, schedule_rng, schedule_seed)
            before = (totals.double_payments, totals.lost, totals.unresolved)
            run_points_desk(server, steps, totals)
            if not args.no_baseline:
                server.store.reset()
                random_knobs(server, random.Random(schedule_seed), schedule_seed)
                run_naive(server, steps, totals)
            totals.schedules += 1
            if args.verbose:
                after = (totals.double_payments, totals.lost, totals.unresolved)
                print(
                    f"  schedule {index + 1:3d} [{faults}] double/lost/unresolved +"
                    f"{[a - b for a, b in zip(after, before, strict=True)]}"
                )
    finally:
        server.stop()
    elapsed = time.monotonic() - started

    print(
        f"Fault schedules run:          {totals.schedules} (seed {args.seed}, "
        f"{args.operations} operations each)"
    )
    print(
        f"Transactions attempted:       {totals.attempted} "
        f"(first outcome: {dict(sorted(totals.outcomes.items()))})"
    )
    print(f"  became unknown (any time):  {totals.became_unknown}")
    print(f"  settled by lookup:          {totals.settled_by_lookup}")
    print(f"  resent after proof absent:  {totals.resent_after_proof}")
    print(f"  reference mismatches:       {totals.mismatches} (settled; listed for investigation)")
    print(f"Double payments:              {totals.double_payments}")
    print(f"Lost transactions:            {totals.lost}")
    print(f"Unresolved at the end:        {totals.unresolved}")
    if not args.no_baseline:
        share = totals.naive_paid_twice / totals.naive_intents if totals.naive_intents else 0
        print(
            f"Baseline, naive retry with a new reference: {totals.naive_paid_twice} of "
            f"{totals.naive_intents} intents paid more than once ({share:.1%})"
        )
    print(f"Elapsed: {elapsed:.1f} s")
    return 1 if totals.double_payments or totals.lost or totals.unresolved else 0


if __name__ == "__main__":
    sys.exit(main())
