"""The ledger's engine: SQLite (the embedded default) or PostgreSQL (a team), and the ONE way to
write to it.

Every write in Points Desk goes through ``Database.writing()``: on SQLite it takes this process's
write lock and ``BEGIN IMMEDIATE`` (so a write never fails with ``SQLITE_BUSY`` half way), on
PostgreSQL it is a plain transaction. Reads go through ``Database.reading()`` (one consistent
snapshot, never queued behind a writer). Amounts are ``Decimal`` in the API and integer hundredths
(cents) in the database; times are UTC and always come back timezone-aware.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

# Connections kept per process: a batch runs up to 32 workers, plus the settle loop and the pages;
# with fewer, every extra checkout opens and closes a connection (or waits for one).
_POOL: dict[str, int] = {"pool_size": 24, "max_overflow": 24}

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

CENT = Decimal("0.01")


def to_cents(amount: Decimal) -> int:
    """Exact integer hundredths of a Decimal with at most 2 places (anything else is refused)."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"amount must be a finite Decimal, not {amount!r}")
    if amount != amount.quantize(CENT):
        raise ValueError(f"amount {amount} has more than 2 decimal places")
    return int(amount.scaleb(2).to_integral_exact())


def from_cents(cents: int | None) -> Decimal | None:
    """``Decimal`` with exactly 2 places from integer hundredths (``None`` stays ``None``)."""
    return None if cents is None else Decimal(int(cents)).scaleb(-2)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive time is ambiguous (local? UTC?); refusing it keeps every stored time honest.
            raise ValueError("naive datetime given to the ledger; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def create_engine(
    url: str,
    *,
    echo: bool = False,
    schema: str | None = None,
    connect_args: dict[str, Any] | None = None,
) -> Engine:
    """An engine for ``sqlite:////abs/path/ledger.db``, ``sqlite://`` (in memory, for tests) or
    ``postgresql+psycopg://...``; ``schema`` (PostgreSQL only) is put first on the search path."""
    parsed = make_url(url)
    args = dict(connect_args or {})
    if parsed.get_backend_name() == "sqlite":
        if schema is not None:
            raise ValueError("schema is for PostgreSQL; a SQLite ledger is its own file")
        return _sqlite_engine(parsed, echo, args)
    if parsed.get_backend_name() == "postgresql":
        if schema is not None:
            if not _SCHEMA_NAME.fullmatch(schema):
                raise ValueError(f"not a plain schema name: {schema!r}")
            args["options"] = f"{args.get('options', '')} -csearch_path={schema}".strip()
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True, connect_args=args, **_POOL)
    raise ValueError(f"the ledger runs on SQLite or PostgreSQL, not {parsed.drivername}")


def _sqlite_engine(parsed: sa.URL, echo: bool, args: dict[str, Any]) -> Engine:
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    args.setdefault("check_same_thread", False)  # the pool hands connections between threads
    if in_memory:
        # One shared connection, or every checkout would see its own empty database. Meant for
        # tests: the single connection serialises nothing, so keep it to one thread.
        engine = sa.create_engine(parsed, echo=echo, poolclass=StaticPool, connect_args=args)
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, echo=echo, connect_args=args, **_POOL)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy, not the sqlite3 module, decides when a transaction begins (see _begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            # WAL: readers (the pages) never block the writer (a batch worker) and vice versa.
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")  # wait for a busy writer, do not fail
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across crashes in WAL mode
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A write transaction takes the write lock up front (BEGIN IMMEDIATE): a deferred one
        # that reads first and writes later can fail with SQLITE_BUSY without waiting for
        # busy_timeout. Readers stay deferred so they never queue behind a writer.
        immediate = conn.get_execution_options().get("ledger_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


#: What every write transaction does first and last, in order: ``(begin, flush)`` pairs. The
#: summaries register theirs (services/store/summaries.py), so this module needs no import of
#: them: they need the schema, which needs this module.
_WRITE_HOOKS: list[tuple[Callable[[Connection], None], Callable[[Connection], None]]] = []


def on_every_write(
    begin: Callable[[Connection], None], flush: Callable[[Connection], None]
) -> None:
    """Run ``begin(conn)`` at the start and ``flush(conn)`` just before the commit of every
    write transaction (``Database.writing``)."""
    if (begin, flush) not in _WRITE_HOOKS:
        _WRITE_HOOKS.append((begin, flush))


class Database:
    """An open ledger database: the engine, the write helper and the read helper.

    Thread-safe; share one per process. Every store concern (``transactions``, ``batches``,
    ``approvals``, ``sign_in``, ``workers``) builds on it.
    """

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        schema: str | None = None,
        connect_args: dict[str, Any] | None = None,
    ):
        self.engine = create_engine(url, echo=echo, schema=schema, connect_args=connect_args)
        self.schema = schema
        #: This process's id in the ``workers`` table (``register_worker``): every row it moves to
        #: SENDING carries it in ``claimed_by``. ``None``: rows it sends carry no owner.
        self.worker_id: str | None = None
        # SQLite has one writer at a time. Threads of this process queue for it here, in order,
        # instead of in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) and
        # lets a batch's 16 workers spend most of their time asleep. Other processes still wait
        # through busy_timeout.
        self._write_lock: threading.RLock | None = (
            threading.RLock() if self.engine.dialect.name == "sqlite" else None
        )

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A committed write transaction, taking SQLite's write lock first. THE write path.

        Whatever the transaction tallied for the daily totals is applied just before it commits.
        """
        with self._write_lock or nullcontext(), self.engine.connect() as conn:
            conn.execution_options(ledger_write=True)
            with conn.begin():
                for begin, _ in _WRITE_HOOKS:
                    begin(conn)
                yield conn
                # The daily totals' deltas of everything this transaction did: one ordered
                # upsert, last, in the same transaction (services/store/summaries.py).
                for _, flush in _WRITE_HOOKS:
                    flush(conn)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot for everything a caller reads."""
        with self.engine.begin() as conn:
            yield conn

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, or before deleting the file)."""
        self.engine.dispose()
