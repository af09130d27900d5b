"""Which SQL statements a piece of code spends its time in (benchmarks only).

    with Statements() as found:
        at.run()
    found.report(top=15)

Every engine's ``before_cursor_execute`` / ``after_cursor_execute`` is timed while the block
runs: the wall time from handing the statement to the driver until its result arrived (psycopg
and sqlite3 fetch the whole result there), grouped by statement text. Figures, never pass/fail.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

_START = "_bench_statement_started"


def _short(statement: str, width: int = 150) -> str:
    return re.sub(r"\s+", " ", statement).strip()[:width]


class Statements:
    """Seconds and calls per statement text while the ``with`` block runs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _before(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info.setdefault(_START, []).append(time.perf_counter())

    def _after(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        started = conn.info[_START].pop()
        self.seconds[statement] += time.perf_counter() - started
        self.calls[statement] += 1

    def __enter__(self) -> Statements:
        event.listen(sa.engine.Engine, "before_cursor_execute", self._before)
        event.listen(sa.engine.Engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *_: Any) -> None:
        event.remove(sa.engine.Engine, "before_cursor_execute", self._before)
        event.remove(sa.engine.Engine, "after_cursor_execute", self._after)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def report(self, title: str, top: int = 12, runs: int = 1) -> None:
        """Print the ``top`` statements by time (per run when the block ran ``runs`` renders)."""
        print(
            f"  {title}: {sum(self.calls.values()) / runs:.0f} statements, "
            f"{self.total / runs:.3f} s in SQL per render"
        )
        ranked = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:top]
        for statement, seconds in ranked:
            calls = self.calls[statement] / runs
            print(f"    {seconds / runs * 1000:8.1f} ms {calls:4.0f}x  {_short(statement)}")
