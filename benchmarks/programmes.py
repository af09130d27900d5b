"""What the budget check costs: intents recorded one by one with and without a reservation, on
SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.programmes [--intents 20000] [--no-pg]

Each intent is ``Ledger.record_intent`` (its own committed transaction, as a form or a worker
records it). "without" records debits (no reservation: insert + audit event); "with" records
credits of the same size against a budgeted programme (the same, plus the one-statement
``UPDATE programmes ... WHERE <budget covers it>``). Prints intents per second of each and the
check's cost as a share of the plain insertion time. Figures, never pass/fail.

With ``--overview-rows N`` (e.g. 1000000) it also renders the Overview with ``--programmes``
programmes (50, General included) over N ledger rows spread across them, seeded like
``benchmarks.history`` (straight into the table, summaries rebuilt, the programmes' counters set
from the rows), under ``AppTest`` after ``st.cache_data.clear()`` (every query runs; the median of
3), and prints the seconds, with the programme cards' query alone (``active_reports``). Target:
under 1 s. ``--intents 0`` skips the insertion part. ``--statements`` also prints the statements
an uncached render spends its SQL time in (``benchmarks/statements.py``). ``--keep`` seeds
PostgreSQL into a schema named after the size (``keep_prog_<rows>_<programmes>``), leaves it
there and reuses it on the next run (seeding 1M rows takes minutes); ``--pg-url`` picks the
database (default ``POINTS_DESK_TEST_PG_URL``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from benchmarks.seed import bulk_insert, generate
from services.models import Allocation
from services.store import Ledger, programmes
from services.store.programmes import counts_from_rows
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


def _seed_programmes(ledger: Ledger, rows: int, count: int) -> int:
    """``count`` programmes (General and ``count - 1`` budgeted ones) and ``rows`` ledger rows
    spread across them; the counters set from the rows as the store would have kept them."""
    ids = [p.id for p in ledger.list_programmes()]  # General
    for i in range(1, count):
        made = ledger.create_programme(
            code=f"P{i:02d}", name=f"Programme {i:02d}", budget=Decimal(10**8), actor="bench"
        )
        ids.append(made.id)
    bulk_insert(ledger, generate(rows, programme_ids=ids))
    with ledger.writing() as conn:
        for pid, counts in counts_from_rows(conn).items():
            conn.execute(programmes.update().where(programmes.c.id == pid).values(**counts))
    return len(ids)


def _seeded(ledger: Ledger, rows: int) -> bool:
    """Whether a kept schema already holds the ``rows`` seeded rows (then it is reused)."""
    from services.store import transactions

    with ledger.reading() as conn:
        found = conn.execute(sa.select(sa.func.count()).select_from(transactions)).scalar_one()
    return found == rows


def overview(
    backend: str,
    rows: int,
    count: int,
    *,
    pg_url: str = PG_URL,
    keep: bool = False,
    statements: bool = False,
) -> None:
    """Seed, then time the Overview (uncached, median of 3) and its programme cards' query."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from benchmarks.history import PROJECT, _environment, _uncached
    from services import programme_reports

    data_dir = Path(tempfile.mkdtemp(prefix=f"programmes-bench-{rows}-"))
    schema = None
    if backend == "sqlite":
        url, app_url = f"sqlite:///{data_dir / 'ledger.db'}", None
    else:
        schema = f"keep_prog_{rows}_{count}" if keep else f"bench_{uuid.uuid4().hex[:8]}"
        url, app_url = pg_url, f"{pg_url}?options=-csearch_path%3D{schema}"
    ledger = Ledger(url, schema=schema)
    try:
        started = time.perf_counter()
        if keep and _seeded(ledger, rows):
            made = len(ledger.list_programmes(["active"]))
        else:
            made = _seed_programmes(ledger, rows, count)
        seeded = time.perf_counter() - started
        cards = []
        for _ in range(3):
            started, cpu = time.perf_counter(), time.process_time()
            reports = programme_reports.active_reports(ledger)
            cards.append((time.perf_counter() - started, time.process_time() - cpu))
        assert len(reports) == made
        _environment(data_dir, app_url)
        st.cache_resource.clear()
        st.cache_data.clear()
        at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=300)
        at.run()
        (table,) = [d for d in at.dataframe if "Burn per day" in d.value.columns]
        assert len(table.value) == made, f"{len(table.value)} rows for {made} programmes"
        page = _uncached(at)
        if statements:
            from benchmarks.statements import Statements

            with Statements() as found:
                _uncached(at)
            found.report(f"{backend}, the Overview's statements", runs=3)
        from ui.context import _desk

        _desk().close()
        st.cache_resource.clear()
    finally:
        if schema is not None and not keep:
            with ledger.writing() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        ledger.dispose()
    wall, cpu = sorted(cards)[1]
    print(
        f"{backend:<11} Overview, {made} programmes over {rows:,} rows (seeded in {seeded:.0f} s): "
        f"{page:.2f} s uncached ({'met' if page < 1 else 'MISSED'} < 1 s); the programme cards' "
        f"query {wall:.3f} s ({cpu:.3f} s CPU); load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intents", type=int, default=20000)
    parser.add_argument("--overview-rows", type=int, default=0)
    parser.add_argument("--programmes", type=int, default=50)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--keep", action="store_true", help="keep and reuse the seeded schema")
    parser.add_argument("--statements", action="store_true", help="print the slowest SQL")
    args = parser.parse_args()
    if args.overview_rows:
        import logging

        logging.disable(logging.INFO)
        if not args.no_sqlite:
            overview("sqlite", args.overview_rows, args.programmes, statements=args.statements)
        if not args.no_pg and pg_unreachable() is None:
            overview(
                "postgresql",
                args.overview_rows,
                args.programmes,
                pg_url=args.pg_url,
                keep=args.keep,
                statements=args.statements,
            )
    if not args.intents:
        return
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
