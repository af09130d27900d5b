"""How long *Load demo data* takes, and how much CPU it costs, against an earlier version of it.

    .venv/bin/python -m benchmarks.demo_load [--employees 300] [--runs 1] [--baseline-rev REV]

Each run loads demo data for ``--employees`` people into a fresh sandbox and SQLite ledger (a
``Desk`` on its own data directory, as the Overview's button does) and prints its wall seconds,
the process's CPU seconds (the sandbox runs in the same process, so its work is counted too),
the transactions made and CPU milliseconds per transaction. With ``--baseline-rev`` the same
runs are made, alternately, with ``services/demo.py`` as it was at that git revision (everything
else as it is now), and the ratios are printed: the "before" and "after" of one machine in one
run. The machine's load average is printed with each run: absolute times are noisy when other
work shares the cores; CPU per transaction much less so. Target: 300 employees in under 5 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

PROJECT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 5.0


def _module_at(rev: str) -> ModuleType:
    """``services/demo.py`` as it was at ``rev``, importable next to today's code."""
    source = subprocess.run(
        ["git", "show", f"{rev}:services/demo.py"],
        cwd=PROJECT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "demo_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("demo_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _load_once(demo: ModuleType, employees: int, seed: int) -> dict[str, float]:
    from services.config import load_settings
    from services.desk import Desk

    saved = dict(os.environ)
    with tempfile.TemporaryDirectory() as data_dir:
        try:
            for name in list(os.environ):
                if name.startswith(("ENKASH_", "POINTS_DESK_")) or name == "DATABASE_URL":
                    del os.environ[name]
            os.environ.update(
                POINTS_DESK_DATA_DIR=data_dir,
                POINTS_DESK_SECRETS_FILE=str(Path(data_dir) / "no-secrets.toml"),
                POINTS_DESK_SETTLE_INTERVAL_SECONDS="0",
            )
            desk = Desk(load_settings())
            try:
                extra = (
                    {"runner": desk.runner} if "runner" in demo.load.__code__.co_varnames else {}
                )
                load_before = os.getloadavg()[0]
                cpu, wall = time.process_time(), time.perf_counter()
                report = demo.load(
                    desk.ledger,
                    desk.new_client,
                    desk.settings,
                    desk.sandbox.store,
                    employees,
                    seed=seed,
                    **extra,
                )
                wall = time.perf_counter() - wall
                cpu = time.process_time() - cpu
                differences = desk.ledger.summary_differences()
            finally:
                desk.close()
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return {
        "wall": wall,
        "cpu": cpu,
        "transactions": report.transactions,
        "batches": len(getattr(report, "batches", [])),
        "agrees": report.agrees and not differences,
        "load": load_before,
    }


def _line(name: str, run: dict[str, float]) -> str:
    return (
        f"  {name:9} {run['wall']:6.1f} s wall {run['cpu']:6.1f} s CPU  "
        f"{run['transactions']:5,} transactions ({run['batches']} batches)  "
        f"{1000 * run['cpu'] / run['transactions']:5.1f} ms CPU each  "
        f"load {run['load']:.1f}  {'agrees' if run['agrees'] else 'DISAGREES'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--employees", type=int, default=300)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-rev", help="git revision whose services/demo.py to compare")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.INFO)  # a log line per transaction would be measured too
    from services import demo

    versions = {"now": demo}
    if args.baseline_rev:
        versions[args.baseline_rev[:9]] = _module_at(args.baseline_rev)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
    print(f"demo data for {args.employees:,} employees, {os.cpu_count()} cores")
    for n in range(args.runs):
        for name, module in versions.items():
            run = _load_once(module, args.employees, args.seed + n)
            results[name].append(run)
            print(_line(name, run), flush=True)
    now = {k: statistics.median(r[k] for r in results["now"]) for k in ("wall", "cpu")}
    for name, runs in results.items():
        if name != "now":
            wall = statistics.median(r["wall"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            per_now = now["cpu"] / statistics.median(r["transactions"] for r in results["now"])
            per_then = cpu / statistics.median(r["transactions"] for r in runs)
            print(
                f"\n{name} / now: wall {wall / now['wall']:.2f}x, CPU {cpu / now['cpu']:.2f}x, "
                f"CPU per transaction {per_then / per_now:.2f}x"
            )
    ok = now["wall"] < TARGET_SECONDS
    print(
        f"\ntarget: {args.employees:,} employees under {TARGET_SECONDS:.0f} s "
        f"(median {now['wall']:.1f} s): {'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
