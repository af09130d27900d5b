"""How fast History and Overview render over 10k, 1M (and 10M) ledger rows, SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.history [--sizes 10000,1000000] [--no-pg] [--no-sqlite]

For each size: seed the ledger straight into the table (benchmarks/seed.py, daily totals rebuilt
after), open the real app under ``AppTest`` (sandbox mode, background settle loop off so nothing
writes meanwhile), and time, with the default filters (History: the last 90 IST days):

- overview  the Overview page after ``st.cache_data.clear()`` (every query runs; uncached;
            the median of 3),
- cold      the first render of History in this process (Python imports already warm),
- uncached  a History render after ``st.cache_data.clear()``: every SQL query runs (the median
            of 3). THE target, what the first person after a change waits for,
- warm      the median of 3 History renders with nothing new in the ledger (a widget click),
- page 1 / deep   the table's first page, and a page 10,000 deep (or the last) reached by cursor,
            as History's pager does (services.history.page),

plus the peak Python memory (tracemalloc) of an uncached History render, each figure's ratio to
the smallest size, and the load average (the machine is shared: compare ratios within one run).
Verdict: uncached History and Overview < 0.5 s at 1M rows and <= 3x the smallest size there,
< 1 s at 10M (the issue's targets; the ratio is not a target at 10M).
PostgreSQL is ``POINTS_DESK_TEST_PG_URL`` or postgres@127.0.0.1:5432/test, in its own
schema that is dropped afterwards; skipped with the reason when unreachable. ``--keep`` seeds
PostgreSQL into a schema named after the size (``keep_hist_<size>``), leaves it there and reuses
it on the next run; ``--pg-url`` picks the database. ``--statements`` prints the statements each
uncached render spends its SQL time in (``benchmarks/statements.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import sqlalchemy as sa

from benchmarks.seed import bulk_insert, generate
from services.store import Ledger
from tests.pg_support import PG_URL, pg_unreachable

PROJECT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 3.0
DEEP_PAGE = 10_000


def target_seconds(size: int) -> float:
    """The uncached render's target: 0.5 s up to 1M rows, 1 s beyond."""
    return 0.5 if size <= 1_000_000 else 1.0


def _environment(data_dir: Path, database_url: str | None) -> None:
    for name in list(os.environ):
        if name.startswith(("ENKASH_", "POINTS_DESK_")) or name == "DATABASE_URL":
            del os.environ[name]
    os.environ["POINTS_DESK_DATA_DIR"] = str(data_dir)
    os.environ["POINTS_DESK_SECRETS_FILE"] = str(data_dir / "no-secrets.toml")
    os.environ["POINTS_DESK_SETTLE_INTERVAL_SECONDS"] = "0"
    if database_url:
        os.environ["DATABASE_URL"] = database_url


def _timed(at) -> float:
    started = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - started
    if at.exception:
        raise RuntimeError(f"the page failed: {at.exception}")
    return elapsed


def _uncached(at, runs: int = 3) -> float:
    """The median of ``runs`` renders, each after clearing the data cache (every query runs)."""
    import streamlit as st

    times = []
    for _ in range(runs):
        st.cache_data.clear()
        times.append(_timed(at))
    return statistics.median(times)


def _pages(ledger: Ledger) -> tuple[float, float]:
    """Seconds for the table's first page and for a page ``DEEP_PAGE`` deep reached by cursor."""
    from services import history
    from services.history import HistoryFilter

    f = HistoryFilter()
    started = time.perf_counter()
    first = history.page(ledger, f, 1)
    first_s = time.perf_counter() - started
    deep = min(DEEP_PAGE, first.pages)
    # The cursor the pager would hold after paging there (found here along the index).
    cursor = history._cursor_at(ledger, f, (deep - 1) * first.size) if deep > 1 else None
    started = time.perf_counter()
    history.page(ledger, f, deep, cursor=cursor)
    return first_s, time.perf_counter() - started


def _seeded(ledger: Ledger, size: int) -> bool:
    """Whether a kept schema already holds the ``size`` seeded rows (then it is reused)."""
    from services.store import transactions

    with ledger.reading() as conn:
        found = conn.execute(sa.select(sa.func.count()).select_from(transactions)).scalar_one()
    return found == size


def measure(
    size: int,
    backend: str,
    *,
    pg_url: str = PG_URL,
    keep: bool = False,
    statements: bool = False,
) -> dict:
    """Seed ``size`` rows on ``backend`` and time Overview and History."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    data_dir = Path(tempfile.mkdtemp(prefix=f"history-bench-{size}-"))
    schema = None
    if backend == "sqlite":
        url, app_url = f"sqlite:///{data_dir / 'ledger.db'}", None
    else:
        keep = keep and backend == "postgresql"
        schema = f"keep_hist_{size}" if keep else f"bench_{uuid.uuid4().hex[:8]}"
        url = pg_url
        app_url = f"{pg_url}?options=-csearch_path%3D{schema}"
    ledger = Ledger(url, schema=schema)
    started = time.perf_counter()
    if not (keep and _seeded(ledger, size)):
        bulk_insert(ledger, generate(size))
    seeded = time.perf_counter() - started
    page_first, page_deep = _pages(ledger)
    ledger.dispose()
    _environment(data_dir, app_url)
    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=300)
        at.run()  # the overview page opens first (and the Desk with its pool is made)
        overview = _uncached(at)
        if statements:
            from benchmarks.statements import Statements

            with Statements() as found:
                _uncached(at)
            found.report(f"{backend} {size:,} rows, the Overview's statements", runs=3)
        at.switch_page("pages/history.py")
        cold = _timed(at)
        assert at.metric, "the History page showed no figures"
        uncached = _uncached(at)
        if statements:
            with Statements() as found:
                _uncached(at)
            found.report(f"{backend} {size:,} rows, History's statements", runs=3)
        warm = statistics.median(_timed(at) for _ in range(3))
        st.cache_data.clear()
        tracemalloc.start()
        at.run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        from ui.context import _desk

        try:
            _desk().close()
        finally:
            st.cache_resource.clear()
        if schema is not None and not keep:
            engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            engine.dispose()
    return {
        "size": size,
        "backend": backend,
        "seed_s": seeded,
        "overview_s": overview,
        "cold_s": cold,
        "uncached_s": uncached,
        "warm_s": warm,
        "page1_s": page_first,
        "deep_s": page_deep,
        "peak_mb": peak / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--keep", action="store_true", help="keep and reuse the seeded schemas")
    parser.add_argument("--statements", action="store_true", help="print the slowest SQL")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    import logging

    logging.disable(logging.INFO)
    backends = [] if args.no_sqlite else ["sqlite"]
    reason = None if args.no_pg else pg_unreachable()
    if args.no_pg:
        print("PostgreSQL: skipped (--no-pg)")
    elif reason:
        print(f"PostgreSQL: skipped, unreachable ({reason})")
    else:
        backends.append("postgresql")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{'backend':<11}{'rows':>11}{'seed s':>8}{'overview':>9}{'cold':>7}{'uncached':>9}"
        f"{'warm':>7}{'page1':>7}{'deep':>7}{'peak MB':>8}{'ovw/base':>9}{'unc/base':>9}"
        f"{'MB/base':>8}{'load':>6}  target"
    )
    ok = True
    for backend in backends:
        base = None
        for size in sizes:
            figures = measure(
                size, backend, pg_url=args.pg_url, keep=args.keep, statements=args.statements
            )
            base = base or figures
            history_ratio = figures["uncached_s"] / base["uncached_s"]
            overview_ratio = figures["overview_s"] / base["overview_s"]
            memory_ratio = figures["peak_mb"] / base["peak_mb"]
            limit = target_seconds(size)
            # The ratio target is the 1M render against the 10k one; at 10M only the time counts.
            met = (
                figures["uncached_s"] < limit
                and figures["overview_s"] < limit
                and (
                    size > 1_000_000
                    or (history_ratio <= TARGET_RATIO and overview_ratio <= TARGET_RATIO)
                )
            )
            ok &= met
            print(
                f"{backend:<11}{size:>11,}{figures['seed_s']:>8.1f}{figures['overview_s']:>9.3f}"
                f"{figures['cold_s']:>7.3f}{figures['uncached_s']:>9.3f}{figures['warm_s']:>7.3f}"
                f"{figures['page1_s']:>7.3f}{figures['deep_s']:>7.3f}{figures['peak_mb']:>8.1f}"
                f"{overview_ratio:>9.2f}{history_ratio:>9.2f}{memory_ratio:>8.2f}"
                f"{os.getloadavg()[0]:>6.2f}  {'met' if met else 'MISSED'}",
                flush=True,
            )
    print(
        "target: uncached History and Overview < 0.5 s up to 1M rows and <= "
        f"{TARGET_RATIO:.0f}x the smallest size there; < 1 s beyond 1M "
        f"({'met' if ok else 'missed'})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
