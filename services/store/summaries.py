"""Summaries of the ledger kept with every write: daily totals and each card's latest balance.

``daily_totals``: per IST day x kind x status x operator x programme, how many rows and points.
``card_balances``: each card's latest SUCCEEDED row and the balance after it.
``card_days``: which cards had a SUCCEEDED row on each IST day (distinct employees of a period);
a day a card no longer has a row on is deleted, never kept as zero.

History and Overview read their totals, series and status breakdowns here instead of scanning
``transactions``: a year is a few thousand summary rows however many millions of ledger rows it
holds. The summary is kept in the SAME transaction as every write that adds a row, changes its
status or moves its creation time (``record_intent(s)``, the CAS moves, recovery, cancellation,
redating, reset): each such write adds its deltas to the connection's tally (``count``), and the
write helper (``Database.writing``) applies the tally as ONE upsert statement, run with its rows
as parameters, just before commit (``flush``). The keys of that upsert are sorted, so on
PostgreSQL two transactions touching the same summary rows lock them in the same order and cannot
deadlock; and the upsert is the last statement of the transaction, so a transaction holding
summary locks never waits for a ledger row.
A move to SUCCEEDED also updates its card's row in ``card_balances`` (a second upsert, after the
daily one, in card order, replacing only an older latest row).

Only rows written around the store (a bulk seed, a hand-made fix) make it wrong: ``rebuild``
recomputes it from ``transactions`` in one write transaction, and ``check`` lists every
difference. From the command line::

    python -m services.store.summaries check   [DATABASE_URL]
    python -m services.store.summaries rebuild [DATABASE_URL]

(``DATABASE_URL`` defaults to the environment's, else the dashboard's SQLite ledger.)

Every reader sums over the keys it does not filter on (a programme's figures filter on
``programme_id``; 0 stands for a row without a programme: a reversal recorded before reversals
carried their original's programme, or a write around the store).
The programmes' per-operator monthly counters (``operator_months``, kept by
``services/store/programmes.py``) are checked and rebuilt here too.
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

from services.store.engine import UTCDateTime, on_every_write
from services.store.programmes import operator_month_differences, rebuild_operator_months
from services.store.schema import metadata, transactions

if __name__ == "__main__":
    # ``python -m`` runs this file a second time as ``__main__``, after the package imported it:
    # defining the tables again would fail. The command line is the imported module's ``main``.
    from services.store.summaries import main as _imported_main

    sys.exit(_imported_main())

IST = timezone(timedelta(hours=5, minutes=30), "IST")

daily_totals = sa.Table(
    "daily_totals",
    metadata,
    sa.Column("day", sa.Date, nullable=False),  # the IST day the row was created
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("operator", sa.String(200), nullable=False),
    # ``transactions.programme_id`` (v9; 0: none). Last in the key: the readers that do not
    # filter on it still seek by day first.
    sa.Column("programme_id", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint(
        "day", "kind", "status", "operator", "programme_id", name="pk_daily_totals"
    ),
)

# Each card's latest SUCCEEDED row (by update time, then id) and the balance EnKash reported after
# it (NULL: not known, a lookup settled it), as ``Ledger.known_balance`` defines it. History's and
# Overview's "what is left on the cards" read this instead of one index seek per card.
card_balances = sa.Table(
    "card_balances",
    metadata,
    sa.Column("card_id", sa.String(64), primary_key=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("last_id", sa.Integer, nullable=False),
    sa.Column("balance_after_cents", sa.BigInteger),
    sa.Index("ix_card_balances_balance", "balance_after_cents"),
)

# Which cards had a SUCCEEDED row created on each IST day: the distinct employees of a period are
# counted here (a card active on many days of the period is one employee).
card_days = sa.Table(
    "card_days",
    metadata,
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("card_id", sa.String(64), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("day", "card_id", name="pk_card_days"),
)

KEY = ("day", "kind", "status", "operator", "programme_id")
_TALLY = "points_desk_daily_tally"
_CARDS = "points_desk_card_tally"
_ACTIVE = "points_desk_active_tally"

Key = tuple[date, str, str, str, int]


def ist_day(moment: datetime) -> date:
    """The IST calendar day of an aware UTC instant."""
    return moment.astimezone(IST).date()


def begin(conn: Connection) -> None:
    """Start an empty tally for a write transaction (anything left by a failed one is dropped)."""
    conn.info[_TALLY] = {}
    conn.info[_CARDS] = {}
    conn.info[_ACTIVE] = {}


def count(
    conn: Connection,
    created_at: datetime,
    kind: str,
    status: str,
    operator: str,
    amount_cents: int,
    sign: int = 1,
    card_id: str | None = None,
    programme_id: int | None = None,
) -> None:
    """Add (``sign`` 1) or remove (-1) one ledger row in this transaction's tally."""
    tally: dict[Key, list[int]] = conn.info.setdefault(_TALLY, {})
    day = ist_day(created_at)
    key = (day, str(kind), str(status), str(operator), int(programme_id or 0))
    entry = tally.setdefault(key, [0, 0])
    entry[0] += sign
    entry[1] += sign * int(amount_cents)
    if status == "SUCCEEDED" and card_id is not None:
        active: dict[tuple[date, str], int] = conn.info.setdefault(_ACTIVE, {})
        active[(day, card_id)] = active.get((day, card_id), 0) + sign


def move(conn: Connection, found: Any, before: str, after: str) -> None:
    """A row (``counted_columns``, as it is after the change) changed status."""
    if before == after:
        return
    row = (found.created_at, found.kind)
    rest = (found.card_id, found.programme_id)
    count(conn, *row, before, found.operator, found.amount_cents, -1, *rest)
    count(conn, *row, after, found.operator, found.amount_cents, 1, *rest)
    if after == "SUCCEEDED" and found.card_id is not None:
        cards: dict[str, tuple[datetime, int, int | None]] = conn.info.setdefault(_CARDS, {})
        latest = (found.updated_at, int(found.id), found.balance_after_cents)
        known = cards.get(found.card_id)
        if known is None or latest[:2] > known[:2]:
            cards[found.card_id] = latest


def counted_columns() -> list[sa.Column[Any]]:
    """What a write must read back (``RETURNING``) to tally a row it changed."""
    t = transactions
    return [
        t.c.created_at,
        t.c.kind,
        t.c.operator,
        t.c.amount_cents,
        t.c.id,
        t.c.card_id,
        t.c.updated_at,
        t.c.balance_after_cents,
        t.c.programme_id,
    ]


def flush(conn: Connection) -> None:
    """Apply this transaction's tally, its keys in order (called by ``writing``)."""
    tally: dict[Key, list[int]] = conn.info.pop(_TALLY, None) or {}
    cards: dict[str, tuple[datetime, int, int | None]] = conn.info.pop(_CARDS, None) or {}
    active: dict[tuple[date, str], int] = conn.info.pop(_ACTIVE, None) or {}
    values = [
        dict(zip(KEY, key, strict=True), rows=n, amount_cents=c)
        for key, (n, c) in sorted(tally.items())
        if n or c
    ]
    # Each upsert is one statement built once per dialect and run with the rows as parameters,
    # in key order (an executemany runs them in that order): no per-transaction compile.
    if values:
        conn.execute(_statement(conn, _daily_upsert), values)
    # Then the card days, then the cards, each in key order: every transaction locks the three
    # tables in this order and each in key order, so no two can wait for each other in a circle.
    days = [
        {"day": day, "card_id": card, "rows": n} for (day, card), n in sorted(active.items()) if n
    ]
    if days:
        conn.execute(_statement(conn, _card_day_upsert), days)
        # A card day whose rows all left it (a redated or reset row) goes, in this transaction:
        # with no zero rows kept, the distinct cards of a period are an index-only range scan
        # of ``pk_card_days`` (no ``rows > 0`` test against the table). Rare: only removals.
        emptied = [{"day": v["day"], "card_id": v["card_id"]} for v in days if v["rows"] < 0]
        if emptied:
            conn.execute(_EMPTY_CARD_DAY, emptied)
    if cards:
        conn.execute(
            _statement(conn, _card_upsert),
            [
                {
                    "card_id": card,
                    "updated_at": at,
                    "last_id": row_id,
                    "balance_after_cents": cents,
                }
                for card, (at, row_id, cents) in sorted(cards.items())
            ],
        )


def _insert(conn: Connection) -> Any:
    return pg_dialect.insert if conn.dialect.name == "postgresql" else sqlite_dialect.insert


_STATEMENTS: dict[tuple[str, Any], Any] = {}


def _statement(conn: Connection, build: Any) -> Any:
    """``build(insert)`` for this connection's dialect, built once per process."""
    key = (conn.dialect.name, build)
    found = _STATEMENTS.get(key)
    if found is None:
        found = _STATEMENTS[key] = build(_insert(conn))
    return found


def _card_day_upsert(insert: Any) -> Any:
    statement = insert(card_days)
    return statement.on_conflict_do_update(
        index_elements=["day", "card_id"],
        set_={"rows": card_days.c.rows + statement.excluded.rows},
    )


# Already locked by the upsert just before it, in the same key order: no new lock order.
_EMPTY_CARD_DAY = card_days.delete().where(
    card_days.c.day == sa.bindparam("day"),
    card_days.c.card_id == sa.bindparam("card_id"),
    card_days.c.rows == 0,
)


def _card_upsert(insert: Any) -> Any:
    statement = insert(card_balances)
    new, old = statement.excluded, card_balances.c
    return statement.on_conflict_do_update(
        index_elements=["card_id"],
        set_={
            "updated_at": new.updated_at,
            "last_id": new.last_id,
            "balance_after_cents": new.balance_after_cents,
        },
        # Only a later row replaces the card's latest (a slower transaction may commit an older).
        where=sa.or_(
            new.updated_at > old.updated_at,
            sa.and_(new.updated_at == old.updated_at, new.last_id > old.last_id),
        ),
    )


def _daily_upsert(insert: Any) -> Any:
    statement = insert(daily_totals)
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
    programme = sa.func.coalesce(t.c.programme_id, 0).label("programme_id")
    return sa.select(
        day,
        t.c.kind,
        t.c.status,
        t.c.operator,
        programme,
        sa.func.count().label("rows"),
        sa.func.coalesce(sa.func.sum(t.c.amount_cents), 0).label("amount_cents"),
    ).group_by(day, t.c.kind, t.c.status, t.c.operator, programme)


def _latest_query(cards: list[str] | None = None) -> Any:
    """Each card's latest SUCCEEDED row, from the rows (for ``card_balances``)."""
    t = transactions
    rank = (
        sa.func.row_number()
        .over(partition_by=t.c.card_id, order_by=(t.c.updated_at.desc(), t.c.id.desc()))
        .label("rank")
    )
    ranked = sa.select(
        t.c.card_id, t.c.updated_at, t.c.id.label("last_id"), t.c.balance_after_cents, rank
    ).where(t.c.status == "SUCCEEDED", t.c.card_id.is_not(None))
    if cards is not None:
        ranked = ranked.where(t.c.card_id.in_(cards))
    sub = ranked.subquery()
    return sa.select(
        sub.c.card_id, sub.c.updated_at, sub.c.last_id, sub.c.balance_after_cents
    ).where(sub.c.rank == 1)


_CARD_COLUMNS = ["card_id", "updated_at", "last_id", "balance_after_cents"]


def _days_query(conn: Connection) -> Any:
    """Per IST day and card, its SUCCEEDED rows, from the rows (for ``card_days``)."""
    t = transactions
    day = ist_day_sql(conn.dialect.name).label("day")
    return (
        sa.select(day, t.c.card_id, sa.func.count().label("rows"))
        .where(t.c.status == "SUCCEEDED", t.c.card_id.is_not(None))
        .group_by(day, t.c.card_id)
    )


def refresh_cards(conn: Connection, cards: Iterable[str]) -> None:
    """Recompute these cards' latest rows from ``transactions`` (after rows were redated)."""
    wanted = sorted({c for c in cards if c})
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        conn.execute(card_balances.delete().where(card_balances.c.card_id.in_(chunk)))
        conn.execute(card_balances.insert().from_select(_CARD_COLUMNS, _latest_query(chunk)))


def rebuild_daily_in(conn: Connection) -> int:
    """Recompute ``daily_totals`` from ``transactions`` (v9's migration fills it with this)."""
    conn.execute(daily_totals.delete())
    select = _raw_query(conn.dialect.name)
    conn.execute(daily_totals.insert().from_select([*KEY, "rows", "amount_cents"], select))
    return int(conn.execute(sa.select(sa.func.count()).select_from(daily_totals)).scalar_one())


def rebuild_cards_in(conn: Connection) -> None:
    """Recompute ``card_balances`` and ``card_days`` from ``transactions``."""
    conn.execute(card_balances.delete())
    conn.execute(card_balances.insert().from_select(_CARD_COLUMNS, _latest_query()))
    conn.execute(card_days.delete())
    conn.execute(card_days.insert().from_select(["day", "card_id", "rows"], _days_query(conn)))


def rebuild_in(conn: Connection) -> int:
    """Recompute the whole summary from ``transactions`` inside ``conn``'s write transaction
    (and the programmes' operator-month counters); returns the daily totals' row count."""
    found = rebuild_daily_in(conn)
    rebuild_cards_in(conn)
    rebuild_operator_months(conn)
    return found


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def differences(conn: Connection) -> list[tuple[Any, Any, Any]]:
    """Every key where the summary and the raw rows disagree: ``(key, summary, raw)``; a card's
    key is ``("card", card_id)`` with its (updated_at, id, balance) kept and from the rows."""
    raw: dict[Key, tuple[int, int]] = {}
    for day, kind, status, operator, pid, n, cents in conn.execute(_raw_query(conn.dialect.name)):
        raw[(_as_date(day), kind, status, operator, int(pid))] = (int(n), int(cents))
    kept: dict[Key, tuple[int, int]] = {}
    for day, kind, status, operator, pid, n, cents in conn.execute(
        sa.select(daily_totals.c[KEY], daily_totals.c.rows, daily_totals.c.amount_cents)
    ):
        if n or cents:  # a key whose rows all moved on keeps a zero row
            kept[(_as_date(day), kind, status, operator, int(pid))] = (int(n), int(cents))
    zero = (0, 0)
    found: list[tuple[Any, Any, Any]] = [
        (key, kept.get(key, zero), raw.get(key, zero))
        for key in sorted(set(raw) | set(kept))
        if kept.get(key, zero) != raw.get(key, zero)
    ]
    raw_cards = {r[0]: tuple(r[1:]) for r in conn.execute(_latest_query())}
    kept_cards = {
        r[0]: tuple(r[1:])
        for r in conn.execute(sa.select(*[card_balances.c[name] for name in _CARD_COLUMNS]))
    }
    found += [
        (("card", card), kept_cards.get(card), raw_cards.get(card))
        for card in sorted(set(raw_cards) | set(kept_cards))
        if kept_cards.get(card) != raw_cards.get(card)
    ]
    raw_days = {(_as_date(d), c): int(n) for d, c, n in conn.execute(_days_query(conn))}
    # A kept zero row differs too: the readers count every card day there is (no rows > 0 test).
    kept_days = {
        (_as_date(d), c): int(n)
        for d, c, n in conn.execute(
            sa.select(card_days.c.day, card_days.c.card_id, card_days.c.rows)
        )
    }
    found += [
        (("card day", *key), kept_days.get(key, 0), raw_days.get(key, 0))
        for key in sorted(set(raw_days) | set(kept_days))
        if kept_days.get(key) != raw_days.get(key)
    ]
    return found + operator_month_differences(conn)


class SummaryStore:
    """The summary's maintenance for the ``Ledger`` (its reads are in ``services.history``)."""

    def rebuild_summaries(self) -> int:
        """Recompute the daily totals from the ledger rows; returns how many summary rows."""
        with self.writing() as conn:  # type: ignore[attr-defined]
            return rebuild_in(conn)

    def summary_differences(self) -> list[tuple[Any, Any, Any]]:
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
            print(f"{' '.join(map(str, key))}: summary {kept}, rows {raw}")
        print("consistent" if not found else f"{len(found):,} keys disagree")
        return 0 if not found else 1
    finally:
        ledger.dispose()


# Registered once, by the imported module (``python -m`` hands over to it above).
on_every_write(begin, flush)
