"""What schedules add to a worker's pass: the idle look (nothing due) and turning due occurrences
into batches. CPU time per call (``time.process_time``), so a loaded machine changes it little.

    .venv/bin/python -m benchmarks.schedules [--schedules 200] [--rows 50]

Nothing is sent: the batches are only written (the batch runner's speed is benchmarks/bulk.py's).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path

from services import schedules
from services.config import load_settings
from services.recurrence import Repeat, Rule
from services.store import Ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=200)
    parser.add_argument("--rows", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        ledger = Ledger(f"sqlite:///{Path(data) / 'ledger.db'}")
        settings = load_settings(secrets_file=None, points_desk_data_dir=Path(data))
        ledger.create_programme(code="BONUS", name="Bonus", budget=None, actor="bench")
        rows = [
            {"kind": "credit", "card_id": f"EKC{n:07d}", "amount_cents": 10000, "reason": "b"}
            for n in range(args.rows)
        ]
        start = datetime.now(UTC) - timedelta(days=1)
        rule = Rule(Repeat.MONTHLY, start.date(), clock(0, 0), day_of_month=start.day, count=1)
        made_at = datetime.combine(start.date(), clock(0, 0), UTC) - timedelta(days=1)
        for n in range(args.schedules):
            record = schedules.create(
                ledger, label=f"S{n}", programme="BONUS", rule=rule, rows=rows,
                maker="bench", now=made_at,
            )  # fmt: skip
            schedules.approve(ledger, record.id, approver="checker", now=made_at)
        idle_now = made_at - timedelta(days=1)
        calls = 200
        began = time.process_time()
        for _ in range(calls):
            schedules.materialise_due(ledger, settings, now=idle_now, actor="bench")
        idle = (time.process_time() - began) / calls
        began, wall = time.process_time(), time.perf_counter()
        made = schedules.materialise_due(ledger, settings, now=datetime.now(UTC), actor="bench")
        busy, elapsed = time.process_time() - began, time.perf_counter() - wall
        assert len(made) == args.schedules
        print(f"schedules: {args.schedules} active, {args.rows} rows each (SQLite)")
        print(f"idle pass (nothing due): {idle * 1000:.2f} ms CPU")
        print(
            f"due pass: {len(made)} occurrences -> batches in {busy:.2f} s CPU ({elapsed:.2f} s "
            f"wall): {busy / len(made) * 1000:.1f} ms CPU per occurrence, "
            f"{busy / (len(made) * args.rows) * 1000:.2f} ms per row"
        )
        ledger.dispose()


if __name__ == "__main__":
    main()
