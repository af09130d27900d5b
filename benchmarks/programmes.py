"""What the budget check costs: intents recorded one by one with and without a reservation, on
SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.programmes [--intents 20000] [--no-pg]

Each intent is ``Ledger.record_intent`` (its own committed transaction, as a form or a worker
records it). "without" records debits (no reservation: insert + audit event); "with" records
credits of the same size against a budgeted programme (the same, plus the one-statement
``UPDATE programmes ... WHERE <budget covers it>``). Prints intents per second of each and the
check's cost as a share of the plain insertion time. Figures, never pass/fail.

Not measured here yet: the Overview with 50 programmes over 1M rows (the Overview has no
programme cards yet).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from services.models import Allocation
from services.store import Ledger
from tests.pg_support import PG_URL, pg_unreachable


def _allocations(n: int, kind: str, programme: str) -> list[Allocation]:
    return [
        Allocation(
            reference=f"BM-{kind[:2].upper()}-{uuid.uuid4().hex[:20]}",
            kind=kind,
            amount="10",
            card_id="EKC0000000001",
            programme=programme,
        )
        for _ in range(n)
    ]


def _seconds(ledger: Ledger, allocations: list[Allocation]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) to record ``allocations`` one by one."""
    started, cpu = time.perf_counter(), time.process_time()
    for allocation in allocations:
        ledger.record_intent(allocation, operator="bench")
    return time.perf_counter() - started, time.process_time() - cpu


def measure(ledger: Ledger, n: int, chunk: int = 500) -> tuple[float, float, float, float]:
    """(intents/s without the check, with it, CPU ms per intent without, with): alternating
    chunks, so a busy machine's noise and the table's growth fall on both alike."""
    ledger.create_programme(code="BENCH", name="Bench", budget=Decimal(10 * n + 10), actor="b")
    _seconds(ledger, _allocations(200, "debit", "BENCH"))  # warm up: pool, statement caches
    plain = checked = plain_cpu = checked_cpu = 0.0
    for _ in range(max(1, n // chunk)):
        wall, cpu = _seconds(ledger, _allocations(chunk, "debit", "BENCH"))
        plain, plain_cpu = plain + wall, plain_cpu + cpu
        wall, cpu = _seconds(ledger, _allocations(chunk, "credit", "BENCH"))
        checked, checked_cpu = checked + wall, checked_cpu + cpu
    assert ledger.stored_counts() == ledger.recount()
    done = max(1, n // chunk) * chunk
    return done / plain, done / checked, plain_cpu / done * 1000, checked_cpu / done * 1000


def report(name: str, plain: float, checked: float, plain_cpu: float, checked_cpu: float) -> None:
    cost = (1 / checked - 1 / plain) / (1 / plain)
    print(
        f"{name:<11} without check {plain:6.0f} intents/s   with check {checked:6.0f} intents/s"
        f"   check costs {cost:+.1%} of an insertion (wall)   CPU of this process "
        f"{plain_cpu:.2f} / {checked_cpu:.2f} ms per intent ({checked_cpu / plain_cpu - 1:+.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intents", type=int, default=20000)
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        ledger = Ledger(f"sqlite:///{Path(folder) / 'ledger.db'}")
        try:
            report("SQLite", *measure(ledger, args.intents))
        finally:
            ledger.dispose()
    if args.no_pg:
        return
    reason = pg_unreachable()
    if reason is not None:
        print(f"PostgreSQL skipped: {reason}")
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    ledger = Ledger(PG_URL, schema=schema)
    try:
        report("PostgreSQL", *measure(ledger, args.intents))
    finally:
        with ledger.writing() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        ledger.dispose()


if __name__ == "__main__":
    main()
