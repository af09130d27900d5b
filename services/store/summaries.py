"""Daily totals: per IST day x kind x status x operator, how many rows and how many points.

History and Overview read their totals, series and status breakdowns here instead of scanning
``transactions``: a year is a few thousand summary rows however many millions of ledger rows it
holds. The summary is kept in the SAME transaction as every write that adds a row, changes its
status or moves its creation time (``record_intent(s)``, the CAS moves, recovery, cancellation,
redating, reset): each such write adds its deltas to the connection's tally (``count``), and the
write helper (``Database.writing``) applies the tally as ONE upsert just before commit
(``flush``). The keys of that upsert are sorted, so on PostgreSQL two transactions touching the
same summary rows lock them in the same order and cannot deadlock; and the upsert is the last
statement of the transaction, so a transaction holding summary locks never waits for a ledger row.

Only rows written around the store (a bulk seed, a hand-made fix) make it wrong: ``rebuild``
recomputes it from ``transactions`` in one write transaction, and ``check`` lists every
difference. From the command line::

    python -m services.store.summaries check   [DATABASE_URL]
    python -m services.store.summaries rebuild [DATABASE_URL]

(``DATABASE_URL`` defaults to the environment's, else the dashboard's SQLite ledger.)

Not here yet: a programme dimension (a ``programme_id`` key column can be added when programmes
exist; every reader sums over the keys it does not filter on).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from services.store.schema import metadata, transactions

IST = timezone(timedelta(hours=5, minutes=30), "IST")

daily_totals = sa.Table(
    "daily_totals",
    metadata,
    sa.Column("day", sa.Date, nullable=False),  # the IST day the row was created
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("operator", sa.String(200), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("day", "kind", "status", "operator", name="pk_daily_totals"),
)

KEY = ("day", "kind", "status", "operator")
_TALLY = "points_desk_daily_tally"

Key = tuple[date, str, str, str]


def ist_day(moment: datetime) -> date:
    """The IST calendar day of an aware UTC instant."""
    return moment.astimezone(IST).date()


def begin(conn: Connection) -> None:
    """Start an empty tally for a write transaction (anything left by a failed one is dropped)."""
    conn.info[_TALLY] = {}


def count(
    conn: Connection,
    created_at: datetime,
    kind: str,
    status: str,
    operator: str,
    amount_cents: int,
    sign: int = 1,
) -> None:
    """Add (``sign`` 1) or remove (-1) one ledger row in this transaction's tally."""
    tally: dict[Key, list[int]] = conn.info.setdefault(_TALLY, {})
    key = (ist_day(created_at), str(kind), str(status), str(operator))
    entry = tally.setdefault(key, [0, 0])
    entry[0] += sign
    entry[1] += sign * int(amount_cents)


def move(conn: Connection, found: Any, before: str, after: str) -> None:
    """A row (its ``created_at``, ``kind``, ``operator``, ``amount_cents``) changed status."""
    if before == after:
        return
    count(conn, found.created_at, found.kind, before, found.operator, found.amount_cents, -1)
    count(conn, found.created_at, found.kind, after, found.operator, found.amount_cents, 1)


def counted_columns() -> list[sa.Column[Any]]:
    """What a write must read back (``RETURNING``) to tally a row it changed."""
    t = transactions
    return [t.c.created_at, t.c.kind, t.c.operator, t.c.amount_cents]


def flush(conn: Connection) -> None:
    """Apply this transaction's tally as one upsert, its keys in order (called by ``writing``)."""
    tally: dict[Key, list[int]] = conn.info.pop(_TALLY, None) or {}
    values = [
        dict(zip(KEY, key, strict=True), rows=n, amount_cents=c)
        for key, (n, c) in sorted(tally.items())
        if n or c
    ]
    if not values:
        return
    conn.execute(_upsert(conn, values))


def _upsert(conn: Connection, values: list[dict[str, Any]]) -> Any:
    insert = pg_dialect.insert if conn.dialect.name == "postgresql" else sqlite_dialect.insert
    statement = insert(daily_totals).values(values)
    return statement.on_conflict_do_update(
        index_elements=list(KEY),
        set_={
            "rows": daily_totals.c.rows + statement.excluded.rows,
            "amount_cents": daily_totals.c.amount_cents + statement.excluded.amount_cents,
        },
    )


def ist_day_sql(dialect: str, column: Any = transactions.c.created_at) -> Any:
    """SQL for the IST day of a stored UTC time (as ``ist_day`` does in Python)."""
    if dialect == "sqlite":
        # Stored as naive UTC text; date() gives 'YYYY-MM-DD', the way sa.Date stores a day.
        return sa.func.date(column, sa.literal_column("'+330 minutes'"))
    return sa.cast(sa.func.timezone(sa.literal_column("'Asia/Kolkata'"), column), sa.Date)


def _raw_query(dialect: str) -> Any:
    t = transactions
    day = ist_day_sql(dialect).label("day")
    return sa.select(
        day,
        t.c.kind,
        t.c.status,
        t.c.operator,
        sa.func.count().label("rows"),
        sa.func.coalesce(sa.func.sum(t.c.amount_cents), 0).label("amount_cents"),
    ).group_by(day, t.c.kind, t.c.status, t.c.operator)


def rebuild_in(conn: Connection) -> int:
    """Recompute the whole summary from ``transactions`` inside ``conn``'s write transaction."""
    conn.execute(daily_totals.delete())
    select = _raw_query(conn.dialect.name)
    conn.execute(
        daily_totals.insert().from_select(
            ["day", "kind", "status", "operator", "rows", "amount_cents"], select
        )
    )
    return int(conn.execute(sa.select(sa.func.count()).select_from(daily_totals)).scalar_one())


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def differences(conn: Connection) -> list[tuple[Key, tuple[int, int], tuple[int, int]]]:
    """Every key where the summary and the raw rows disagree: ``(key, summary, raw)``."""
    raw: dict[Key, tuple[int, int]] = {}
    for day, kind, status, operator, n, cents in conn.execute(_raw_query(conn.dialect.name)):
        raw[(_as_date(day), kind, status, operator)] = (int(n), int(cents))
    kept: dict[Key, tuple[int, int]] = {}
    for day, kind, status, operator, n, cents in conn.execute(
        sa.select(daily_totals.c[KEY], daily_totals.c.rows, daily_totals.c.amount_cents)
    ):
        if n or cents:  # a key whose rows all moved on keeps a zero row
            kept[(_as_date(day), kind, status, operator)] = (int(n), int(cents))
    zero = (0, 0)
    return [
        (key, kept.get(key, zero), raw.get(key, zero))
        for key in sorted(set(raw) | set(kept))
        if kept.get(key, zero) != raw.get(key, zero)
    ]


class SummaryStore:
    """The summary's maintenance for the ``Ledger`` (its reads are in ``services.history``)."""

    def rebuild_summaries(self) -> int:
        """Recompute the daily totals from the ledger rows; returns how many summary rows."""
        with self.writing() as conn:  # type: ignore[attr-defined]
            return rebuild_in(conn)

    def summary_differences(self) -> list[tuple[Key, tuple[int, int], tuple[int, int]]]:
        """Where the daily totals disagree with the rows (empty when consistent)."""
        with self.reading() as conn:  # type: ignore[attr-defined]
            return differences(conn)


def main(argv: Iterable[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m services.store.summaries",
        description="Check or rebuild the ledger's daily totals.",
    )
    parser.add_argument("command", choices=["check", "rebuild"])
    parser.add_argument("url", nargs="?", help="database URL (default: the dashboard's ledger)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    from services.store import Ledger

    url = args.url
    if url is None:
        from services.config import load_settings

        url = load_settings().ledger_url
    ledger = Ledger(url)
    try:
        if args.command == "rebuild":
            print(f"rebuilt: {ledger.rebuild_summaries():,} summary rows")
            return 0
        found = ledger.summary_differences()
        for key, kept, raw in found[:50]:
            print(f"{key[0]} {key[1]} {key[2]} {key[3]}: summary {kept}, rows {raw}")
        print("consistent" if not found else f"{len(found):,} keys disagree")
        return 0 if not found else 1
    finally:
        ledger.dispose()


if __name__ == "__main__":
    sys.exit(main())
