"""How fast the History page renders over 10k, 100k and 1M ledger rows, on SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.history [--sizes 10000,100000,1000000] [--no-pg]

For each size: seed the ledger straight into the table (benchmarks/seed.py), open the real app
under ``AppTest`` (sandbox mode, background settle loop off so nothing writes meanwhile), and
time the History page with its default filters (the last 90 IST days):

- cold      the first render of the page in this process (Python imports already warm),
- uncached  a render after ``st.cache_data.clear()``: every SQL query runs,
- warm      the median of 3 renders with nothing new in the ledger (what a user gets when they
            click a widget): the change-marker query plus cached aggregates and rendering,

plus the peak Python memory (tracemalloc) of an uncached render, and the ratios to 10k.
PostgreSQL is ``POINTS_DESK_TEST_PG_URL`` or postgres@127.0.0.1:5432/test, in its own schema that
is dropped afterwards; skipped with the reason when unreachable.
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
TARGET_SECONDS = 1.5
TARGET_RATIO = 3.0


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


def measure(size: int, backend: str) -> dict:
    """Seed ``size`` rows on ``backend`` and time the History page."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    data_dir = Path(tempfile.mkdtemp(prefix=f"history-bench-{size}-"))
    schema = None
    if backend == "sqlite":
        url, app_url = f"sqlite:///{data_dir / 'ledger.db'}", None
    else:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        url = PG_URL
        app_url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    ledger = Ledger(url, schema=schema)
    started = time.perf_counter()
    bulk_insert(ledger, generate(size))
    seeded = time.perf_counter() - started
    ledger.dispose()
    _environment(data_dir, app_url)
    st.cache_resource.clear()
    st.cache_data.clear()
    try:
        at = AppTest.from_file(str(PROJECT / "app.py"), default_timeout=120)
        started = time.perf_counter()
        at.run()  # the overview page opens first
        overview = time.perf_counter() - started
        at.switch_page("pages/history.py")
        cold = _timed(at)
        assert at.metric, "the History page showed no figures"
        st.cache_data.clear()
        uncached = _timed(at)
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
        if schema is not None:
            engine = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
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
        "peak_mb": peak / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    import logging

    logging.disable(logging.INFO)
    backends = ["sqlite"]
    reason = None if args.no_pg else pg_unreachable()
    if args.no_pg:
        print("PostgreSQL: skipped (--no-pg)")
    elif reason:
        print(f"PostgreSQL: skipped, unreachable ({reason})")
    else:
        backends.append("postgresql")
    print(
        f"{'backend':<11}{'rows':>10}{'seed s':>9}{'overview':>10}{'cold':>8}{'uncached':>10}"
        f"{'warm':>8}{'peak MB':>9}{'warm/10k':>10}{'uncached/10k':>14}  target"
    )
    ok = True
    for backend in backends:
        base = None
        for size in sizes:
            figures = measure(size, backend)
            base = base or figures
            warm_ratio = figures["warm_s"] / base["warm_s"]
            uncached_ratio = figures["uncached_s"] / base["uncached_s"]
            met = figures["warm_s"] < TARGET_SECONDS and warm_ratio < TARGET_RATIO
            ok &= met
            print(
                f"{backend:<11}{size:>10,}{figures['seed_s']:>9.1f}{figures['overview_s']:>10.3f}"
                f"{figures['cold_s']:>8.3f}{figures['uncached_s']:>10.3f}{figures['warm_s']:>8.3f}"
                f"{figures['peak_mb']:>9.1f}{warm_ratio:>10.2f}{uncached_ratio:>14.2f}"
                f"  {'met' if met else 'MISSED'}",
                flush=True,
            )
    print(
        f"target: warm render < {TARGET_SECONDS} s and < {TARGET_RATIO}x the 10k render "
        f"({'met' if ok else 'missed'})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
